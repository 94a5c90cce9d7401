"""What ``aviator top`` shows, computed from engine metrics. Pure: text and numbers in, rows out.

A ``Sample`` is what one scrape of a replica's ``/metrics`` says (vLLM's names; the simulator
speaks them too). A row compares two samples of the same replica taken a refresh apart:

- RUNNING, WAITING and KV% are the gauges of the newer sample.
- CACHE-HIT% is ``Δ vllm:prefix_cache_hits / Δ vllm:prefix_cache_queries`` (tokens) between the
  samples; with a single sample (the first refresh, ``--once``) it is the ratio since the engine
  started. ``-`` when no prompt token was looked up.
- TTFT p50 is the median of ``vllm:time_to_first_token_seconds``, interpolated in the buckets the
  way Prometheus' ``histogram_quantile`` does, over the requests that finished their first token
  between the samples (since the start with a single sample). ``-`` when there were none.
- REQ/S is ``Δ vllm:request_success / Δt`` (every finished reason); ``-`` with a single sample.

A counter that went down means the engine restarted: the newer sample is then taken on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "ReplicaInfo",
    "Row",
    "Sample",
    "histogram_quantile",
    "parse_sample",
    "row_of",
    "table",
]

_RUNNING = ("vllm:num_requests_running",)
_WAITING = ("vllm:num_requests_waiting",)
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
_SUCCESS = ("vllm:request_success_total",)
_TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"
_TTFT_COUNT = "vllm:time_to_first_token_seconds_count"

HEADERS = ("MODEL", "REPLICA", "NODE", "RUNNING", "WAITING", "KV%", "CACHE-HIT%", "TTFT p50",
           "REQ/S")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of an engine's metrics (label sets of one name summed; KV usage averaged)."""

    at: float
    """Monotonic time of the scrape, in seconds."""
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    prefix_hits: float | None = None
    prefix_queries: float | None = None
    requests: float | None = None
    """Requests finished (``vllm:request_success``, all reasons)."""
    ttft_buckets: tuple[tuple[float, float], ...] = ()
    """Cumulative ``(le, count)`` of ``vllm:time_to_first_token_seconds``, sorted by ``le``."""


def _first(values: Mapping[str, list[float]], names: Sequence[str]) -> list[float] | None:
    for name in names:
        found = values.get(name)
        if found:
            return found
    return None


def parse_sample(text: str, *, at: float) -> Sample:
    """The sample in a Prometheus text exposition (unknown or malformed series are ignored).

    Raises ``ValueError`` when the text is not an exposition at all.
    """
    values: dict[str, list[float]] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            value = float(s.value)
            if not math.isfinite(value):
                continue
            if s.name == _TTFT_BUCKET:
                try:
                    le = float(s.labels["le"])
                except (KeyError, ValueError):
                    continue
                buckets[le] = buckets.get(le, 0.0) + value
            else:
                values.setdefault(s.name, []).append(value)

    def total(names: Sequence[str]) -> float | None:
        found = _first(values, names)
        return None if found is None else sum(found)

    kv = _first(values, _KV)
    return Sample(
        at=at,
        running=total(_RUNNING),
        waiting=total(_WAITING),
        kv_cache_usage=None if kv is None else sum(kv) / len(kv),
        prefix_hits=total(_HITS),
        prefix_queries=total(_QUERIES),
        requests=total(_SUCCESS),
        ttft_buckets=tuple(sorted(buckets.items())),
    )


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q``-quantile of a histogram given as cumulative ``(le, count)`` sorted by ``le``
    (the last ``le`` being ``+Inf``), as Prometheus' ``histogram_quantile`` computes it: linear
    interpolation inside the bucket the rank falls in, the lower bound of the first bucket being 0
    (if its upper bound is positive), and the highest finite bound when the rank falls in the
    ``+Inf`` bucket. None without observations."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0 or math.isnan(q):
        return None
    if q <= 0:
        return -math.inf
    if q >= 1:
        return math.inf
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(le):
                return buckets[i - 1][0] if i > 0 else None
            if i == 0 and le <= 0:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return None


def _delta_buckets(
    new: Sequence[tuple[float, float]], old: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], ...] | None:
    """``new - old`` bucket by bucket; None if the bounds differ or a count went down."""
    if [le for le, _ in new] != [le for le, _ in old]:
        return None
    out = []
    for (le, a), (_, b) in zip(new, old, strict=True):
        if a < b:
            return None
        out.append((le, a - b))
    return tuple(out)


def _restarted(new: Sample, old: Sample) -> bool:
    for a, b in (
        (new.prefix_hits, old.prefix_hits),
        (new.prefix_queries, old.prefix_queries),
        (new.requests, old.requests),
    ):
        if a is not None and b is not None and a < b:
            return True
    return _delta_buckets(new.ttft_buckets, old.ttft_buckets) is None


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What the Control API says about a Ready replica."""

    namespace: str
    name: str
    model: str
    node: str
    endpoint: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ReplicaInfo | None:
        """The replica's row identity, or None unless it is Ready with an endpoint."""
        meta: Mapping[str, Any] = obj.get("metadata") or {}
        spec: Mapping[str, Any] = obj.get("spec") or {}
        status: Mapping[str, Any] = obj.get("status") or {}
        ready = any(
            isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        endpoint = status.get("endpoint")
        if not ready or not isinstance(endpoint, str) or not endpoint:
            return None
        model = spec.get("model")
        model = model if isinstance(model, Mapping) else {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            model=str(model.get("name", "")),
            node=str(spec.get("node", "")),
            endpoint=endpoint.rstrip("/"),
        )


@dataclass(frozen=True, slots=True)
class Row:
    replica: ReplicaInfo
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    """0 to 1."""
    cache_hit: float | None = None
    """0 to 1."""
    ttft_p50_s: float | None = None
    requests_per_s: float | None = None
    error: str | None = None
    """Why the metrics could not be read (the other fields are then None)."""

    def to_json(self) -> dict[str, Any]:
        r = self.replica
        return {
            "namespace": r.namespace,
            "model": r.model,
            "replica": r.name,
            "node": r.node,
            "endpoint": r.endpoint,
            "running": _whole(self.running),
            "waiting": _whole(self.waiting),
            "kvCacheUsage": self.kv_cache_usage,
            "prefixCacheHitRatio": self.cache_hit,
            "ttftP50Seconds": self.ttft_p50_s,
            "requestsPerSecond": self.requests_per_s,
            **({"error": self.error} if self.error else {}),
        }


def _whole(value: float | None) -> float | int | None:
    return int(value) if value is not None and value.is_integer() else value


def _ratio(hits: float | None, queries: float | None) -> float | None:
    if hits is None or queries is None or queries <= 0:
        return None
    return min(max(hits / queries, 0.0), 1.0)


def row_of(
    replica: ReplicaInfo, new: Sample | None, old: Sample | None = None, *, error: str | None = None
) -> Row:
    """The row of ``replica`` from its newest sample and the one before (if any)."""
    if new is None:
        return Row(replica=replica, error=error or "no metrics")
    if old is not None and (new.at <= old.at or _restarted(new, old)):
        old = None
    if old is None:
        cache_hit = _ratio(new.prefix_hits, new.prefix_queries)
        ttft = histogram_quantile(0.5, new.ttft_buckets)
        rps = None
    else:
        cache_hit = _ratio(
            _minus(new.prefix_hits, old.prefix_hits), _minus(new.prefix_queries, old.prefix_queries)
        )
        delta = _delta_buckets(new.ttft_buckets, old.ttft_buckets)
        ttft = None if delta is None else histogram_quantile(0.5, delta)
        done = _minus(new.requests, old.requests)
        rps = None if done is None else done / (new.at - old.at)
    return Row(
        replica=replica,
        running=new.running,
        waiting=new.waiting,
        kv_cache_usage=new.kv_cache_usage,
        cache_hit=cache_hit,
        ttft_p50_s=ttft,
        requests_per_s=rps,
    )


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(rows: Iterable[Row], *, all_namespaces: bool) -> tuple[list[str], list[list[str]]]:
    """Headers and cells, sorted by namespace, model and replica."""
    headers = (["NAMESPACE"] if all_namespaces else []) + list(HEADERS)
    cells = []
    for row in sorted(rows, key=lambda r: (r.replica.namespace, r.replica.model, r.replica.name)):
        r = row.replica
        cells.append(
            ([r.namespace] if all_namespaces else [])
            + [
                r.model,
                r.name,
                r.node,
                _count(row.running),
                _count(row.waiting),
                _percent(row.kv_cache_usage),
                _percent(row.cache_hit),
                _duration(row.ttft_p50_s),
                _rate(row.requests_per_s),
            ]
        )
    return headers, cells
