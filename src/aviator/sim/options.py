"""``SimOptions``: everything that shapes one simulator instance, validated once at construction.

The ``DEFAULT_*`` constants are the single source of the defaults: the dataclass, the ``aviator sim``
command and ``python -m aviator.sim`` all read them, so the three cannot drift apart.

A device profile (``device_profile``, a key of ``aviator.placement.profiles.PROFILES``) switches
the simulator from constant latencies to vLLM's step loop timed by that profile, and sizes the KV
cache and the scheduler like vLLM on that device; ``resolve`` turns the options into the numbers
the engine runs with. The profiles module (and pydantic behind it) is imported only then, so the
constant-latency simulator starts as fast as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aviator.placement.profiles import DeviceProfile, ModelClass

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_ITL_MS",
    "DEFAULT_KV_CACHE_BLOCKS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MAX_NUM_SEQS",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_MODEL_CLASS",
    "DEFAULT_SEED",
    "DEFAULT_SPIKE_MS",
    "DEFAULT_TIME_SCALE",
    "DEFAULT_TTFT_MS",
    "EngineConfig",
    "SimOptions",
]

DEFAULT_TTFT_MS = 40.0
"""Time to first token of an unloaded engine: an 8B model on one H100 with a short prompt is
40-120 ms (calibration.md §8); 40 keeps demos snappy while staying realistic."""
DEFAULT_ITL_MS = 8.0
"""Inter-token latency: 8 ms ≈ 125 tokens/s per sequence, an 8B model on H100 at small batch."""
DEFAULT_MAX_NUM_SEQS = 64
"""Sequences decoded at once (vLLM ``--max-num-seqs``) without a device profile; small enough that
queueing shows up in routing benchmarks without thousands of concurrent clients. With a profile
the default is vLLM's for that device (1024 on H100-class, 256 below, calibration.md §6)."""
DEFAULT_MAX_WAITING = 1000
"""Waiting-queue bound; beyond it requests get 503 (llm-d-inference-sim's default)."""
DEFAULT_TIME_SCALE = 1.0
DEFAULT_SEED = 0
DEFAULT_MAX_MODEL_LEN = 131_072
"""Context window (prompt + completion tokens), Llama-3.1's 128 Ki."""
BLOCK_SIZE = 16
"""Tokens per KV-cache block (vLLM's default ``--block-size``)."""
DEFAULT_KV_CACHE_BLOCKS = 8192
"""KV-cache size in blocks without a device profile (8192 blocks of 16 = 131,072 tokens: one
full-length Llama-3.1 context)."""
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body (bytes); long prompts are big but not unbounded."""
DEFAULT_MODEL_CLASS = "8b"
"""The model class a device profile is applied to when none is named."""
DEFAULT_SPIKE_MS = 1000.0
"""Extra delay before the first byte of a request hit by a latency spike: one second is long
enough for a gateway's timeouts and hedging to notice, short enough for a test."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """``SimOptions`` resolved against the device profile: what the engine runs with."""

    max_num_seqs: int
    num_gpu_blocks: int
    """KV-cache blocks of ``BLOCK_SIZE`` tokens."""
    max_model_len: int
    """The context window: ``max_model_len`` capped by what the KV cache holds."""
    profile: DeviceProfile | None
    model_class: ModelClass | None
    tensor_parallel: int | None
    max_num_batched_tokens: int | None
    """The token budget of a step; None without a profile (constant latencies have no steps)."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    """How one simulator instance behaves. Raises ``ValueError`` naming the bad field."""

    model: str
    """Served model name: the only value of ``model`` the server accepts (others get 404)."""
    ttft_ms: float = DEFAULT_TTFT_MS
    """Milliseconds from a sequence being scheduled to its first token (queueing comes on top).
    Ignored with a device profile."""
    itl_ms: float = DEFAULT_ITL_MS
    """Milliseconds between consecutive output tokens of one sequence. Ignored with a device
    profile."""
    max_num_seqs: int | None = None
    """Sequences running at once; later arrivals wait in FIFO order. None: the profile's vLLM
    default, else ``DEFAULT_MAX_NUM_SEQS``."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Bound of the waiting queue; an arrival that finds it full is refused with 503."""
    time_scale: float = DEFAULT_TIME_SCALE
    """Every latency is multiplied by this: 0.1 runs a benchmark ten times faster than real time,
    0 removes latency altogether. Metrics report the scaled (actually simulated) durations."""
    seed: int = DEFAULT_SEED
    """Mixed into the prompt hash that seeds generated text, so two instances with different seeds
    answer the same prompt differently; also seeds the fault injection's random draws."""
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    """Prompt plus requested completion tokens above this (or above what the KV cache holds) are
    refused with 400, as vLLM does."""
    kv_cache_blocks: int | None = None
    """KV-cache size in ``BLOCK_SIZE``-token blocks. None: what the device profile leaves for KV
    (``profiles.kv_capacity_tokens``), else ``DEFAULT_KV_CACHE_BLOCKS``."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest accepted request body; bigger ones get 413."""
    device_profile: str | None = None
    """A key of ``aviator.placement.profiles.PROFILES``: time vLLM's steps like that device."""
    model_class: str | None = None
    """With ``device_profile``: a key of ``profiles.MODEL_CLASSES`` (``8b``, ``70b``,
    ``70b-fp8``); None: ``DEFAULT_MODEL_CLASS``."""
    tensor_parallel: int | None = None
    """With ``device_profile``: devices one replica spans (1, 2, 4, 8); None: the smallest degree
    that leaves room for a useful KV cache (``profiles.default_tensor_parallel``)."""
    max_num_batched_tokens: int | None = None
    """With ``device_profile``: tokens one step computes at most (vLLM's
    ``--max-num-batched-tokens``); None: vLLM's default for the device."""
    enable_prefix_caching: bool = True
    """Automatic prefix caching, on by default as in vLLM V1."""
    error_rate: float = 0.0
    """Share of completion requests answered 500 before any byte (0-1)."""
    spike_rate: float = 0.0
    """Share of completion requests delayed by ``spike_ms`` before any byte (0-1)."""
    spike_ms: float = DEFAULT_SPIKE_MS
    """Length of a latency spike (scaled by ``time_scale`` like every latency)."""
    crash_after: int | None = None
    """Serve this many completion requests, then exit abruptly on the next one."""
    allow_fault_headers: bool = False
    """Let requests ask for faults with the ``x-sim-fail`` header (off: the header is ignored)."""

    def __post_init__(self) -> None:
        if not self.model or len(self.model) > 256:
            raise ValueError("model: must be 1-256 characters")
        for name in ("ttft_ms", "itl_ms", "time_scale", "spike_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0 (got {value!r})")
        for name in ("error_rate", "spike_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:  # NaN fails too
                raise ValueError(f"{name}: must be between 0 and 1 (got {value!r})")
        for name, lowest, optional in (
            ("max_num_seqs", 1, True),
            ("max_waiting", 0, False),
            ("max_model_len", 1, False),
            ("kv_cache_blocks", 1, True),
            ("max_body_bytes", 1024, False),
            ("tensor_parallel", 1, True),
            ("max_num_batched_tokens", 1, True),
            ("crash_after", 0, True),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name}: must be an integer >= {lowest} (got {value!r})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: must be an integer (got {self.seed!r})")
        if self.device_profile is None:
            for name in ("model_class", "tensor_parallel", "max_num_batched_tokens"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only applies with a device_profile")
        else:
            self.resolve()  # the profile, the model class and the parallelism must fit together

    @property
    def ttft_s(self) -> float:
        """Scaled time to first token, in seconds."""
        return self.ttft_ms * self.time_scale / 1000.0

    @property
    def itl_s(self) -> float:
        """Scaled inter-token latency, in seconds."""
        return self.itl_ms * self.time_scale / 1000.0

    @property
    def spike_s(self) -> float:
        """Scaled latency spike, in seconds."""
        return self.spike_ms * self.time_scale / 1000.0

    def resolve(self) -> EngineConfig:
        """The engine's numbers: explicit options, else the device profile's, else defaults."""
        if self.device_profile is None:
            blocks = self.kv_cache_blocks or DEFAULT_KV_CACHE_BLOCKS
            return EngineConfig(
                max_num_seqs=self.max_num_seqs or DEFAULT_MAX_NUM_SEQS,
                num_gpu_blocks=blocks,
                max_model_len=min(self.max_model_len, blocks * BLOCK_SIZE),
                profile=None,
                model_class=None,
                tensor_parallel=None,
                max_num_batched_tokens=None,
            )
        from aviator.placement import profiles  # pydantic behind it: only when asked for

        profile = profiles.PROFILES.get(self.device_profile)
        if profile is None:
            raise ValueError(
                f"device_profile: unknown profile {self.device_profile!r}; one of "
                f"{', '.join(profiles.PROFILES)}"
            )
        name = self.model_class or DEFAULT_MODEL_CLASS
        model_class = profiles.MODEL_CLASSES.get(name)
        if model_class is None:
            raise ValueError(
                f"model_class: unknown model class {name!r}; one of "
                f"{', '.join(profiles.MODEL_CLASSES)}"
            )
        tp = self.tensor_parallel
        if tp is None:
            tp = profiles.default_tensor_parallel(profile, model_class)
            if tp is None:
                raise ValueError(
                    f"device_profile: model class {model_class.name} does not fit on "
                    f"{profile.max_tensor_parallel}x {profile.name}"
                )
        try:
            kv_tokens = profiles.kv_capacity_tokens(profile, model_class, tensor_parallel=tp)
        except ValueError as exc:
            raise ValueError(f"tensor_parallel: {exc}") from None
        if kv_tokens < BLOCK_SIZE:
            raise ValueError(
                f"tensor_parallel: model class {model_class.name} does not fit on "
                f"{tp}x {profile.name}"
            )
        blocks = self.kv_cache_blocks or kv_tokens // BLOCK_SIZE
        return EngineConfig(
            max_num_seqs=self.max_num_seqs or profile.max_num_seqs,
            num_gpu_blocks=blocks,
            max_model_len=min(self.max_model_len, blocks * BLOCK_SIZE),
            profile=profile,
            model_class=model_class,
            tensor_parallel=tp,
            max_num_batched_tokens=self.max_num_batched_tokens or profile.max_num_batched_tokens,
        )
