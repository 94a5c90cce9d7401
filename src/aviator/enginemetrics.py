"""Reading the load an engine publishes on ``/metrics``: running, waiting, KV-cache usage.

Pure: text in, numbers out. Both the autoscaler and the gateway's scorers read these few gauges,
often (every 100 ms per replica in the gateway), so this scans lines for the known names instead of
parsing the whole exposition into metric families.

Names (``../shared/reference/inference.md``, "model server metrics"):

=========  =============================  =========================
           vLLM                           SGLang
=========  =============================  =========================
running    ``vllm:num_requests_running``  ``sglang:num_running_reqs``
waiting    ``vllm:num_requests_waiting``  ``sglang:num_queue_reqs``
KV usage   ``vllm:kv_cache_usage_perc``   ``sglang:token_usage``
=========  =============================  =========================

plus vLLM's ``vllm:gpu_cache_usage_perc``, the KV gauge's name before vLLM 0.10. Samples of one
gauge with several label sets (one per model or engine core) are summed for the queues and
averaged for the usage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EngineLoad", "parse_load"]

_RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
_FIELD = {
    **dict.fromkeys(_RUNNING, "running"),
    **dict.fromkeys(_WAITING, "waiting"),
    **dict.fromkeys(_KV, "kv"),
}
_PREFIXES = ("vllm:", "sglang:")


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: float
    waiting: float
    kv_cache_usage: float
    """Fraction (0 to 1) of the KV cache in use."""


def parse_load(text: str) -> EngineLoad | None:
    """The load in a Prometheus text exposition, or None when it has no waiting-queue gauge
    (not an engine aviator knows how to read)."""
    sums = {"running": 0.0, "waiting": 0.0, "kv": 0.0}
    counts = {"running": 0, "waiting": 0, "kv": 0}
    for line in text.splitlines():
        if not line.startswith(_PREFIXES):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if name_end < 0:
            continue
        field = _FIELD.get(line[:name_end])
        if field is None:
            continue
        value = _sample_value(line)
        if value is None:
            continue
        sums[field] += value
        counts[field] += 1
    if not counts["waiting"]:
        return None
    kv = sums["kv"] / counts["kv"] if counts["kv"] else 0.0
    return EngineLoad(running=sums["running"], waiting=sums["waiting"], kv_cache_usage=kv)


def _sample_value(line: str) -> float | None:
    # `name{labels} value [timestamp]`: the value follows the label set (which may hold spaces).
    rest = line[line.rindex("}") + 1 :] if "}" in line else line[line.find(" ") :]
    parts = rest.split()
    if not parts:
        return None
    try:
        value = float(parts[0])
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
