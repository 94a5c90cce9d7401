"""``ProfileLatency``: how long one vLLM engine step takes on a device profile.

The step-time model is the roofline of ``aviator.placement.profiles`` (calibration.md §3.2 and
BLIS's step model of §6), applied to the batch the step really carries instead of an average one.
For ``B`` sequences in the step, of which the decoding ones hold ``C`` KV tokens together, and
prefill chunks of ``n`` new tokens after ``h`` computed ones, on ``tp`` devices::

    step = fixed(B) + max( (W + C·k) / tp / (η·BW),                    # weights + KV read
                           (2P·B_decode + 4·L·d·C) / tp / (MFU_decode·F)  # decode FLOPs
                         + (2P·Σn + 2·L·d·Σ n·(n + 2h)) / tp / (MFU_prefill·F) )  # prefill

``fixed(B)`` is the per-step, per-layer, all-reduce and per-sequence overhead. Rather than copying
those constants, it is read off ``profiles.itl_seconds`` once: the ITL at batch 1 and 2 minus their
roofline part. A step of ``B`` decoding sequences of ``c`` tokens each therefore lasts exactly
``profiles.itl_seconds(batch=B, context_tokens=c)``, and a prompt that fits one step's budget
reaches its first token exactly ``profiles.ttft_seconds`` after arrival on an idle engine
(``request_overhead_s`` is ``profiles.REQUEST_OVERHEAD_S``); a test holds both equalities.

Importing this module imports ``aviator.placement.profiles`` (and pydantic with it, ~0.3 s): the
server imports it only when a device profile is asked for.
"""

from __future__ import annotations

from aviator.placement import profiles
from aviator.sim.engine import StepBatch

__all__ = ["ProfileLatency"]


class ProfileLatency:
    """A ``StepModel`` for ``model_class`` on ``tensor_parallel`` devices of ``profile``; every
    duration multiplied by ``time_scale``."""

    __slots__ = (
        "_decode_attention_s",
        "_decode_seq_s",
        "_kv_read_s",
        "_per_seq_s",
        "_per_step_s",
        "_prefill_attention_s",
        "_prefill_token_s",
        "_scale",
        "_weights_read_s",
        "model_class",
        "profile",
        "request_overhead_s",
        "tensor_parallel",
    )

    def __init__(
        self,
        profile: profiles.DeviceProfile,
        model_class: profiles.ModelClass,
        *,
        tensor_parallel: int,
        time_scale: float = 1.0,
    ) -> None:
        if profiles.kv_capacity_tokens(profile, model_class, tensor_parallel=tensor_parallel) < 1:
            raise ValueError(
                f"model class {model_class.name} does not fit on {tensor_parallel}x {profile.name}"
            )
        self.profile = profile
        self.model_class = model_class
        self.tensor_parallel = tp = tensor_parallel
        self._scale = time_scale
        self.request_overhead_s = profiles.REQUEST_OVERHEAD_S * time_scale
        bandwidth = profile.memory_bandwidth * profile.decode_bandwidth_efficiency
        peak = profile.peak_bf16_flops
        if model_class.precision == "fp8" and profile.peak_fp8_flops is not None:
            peak = profile.peak_fp8_flops
        decode_flops = peak * profile.decode_mfu
        prefill_flops = peak * profile.prefill_mfu
        layers_hidden = model_class.layers * model_class.hidden_size
        self._weights_read_s = model_class.weight_bytes / tp / bandwidth
        self._kv_read_s = model_class.kv_bytes_per_token / tp / bandwidth
        self._decode_seq_s = 2 * model_class.parameters / tp / decode_flops
        self._decode_attention_s = 4 * layers_hidden / tp / decode_flops
        self._prefill_token_s = 2 * model_class.parameters / tp / prefill_flops
        self._prefill_attention_s = 2 * layers_hidden / tp / prefill_flops
        one, two = (
            profiles.itl_seconds(
                profile, model_class, batch=b, context_tokens=1, tensor_parallel=tp
            )
            - self._roofline(num_decode=b, context=b, prefill_tokens=0, prefill_attention=0)
            for b in (1, 2)
        )
        self._per_seq_s = two - one
        self._per_step_s = one - self._per_seq_s

    def _roofline(
        self, *, num_decode: int, context: int, prefill_tokens: int, prefill_attention: int
    ) -> float:
        read = self._weights_read_s + context * self._kv_read_s
        compute = (
            num_decode * self._decode_seq_s
            + context * self._decode_attention_s
            + prefill_tokens * self._prefill_token_s
            + prefill_attention * self._prefill_attention_s
        )
        return max(read, compute)

    def step_seconds(self, batch: StepBatch) -> float:
        fixed = self._per_step_s + batch.num_seqs * self._per_seq_s
        roofline = self._roofline(
            num_decode=batch.num_decode,
            context=batch.decode_context_tokens,
            prefill_tokens=batch.prefill_tokens,
            prefill_attention=batch.prefill_attention,
        )
        return (fixed + roofline) * self._scale
