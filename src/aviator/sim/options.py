"""``SimOptions``: everything that shapes one simulator instance, validated once at construction.

The ``DEFAULT_*`` constants are the single source of the defaults: the dataclass, the ``aviator sim``
command and ``python -m aviator.sim`` all read them, so the three cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_ITL_MS",
    "DEFAULT_KV_CACHE_BLOCKS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MAX_NUM_SEQS",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_SEED",
    "DEFAULT_TIME_SCALE",
    "DEFAULT_TTFT_MS",
    "SimOptions",
]

DEFAULT_TTFT_MS = 40.0
"""Time to first token of an unloaded engine: an 8B model on one H100 with a short prompt is
40-120 ms (calibration.md §8); 40 keeps demos snappy while staying realistic."""
DEFAULT_ITL_MS = 8.0
"""Inter-token latency: 8 ms ≈ 125 tokens/s per sequence, an 8B model on H100 at small batch."""
DEFAULT_MAX_NUM_SEQS = 64
"""Sequences decoded at once (vLLM ``--max-num-seqs``); small enough that queueing shows up in
routing benchmarks without thousands of concurrent clients."""
DEFAULT_MAX_WAITING = 1000
"""Waiting-queue bound; beyond it requests get 503 (llm-d-inference-sim's default)."""
DEFAULT_TIME_SCALE = 1.0
DEFAULT_SEED = 0
DEFAULT_MAX_MODEL_LEN = 131_072
"""Context window (prompt + completion tokens), Llama-3.1's 128 Ki."""
BLOCK_SIZE = 16
"""Tokens per KV-cache block (vLLM's default ``--block-size``)."""
DEFAULT_KV_CACHE_BLOCKS = 8192
"""Nominal KV-cache capacity in blocks (8192 blocks of 16 = 131,072 tokens), the denominator of
``vllm:kv_cache_usage_perc``."""
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body (bytes); long prompts are big but not unbounded."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    """How one simulator instance behaves. Raises ``ValueError`` naming the bad field."""

    model: str
    """Served model name: the only value of ``model`` the server accepts (others get 404)."""
    ttft_ms: float = DEFAULT_TTFT_MS
    """Milliseconds from a sequence being scheduled to its first token (queueing comes on top)."""
    itl_ms: float = DEFAULT_ITL_MS
    """Milliseconds between consecutive output tokens of one sequence."""
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    """Sequences running at once; later arrivals wait in FIFO order."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Bound of the waiting queue; an arrival that finds it full is refused with 503."""
    time_scale: float = DEFAULT_TIME_SCALE
    """Every latency is multiplied by this: 0.1 runs a benchmark ten times faster than real time,
    0 removes latency altogether. Metrics report the scaled (actually simulated) durations."""
    seed: int = DEFAULT_SEED
    """Mixed into the prompt hash that seeds generated text, so two instances with different seeds
    answer the same prompt differently."""
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    """Prompt plus requested completion tokens above this are refused with 400, as vLLM does."""
    kv_cache_blocks: int = DEFAULT_KV_CACHE_BLOCKS
    """Nominal KV-cache size in ``BLOCK_SIZE``-token blocks (only reported as usage, for now)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest accepted request body; bigger ones get 413."""

    def __post_init__(self) -> None:
        if not self.model or len(self.model) > 256:
            raise ValueError("model: must be 1-256 characters")
        for name in ("ttft_ms", "itl_ms", "time_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0 (got {value!r})")
        for name, lowest in (
            ("max_num_seqs", 1),
            ("max_waiting", 0),
            ("max_model_len", 1),
            ("kv_cache_blocks", 1),
            ("max_body_bytes", 1024),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name}: must be an integer >= {lowest} (got {value!r})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: must be an integer (got {self.seed!r})")

    @property
    def ttft_s(self) -> float:
        """Scaled time to first token, in seconds."""
        return self.ttft_ms * self.time_scale / 1000.0

    @property
    def itl_s(self) -> float:
        """Scaled inter-token latency, in seconds."""
        return self.itl_ms * self.time_scale / 1000.0
