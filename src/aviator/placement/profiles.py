"""Device performance profiles: how fast one accelerator serves an 8B- or a 70B-class model.

Pure data plus arithmetic. Placement and capacity planning use it to answer "how many replicas of
what", and the built-in simulator uses it (:func:`sim_options`) so that a simulated replica placed
on an H100 answers like one. Vendor names appear only in the data tables (:data:`PROFILES`,
:data:`PRODUCT_PATTERNS`, :data:`PRODUCT_ATTRIBUTES`); every function reasons about fields.

Every number carries its source in a comment: ``calibration.md §N`` is
``/work/shared/reference/calibration.md`` (which cites the upstream repo or URL), otherwise the URL
or repository path itself. "published" means the figure appears in the source; "derived" says how
it was computed; "assumed" marks a judgement call with no citable figure behind it.

The latency model (a roofline with calibrated efficiencies, after calibration.md §3.2 and the BLIS
step-time model of §6), for a model of ``P`` parameters, ``W`` weight bytes, ``L`` layers, hidden
size ``d`` and ``k`` KV bytes per token, on ``tp`` devices:

* **One engine step** serving ``B`` running sequences of average context ``c``::

      step(B, c) = t_step + L·t_layer + [2·L·t_allreduce if tp > 1] + B·t_seq
                   + max( (W + B·c·k) / tp / (η·BW),                  # weights + KV read
                          B·(2P + 4·L·d·c) / tp / (MFU_decode·F) )     # decode FLOPs

  ``t_step``, ``t_layer`` and ``t_seq`` are BLIS's fitted β7, β5 and β6; ``η`` is the achieved
  fraction of peak memory bandwidth ``BW``, ``F`` the dense peak FLOP/s of the weight precision.
* **ITL** at batch ``B`` is ``step(B, c)``: flat while the weight read dominates, then growing
  linearly with ``B`` through the KV read and the per-sequence cost, and faster once the step
  turns compute bound. Non-decreasing in ``B`` by construction.
* **TTFT** of a prompt of ``n`` tokens of which ``h`` hit the prefix cache, joining ``B - 1``
  running sequences: the ``u = n - h`` new tokens (at least one: vLLM recomputes the last prompt
  token, calibration.md §4) go through ``ceil(u / (budget - (B - 1)))`` chunked-prefill steps
  (``budget`` = vLLM's ``max_num_batched_tokens``), each also decoding the others::

      TTFT = t_request + chunks·(fixed step costs)
             + max( chunks·(W + (B-1)·c·k) / tp / (η·BW),
                    (2P·u + 2·L·d·(u² + 2·u·h)) / tp / (MFU_prefill·F)
                    + chunks·(decode FLOPs of the others) / tp / (MFU_decode·F) )

  The second FLOP term is causal attention over the new tokens and the cached prefix. TTFT is
  non-decreasing in ``u`` and in ``B``, and never increased by cached tokens.
* **KV capacity** follows vLLM (calibration.md §1): ``memory·0.9 - weights/tp - reserve`` per
  device, divided by the per-device KV bytes per token, in whole 16-token blocks.

What it leaves out, on purpose: speculative decoding, quantised KV, CPU offload, prefix-cache
eviction, preemption, network hops. Where sources disagree the model follows measurements over
suggested simulator settings: the llm-d-inference-sim "reference ranges" (calibration.md §8,
self-described as order-of-magnitude) are 1.3-4.3x slower than this model, which reproduces the
vLLM measurements of calibration.md §3 on the same hardware (TTFT differs most: §8 puts an H100's
256-token TTFT at 60-120 ms, yobitel measured 14 ms for a short prompt at concurrency 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_CONTEXT_TOKENS",
    "GPU_MEMORY_UTILIZATION",
    "LLAMA_8B",
    "LLAMA_70B",
    "LLAMA_70B_FP8",
    "MIN_KV_TOKENS",
    "MODEL_CLASSES",
    "PRODUCT_ATTRIBUTES",
    "PRODUCT_PATTERNS",
    "PROFILES",
    "REFERENCE_PROMPT_TOKENS",
    "REQUEST_OVERHEAD_S",
    "TENSOR_PARALLEL_DEGREES",
    "DeviceProfile",
    "ModelClass",
    "Performance",
    "default_tensor_parallel",
    "itl_seconds",
    "kv_cache_tokens",
    "kv_capacity_tokens",
    "max_batch",
    "max_throughput_rps",
    "performance",
    "profile_for",
    "profile_for_device",
    "sim_options",
    "ttft_seconds",
]

_KiB = 1 << 10
_MiB = 1 << 20
_GiB = 1 << 30

GPU_MEMORY_UTILIZATION = 0.9
"""vLLM's ``--gpu-memory-utilization`` default in most releases (calibration.md §1; the newest
``vllm/config/cache.py`` has 0.92)."""
BLOCK_SIZE = 16
"""Tokens per KV block, vLLM's ``CacheConfig.DEFAULT_BLOCK_SIZE`` (calibration.md §4)."""
DEFAULT_CONTEXT_TOKENS = 1024
"""Average tokens a running sequence holds in the KV cache, for ITL and batch sizing when the
caller does not say (assumed: a chat turn of a few hundred prompt tokens plus the answer so far)."""
REFERENCE_PROMPT_TOKENS = 256
"""The prompt length of the llm-d-inference-sim reference ranges (calibration.md §8)."""
MIN_KV_TOKENS = 16 * DEFAULT_CONTEXT_TOKENS
"""A placement is worth making when the KV cache holds at least 16 average sequences (assumed;
also one 16 Ki-token conversation). Decides :func:`default_tensor_parallel`."""
TENSOR_PARALLEL_DEGREES = (1, 2, 4, 8)
"""Degrees vLLM can use for these models: TP must divide the 8 KV heads (calibration.md §1)."""

REQUEST_OVERHEAD_S = 0.005
"""HTTP, tokenisation, scheduling and detokenisation of one request, in seconds. Derived: yobitel
H100 Llama-3.1-8B vLLM 0.21 concurrency 1, TTFT p50 13.98 ms (calibration.md §3.1,
https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/) minus this model's ~8 ms
single-step prefill of a short chat prompt."""
_STEP_OVERHEAD_S = 126e-6
"""Fixed cost of one engine step. Published: BLIS β7 ≈ 126 µs/step (calibration.md §6,
inference-sim/inference-sim ``defaults.yaml`` trained on H100 vLLM traces); applied to every
device (assumed)."""
_LAYER_OVERHEAD_S = 32.1e-6
"""Per-layer launch/sync cost of one step. Published: BLIS β5 ≈ 32.1 µs/layer (calibration.md §6)."""
_SEQUENCE_OVERHEAD_S = 4.42e-6
"""Per running sequence per step (sampling, bookkeeping). Published: BLIS β6 ≈ 4.42 µs/request
(calibration.md §6)."""
_SLOT_HEADROOM = 0.9
""":func:`max_throughput_rps` keeps steady-state concurrency below this share of the batch limit:
near the limit, arrivals wait for a free sequence slot and TTFT leaves any budget (assumed)."""

Precision = Literal["bf16", "fp8"]


@dataclass(frozen=True, slots=True)
class ModelClass:
    """A model size class: what its weights and KV cache cost (calibration.md §1)."""

    name: str
    """``8b``, ``70b``, ``70b-fp8``."""
    parameters: float
    """Parameter count (for FLOPs: 2 per parameter per token)."""
    weight_bytes: int
    """Bytes of weights, all tensor-parallel ranks together."""
    precision: Precision
    """Weight precision; ``fp8`` uses the device's FP8 peak where it has one."""
    kv_bytes_per_token: int
    """KV-cache bytes per token, all ranks together (BF16 KV)."""
    layers: int
    hidden_size: int
    runtime_reserve_bytes: int
    """Per device: what vLLM's profile run takes besides weights and KV (activation peak, non-torch
    memory, CUDA graphs, communication buffers)."""


LLAMA_8B = ModelClass(
    name="8b",
    parameters=8.03e9,  # calibration.md §1: computed from the HF config.json, 8.03 B
    weight_bytes=16_060_000_000,  # calibration.md §1: BF16 16.06 GB (published)
    precision="bf16",
    kv_bytes_per_token=131_072,  # calibration.md §1: 2·32 layers·8 KV heads·128·2 B = 128 KiB
    layers=32,  # calibration.md §1 (config.json)
    hidden_size=4096,  # calibration.md §1 (config.json)
    # Derived: vLLM logs in calibration.md §1 show 2.5 GiB (RTX 3090, issue #10517: 0.9·23.69 GiB
    # - 14.99 weights - 3.81 KV); 3 GiB leaves room for the 8192-token batches of H100-class
    # defaults and lands H100's KV pool inside the 50-54 GiB calibration.md §1 estimates.
    # (The 9.37 GiB of issue #12330 is a V0 profile run at max_model_len 8192: not today's.)
    runtime_reserve_bytes=3 * _GiB,
)
LLAMA_70B = ModelClass(
    name="70b",
    parameters=70.55e9,  # calibration.md §1: 70.55 B (computed)
    weight_bytes=141_100_000_000,  # calibration.md §1: BF16 141.1 GB
    precision="bf16",
    kv_bytes_per_token=327_680,  # calibration.md §1: 2·80·8·128·2 B = 320 KiB
    layers=80,  # calibration.md §1
    hidden_size=8192,  # calibration.md §1
    # Assumed: the 8B reserve plus 1 GiB for tensor-parallel communication buffers; no log found.
    runtime_reserve_bytes=4 * _GiB,
)
LLAMA_70B_FP8 = ModelClass(
    name="70b-fp8",
    parameters=70.55e9,  # as LLAMA_70B
    weight_bytes=70_600_000_000,  # calibration.md §1: FP8 weights ≈ 70.6 GB
    precision="fp8",
    # BF16 KV: vLLM's kv_cache_dtype "auto" keeps the activation dtype for FP8-weight checkpoints
    # such as neuralmagic's, the ones measured in calibration.md §3.1.
    kv_bytes_per_token=327_680,
    layers=80,
    hidden_size=8192,
    runtime_reserve_bytes=4 * _GiB,  # as LLAMA_70B (assumed)
)
MODEL_CLASSES: Mapping[str, ModelClass] = {m.name: m for m in (LLAMA_8B, LLAMA_70B, LLAMA_70B_FP8)}
"""The classes by name. FP8 70B is there because every published 70B measurement is FP8."""


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """One accelerator product (one DRA device) and how vLLM performs on it."""

    name: str
    """Profile key, e.g. ``h100-sxm-80gb``."""
    product: str
    """Human-readable product name."""
    driver: str
    """The DRA driver that publishes such devices."""
    memory_bytes: int
    """Device memory the engine can allocate from (what the driver reports, e.g. NVML's total)."""
    memory_bandwidth: float
    """Peak memory bandwidth, bytes/s."""
    peak_bf16_flops: float
    """Peak dense BF16/FP16 matrix FLOP/s."""
    peak_fp8_flops: float | None
    """Peak dense FP8 FLOP/s, or None when the device has no FP8 matrix unit (BF16 peak is used)."""
    decode_bandwidth_efficiency: float
    """η: achieved share of peak bandwidth while decoding."""
    prefill_mfu: float
    """Achieved share of peak FLOP/s in prefill."""
    decode_mfu: float
    """Achieved share of peak FLOP/s in decode, once decode turns compute bound."""
    allreduce_latency_s: float
    """One small-message all-reduce between the devices of a node (two per layer per step)."""
    max_tensor_parallel: int
    """Most devices of this kind one node offers to a tensor-parallel group."""
    max_num_seqs: int
    """vLLM's default ``max_num_seqs`` for this device (calibration.md §6)."""
    max_num_batched_tokens: int
    """vLLM's default ``max_num_batched_tokens`` for ``vllm serve`` (calibration.md §6)."""


# The vLLM scheduler defaults (calibration.md §6, vllm/engine/arg_utils.py get_batch_defaults):
# ≥ 70 GiB and not A100 → 1024 seqs / 8192 tokens; otherwise 256 / 2048; TPU v6e 1024 and v5e 512
# tokens with the GPU-branch seqs; CPU 128 / 2048 per rank.
_PROFILES = (
    DeviceProfile(
        name="h100-sxm-80gb",
        product="NVIDIA H100 80GB HBM3 (SXM5)",
        driver="gpu.nvidia.com",
        # Published: NVML total 81559 MiB, as nvidia-smi shows "NVIDIA H100 80GB HBM3 … 81559MiB"
        # (datasheet: 80 GB, calibration.md §2).
        memory_bytes=81_559 * _MiB,
        memory_bandwidth=3.35e12,  # calibration.md §2 (BLIS hardware_config.json): 3.35 TB/s
        peak_bf16_flops=989.5e12,  # calibration.md §2: 989.5 TF dense BF16
        peak_fp8_flops=1979e12,  # calibration.md §2: FP8 1979 TF
        # Derived, calibration.md §3.2: 16.06 GB / 6.48 ms (yobitel TPOT at c=1) = 2.48 TB/s = 74%.
        decode_bandwidth_efficiency=0.74,
        prefill_mfu=0.45,  # calibration.md §2: BLIS mfuPrefill 0.45 (Discussion #589)
        decode_mfu=0.30,  # calibration.md §2: BLIS mfuDecode 0.30
        # Assumed 10 µs (NVLink, custom all-reduce). Consistent with NIM 3.3-70B FP8 TP2 ITL
        # 18.58 ms at c=1 (calibration.md §3.1), which this model reproduces within 3%.
        allreduce_latency_s=10e-6,
        max_tensor_parallel=8,  # HGX H100: 8 GPUs per node (published, NVIDIA HGX spec)
        max_num_seqs=1024,  # calibration.md §6: ≥ 70 GiB and not A100
        max_num_batched_tokens=8192,  # calibration.md §6
    ),
    DeviceProfile(
        name="h200-sxm-141gb",
        product="NVIDIA H200 (SXM)",
        driver="gpu.nvidia.com",
        # NVML total 143771 MiB for "NVIDIA H200" as recorded in public nvidia-smi inventories
        # (not checked on hardware); datasheet 141 GB (calibration.md §2).
        memory_bytes=143_771 * _MiB,
        memory_bandwidth=4.8e12,  # calibration.md §2 (BLIS PR #1710): 4.8 TB/s
        peak_bf16_flops=989.5e12,  # calibration.md §2: 989.5 TF
        peak_fp8_flops=1979e12,  # same Hopper die as H100 (calibration.md §2 copies H100)
        # Assumed as H100 (same memory system generation); calibration.md §3.2 predicts ≈4.5 ms
        # for 8B with the same η.
        decode_bandwidth_efficiency=0.74,
        prefill_mfu=0.45,  # calibration.md §2: BLIS copies H100 (issue #1711: not yet fitted)
        decode_mfu=0.30,  # calibration.md §2: copies H100
        allreduce_latency_s=10e-6,  # assumed as H100 (NVLink)
        max_tensor_parallel=8,  # HGX H200: 8 GPUs per node
        max_num_seqs=1024,  # calibration.md §6: ≥ 70 GiB and not A100
        max_num_batched_tokens=8192,  # calibration.md §6
    ),
    DeviceProfile(
        name="a100-sxm-80gb",
        product="NVIDIA A100-SXM4-80GB",
        driver="gpu.nvidia.com",
        memory_bytes=80 * _GiB,  # published: NVML total 81920 MiB (datasheet 80 GB HBM2e)
        memory_bandwidth=2.039e12,  # calibration.md §2 (BLIS hardware_config.json): 2.039 TB/s
        peak_bf16_flops=312e12,  # calibration.md §2: 312 TF
        peak_fp8_flops=None,  # Ampere has no FP8 tensor cores (FP8 checkpoints run as W8A16)
        # Assumed as H100; reproduces LambdaLabs' ≈11.4-12.0 ms/token for 3-8B at c≈1
        # (calibration.md §3.1, results/prompt_10/1xA100-80GB-SXM/…).
        decode_bandwidth_efficiency=0.74,
        prefill_mfu=0.38,  # calibration.md §2: BLIS A100 mfuPrefill 0.38
        decode_mfu=0.18,  # calibration.md §2: BLIS A100 mfuDecode 0.18
        allreduce_latency_s=10e-6,  # assumed as H100 (NVLink 3)
        max_tensor_parallel=8,  # HGX A100: 8 GPUs per node
        max_num_seqs=256,  # calibration.md §6: A100 excluded from the large defaults (PR #17885)
        max_num_batched_tokens=2048,  # calibration.md §6
    ),
    DeviceProfile(
        name="a100-40gb",
        product="NVIDIA A100 40GB (SXM4 or PCIe)",
        driver="gpu.nvidia.com",
        memory_bytes=40 * _GiB,  # published: NVML total 40960 MiB (datasheet 40 GB HBM2)
        memory_bandwidth=1.555e12,  # calibration.md §2 (HF gpu_catalog.json): 1.555 TB/s
        peak_bf16_flops=312e12,  # calibration.md §2: 312 TF
        peak_fp8_flops=None,  # Ampere: no FP8
        # Published: "~77% of memory-bandwidth ceiling" at c=1 (calibration.md §3.1,
        # https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on).
        decode_bandwidth_efficiency=0.77,
        prefill_mfu=0.38,  # calibration.md §2: BLIS A100
        decode_mfu=0.18,  # calibration.md §2: BLIS A100
        allreduce_latency_s=10e-6,  # assumed as A100 80GB
        max_tensor_parallel=8,
        max_num_seqs=256,  # calibration.md §6: < 70 GiB
        max_num_batched_tokens=2048,  # calibration.md §6
    ),
    DeviceProfile(
        name="l40s-48gb",
        product="NVIDIA L40S",
        driver="gpu.nvidia.com",
        # Published: NVML total 46068 MiB with ECC on, as nvidia-smi shows "NVIDIA L40S …
        # 46068MiB" (datasheet 48 GB GDDR6, calibration.md §2).
        memory_bytes=46_068 * _MiB,
        memory_bandwidth=0.864e12,  # calibration.md §2 (BLIS): 0.864 TB/s
        peak_bf16_flops=362e12,  # calibration.md §2: 362 TF
        # Derived: calibration.md §2 lists FP8 1466 TF, NVIDIA's with-sparsity figure; dense is half.
        peak_fp8_flops=733e12,
        # Assumed as H100; calibration.md §3.2 predicts 24.8 ms for 8B with it, inside the
        # llm-d-inference-sim 25-35 ms range (calibration.md §8).
        decode_bandwidth_efficiency=0.74,
        prefill_mfu=0.32,  # calibration.md §2: BLIS L40S mfuPrefill 0.32
        decode_mfu=0.08,  # calibration.md §2: BLIS L40S mfuDecode 0.08
        allreduce_latency_s=25e-6,  # assumed: PCIe only, no NVLink, so NCCL over PCIe
        max_tensor_parallel=8,  # assumed: 8-card PCIe servers are the common L40S chassis
        max_num_seqs=256,  # calibration.md §6: < 70 GiB
        max_num_batched_tokens=2048,  # calibration.md §6
    ),
    DeviceProfile(
        name="l4-24gb",
        product="NVIDIA L4",
        driver="gpu.nvidia.com",
        # Published: NVML total 23034 MiB with ECC on ("NVIDIA L4, 23034 MiB" in nvidia-smi
        # output); datasheet 24 GB GDDR6 (calibration.md §2).
        memory_bytes=23_034 * _MiB,
        # calibration.md §2: "datasheet ≈300 GB/s" (https://www.nvidia.com/en-us/data-center/l4/).
        memory_bandwidth=300e9,
        # Derived: L4 datasheet "BF16 Tensor Core 242 TF" is with sparsity; dense is half.
        peak_bf16_flops=121e12,
        peak_fp8_flops=242e12,  # derived: datasheet FP8 485 TF with sparsity, halved
        decode_bandwidth_efficiency=0.74,  # assumed as the other NVIDIA parts; no L4 measurement
        prefill_mfu=0.32,  # assumed as L40S (same Ada architecture), no L4 fit published
        decode_mfu=0.08,  # assumed as L40S
        allreduce_latency_s=25e-6,  # assumed: PCIe only
        max_tensor_parallel=8,  # assumed: 8-card servers (e.g. GCP g2-standard-96 has 8 L4)
        max_num_seqs=256,  # calibration.md §6: < 70 GiB
        max_num_batched_tokens=2048,  # calibration.md §6
    ),
    DeviceProfile(
        name="mi300x-192gb",
        product="AMD Instinct MI300X",
        driver="gpu.amd.com",
        memory_bytes=192 * _GiB,  # calibration.md §2: 192 GB HBM3 (8 stacks of 24 GiB)
        memory_bandwidth=5.3e12,  # calibration.md §2: 5.2-5.3 TB/s (AMD datasheet: 5.3)
        # Published, not in calibration.md: AMD MI300X datasheet, 1307.4 TF dense BF16 and
        # 2614.9 TF dense FP8 (https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html).
        peak_bf16_flops=1307.4e12,
        peak_fp8_flops=2614.9e12,
        # Derived from AMD's ROCm vLLM 0.10.2 Llama-3.1-70B FP8 TP8 batch 1 ≈ 7.75 ms/token
        # (calibration.md §3.1, amd.com rocm-hub performance-results): 7.75 ms minus BLIS step
        # costs (2.7 ms) minus 160 all-reduces at 10 µs leaves 3.46 ms to read 8.83 GB per GPU,
        # i.e. 48% of 5.3 TB/s. Also gives Oracle's 405B TP8 BS1 27.6 ms/token within 5%.
        decode_bandwidth_efficiency=0.48,
        # Assumed: no MI300X prefill measurement in calibration.md; set below H100's 0.45.
        prefill_mfu=0.35,
        decode_mfu=0.20,  # assumed (no BLIS fit for ROCm)
        allreduce_latency_s=10e-6,  # assumed as NVLink (xGMI fully connected 8-GPU mesh)
        max_tensor_parallel=8,  # 8-GPU OAM platform (published, AMD Instinct platform spec)
        max_num_seqs=1024,  # calibration.md §6: ≥ 70 GiB and not A100 (MI300X named there)
        max_num_batched_tokens=8192,  # calibration.md §6
    ),
    DeviceProfile(
        name="gaudi3-128gb",
        product="Intel Gaudi 3 (OAM)",
        driver="gaudi.intel.com",
        memory_bytes=128 * _GiB,  # calibration.md §2: 128 GB (HF Accelerate/Transformers docs)
        # Published, not in calibration.md: 3.7 TB/s HBM2e, 1835 TF BF16 and FP8 (MME). Intel Gaudi 3
        # product brief; https://www.theregister.com/2024/04/09/intel_gaudi_ai_accelerator/.
        memory_bandwidth=3.7e12,
        peak_bf16_flops=1835e12,
        peak_fp8_flops=1835e12,
        # Derived from Intel's 3.1-8B fp8 128-in/2048-out bs768 = 18,830 tok/s (calibration.md §3.1,
        # intel.com …/gaudi/model-performance.html): one 768-sequence step every 40.8 ms moves ≈8 GB
        # of weights + ≈58 GB of KV (FP8 KV assumed: BF16 would not fit) ⇒ ≈1.6 TB/s ≈ 45% of peak.
        decode_bandwidth_efficiency=0.45,
        # Derived from the same page, 2048-in/128-out bs256 = 2,652 tok/s: ≈42k prompt tok/s x
        # 2·8.03e9 FLOP ≈ 0.68 PF ≈ 37% of 1835 TF, rounded up for the decode work it also did.
        prefill_mfu=0.40,
        decode_mfu=0.30,  # assumed as H100
        allreduce_latency_s=20e-6,  # assumed: scale-up over on-chip RoCE, slower than NVLink
        max_tensor_parallel=8,  # 8-card Gaudi 3 server (published, Intel HLS-Gaudi3 baseboard)
        # Assumed: vLLM's ≥ 70 GiB rule (calibration.md §6); vllm-gaudi's own defaults not checked.
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
    ),
    DeviceProfile(
        name="tpu-v6e",
        product="Google TPU v6e (Trillium), one chip",
        driver="tpu.google.com",
        memory_bytes=32 * _GiB,  # calibration.md §2: 32 GB HBM (docs.cloud.google.com/tpu/docs/v6e)
        memory_bandwidth=1.638e12,  # calibration.md §2: 1,638 GB/s
        peak_bf16_flops=918e12,  # calibration.md §2: 918 TF
        peak_fp8_flops=None,  # v6e lists BF16 and INT8 peaks, no FP8 (calibration.md §2)
        # Assumed as H100; calibration.md §3.2 predicts ≈13 ms for 8B with it.
        decode_bandwidth_efficiency=0.74,
        # Derived, calibration.md §3.2: vLLM PR #16458 v6e-1 8B ≈14.2k prompt tok/s ≈ 25% MFU.
        prefill_mfu=0.25,
        decode_mfu=0.25,  # assumed as prefill
        allreduce_latency_s=10e-6,  # assumed: ICI between the chips of one host
        max_tensor_parallel=8,  # v6e single host: up to 8 chips (docs.cloud.google.com/tpu/docs/v6e)
        max_num_seqs=256,  # calibration.md §6: TPU not overridden ⇒ GPU branch (< 70 GiB)
        max_num_batched_tokens=1024,  # calibration.md §6: TPU v6e serve default
    ),
    DeviceProfile(
        name="tpu-v5e",
        product="Google TPU v5e (v5 lite), one chip",
        driver="tpu.google.com",
        memory_bytes=16 * _GiB,  # calibration.md §2: 16 GB (docs.cloud.google.com/tpu/docs/v5e)
        memory_bandwidth=819e9,  # calibration.md §2: 819 GB/s
        peak_bf16_flops=197e12,  # calibration.md §2: 197 TF
        peak_fp8_flops=None,  # v5e: BF16 and INT8 only
        decode_bandwidth_efficiency=0.74,  # assumed as v6e
        prefill_mfu=0.25,  # assumed as v6e
        decode_mfu=0.25,  # assumed as v6e
        allreduce_latency_s=10e-6,  # assumed: ICI
        max_tensor_parallel=8,  # v5e single host: up to 8 chips (ct5lp-hightpu-8t)
        max_num_seqs=256,  # calibration.md §6: GPU branch (< 70 GiB)
        max_num_batched_tokens=512,  # calibration.md §6: TPU v5e serve default
    ),
    DeviceProfile(
        # One ``dra.cpu`` device is one NUMA node (kubernetes-sigs/dra-driver-cpu groups CPUs that
        # way, and so does aviator's discovery); this is one socket of the dual-socket server of
        # calibration.md §3.1 (ggml-org/llama.cpp issue #11744: 2x EPYC 9175F, 16x DDR5-6400).
        name="cpu-server-socket",
        product="Server CPU socket (AMD EPYC 9175F class, 8x DDR5-6400)",
        driver="dra.cpu",
        memory_bytes=256 * _GiB,  # assumed: 8 DIMMs x 32 GiB; the issue does not state capacity
        memory_bandwidth=409.6e9,  # derived: 8 channels x 6400 MT/s x 8 B
        # Derived, approximate: 16 Zen 5 cores x 4.2 GHz x 128 BF16 FLOP/cycle (AVX-512 BF16 dot
        # products on two 512-bit pipes).
        peak_bf16_flops=8.6e12,
        peak_fp8_flops=None,
        # Derived: llama.cpp 70B f16 4.31 tok/s on both sockets (calibration.md §3.1, issue #11744)
        # moves 141.1 GB x 4.31 = 608 GB/s of 819 GB/s ⇒ 74%. llama.cpp, not vLLM's CPU backend.
        decode_bandwidth_efficiency=0.74,
        prefill_mfu=0.30,  # assumed
        decode_mfu=0.30,  # assumed
        allreduce_latency_s=50e-6,  # assumed: shared memory across the socket interconnect
        max_tensor_parallel=2,  # two sockets; vLLM's CPU backend runs one TP rank per NUMA node
        max_num_seqs=128,  # calibration.md §6: CPU 128 x world size (one rank)
        max_num_batched_tokens=2048,  # calibration.md §6: CPU 2048 x world size
    ),
)

PROFILES: Mapping[str, DeviceProfile] = {p.name: p for p in _PROFILES}
"""Every profile by name."""

PRODUCT_PATTERNS: tuple[tuple[str, str], ...] = (
    # (regular expression, profile name). Matched with re.search against the normalised name:
    # case-folded, runs of spaces, '_' and '-' turned into one space ("NVIDIA A100-SXM4-80GB" →
    # "nvidia a100 sxm4 80gb"; the AMD driver publishes "AMD_Instinct_MI300X"). First match wins.
    # Variants with other memory, bandwidth or clocks (H100 PCIe/NVL, H200 NVL, H800, A100 80GB
    # PCIe, L40, MI300A/MI308X, Gaudi 3 PCIe) deliberately match nothing rather than a near miss.
    # NVIDIA: nvidia-smi / NVML names, published by gpu.nvidia.com as productName.
    (
        r"\bh100 (sxm5? )?80gb hbm3$|\bh100 sxm5?( 80gb)?$",
        "h100-sxm-80gb",
    ),  # "NVIDIA H100 80GB HBM3"
    (r"\bh200( sxm)?( 141gb)?$", "h200-sxm-141gb"),  # "NVIDIA H200"
    (r"\ba100 sxm4 80gb$", "a100-sxm-80gb"),  # "NVIDIA A100-SXM4-80GB"
    (r"\ba100 (sxm4|pcie) 40gb$", "a100-40gb"),  # "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"
    (r"\bl40s$", "l40s-48gb"),  # "NVIDIA L40S"
    (r"\bl4$", "l4-24gb"),  # "NVIDIA L4"
    # AMD: sysfs product_name, published by gpu.amd.com as productName (spaces → '_').
    (r"\bmi300x( oam)?$", "mi300x-192gb"),  # "AMD Instinct MI300X", "AMD_Instinct_MI300X"
    # Intel: gaudi.intel.com publishes model "Gaudi3" (pkg/gaudi/device/device.go ModelNames);
    # hl-smi names the OAM card HL-325L (air) or HL-335 (liquid).
    (r"\bgaudi ?3$|^hl 325l?$|^hl 335$", "gaudi3-128gb"),
    # Google: tpu.google.com publishes tpuGen ("v6e", "v5lite", "v5litepod") and the accelerator
    # label ("tpu-v6e-slice", "tpu-v5-lite-podslice"), cmd/tpu-dra-kubeletplugin/util.go.
    (r"^(tpu )?v6e\b|\btrillium\b", "tpu-v6e"),
    (r"^(tpu )?v5e\b|^(tpu )?v5 ?lite", "tpu-v5e"),
    # CPU: /proc/cpuinfo "model name" (aviator discovery), or the device class name itself.
    (r"^cpu$|\bepyc 9175f\b", "cpu-server-socket"),
)

PRODUCT_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    # Driver → the attributes that name the product, most specific first.
    "gpu.nvidia.com": ("productName",),  # kubernetes-sigs/dra-driver-nvidia-gpu deviceinfo.go
    "gpu.amd.com": ("productName",),  # ROCm/k8s-gpu-dra-driver docs/driver-attributes.md
    "gaudi.intel.com": ("model", "productName"),  # upstream "model"; aviator discovery productName
    "tpu.google.com": ("tpuGen", "accelerator"),  # dra-driver-google-tpu manager.go GetDevice
    "dra.cpu": ("productName",),  # aviator discovery (model name from /proc/cpuinfo)
}
"""Where each driver puts the product name among a device's attributes."""

_DRIVER_FALLBACK: Mapping[str, str] = {
    # A CPU is placed even when its model is unknown: the socket profile is the only CPU figure.
    "dra.cpu": "cpu-server-socket",
}

_COMPILED_PATTERNS = tuple((re.compile(pattern), name) for pattern, name in PRODUCT_PATTERNS)
_SEPARATORS = re.compile(r"[\s_\-]+")


def _normalise(product_name: str) -> str:
    return _SEPARATORS.sub(" ", product_name.casefold()).strip()


def profile_for(product_name: str) -> DeviceProfile | None:
    """The profile of a product name as a DRA driver publishes it, or None when none fits.

    Case-insensitive; spaces, ``_`` and ``-`` are interchangeable (see :data:`PRODUCT_PATTERNS`).
    """
    normalised = _normalise(product_name)
    for pattern, name in _COMPILED_PATTERNS:
        if pattern.search(normalised):
            return PROFILES[name]
    return None


def profile_for_device(driver: str, attributes: Mapping[str, Any]) -> DeviceProfile | None:
    """The profile of one DRA device, from the attributes its driver names products with."""
    # Here, not at the top: the simulator imports this module for its device profiles, and the
    # device models bring pydantic (~0.3 s of the start of every engine with a profile).
    from aviator.api.devices import plain_attribute

    for name in PRODUCT_ATTRIBUTES.get(driver, ("productName",)):
        value = plain_attribute(driver, attributes, name)
        if isinstance(value, str) and (profile := profile_for(value)) is not None:
            return profile
    fallback = _DRIVER_FALLBACK.get(driver)
    return None if fallback is None else PROFILES[fallback]


# --- memory ----------------------------------------------------------------------------------


def kv_cache_tokens(
    total_memory_bytes: float,
    *,
    weight_bytes: float,
    reserved_bytes: float,
    kv_bytes_per_token: float,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    block_size: int = BLOCK_SIZE,
) -> int:
    """vLLM's KV-cache size in tokens for one device (calibration.md §1, PR #13596):
    ``(total·utilization - weights - reserved) // (block_size·bytes_per_token) · block_size``."""
    free = total_memory_bytes * gpu_memory_utilization - weight_bytes - reserved_bytes
    if free <= 0:
        return 0
    return int(free // (block_size * kv_bytes_per_token)) * block_size


def _check_tp(profile: DeviceProfile, tensor_parallel: int) -> None:
    if tensor_parallel not in TENSOR_PARALLEL_DEGREES:
        raise ValueError(f"tensor_parallel must be one of {TENSOR_PARALLEL_DEGREES}")
    if tensor_parallel > profile.max_tensor_parallel:
        raise ValueError(
            f"tensor_parallel {tensor_parallel} exceeds the {profile.max_tensor_parallel} "
            f"devices of one {profile.name} node"
        )


def kv_capacity_tokens(
    profile: DeviceProfile, model_class: ModelClass, *, tensor_parallel: int
) -> int:
    """Tokens the KV cache of a ``tensor_parallel``-device replica holds (0: the model does not
    fit). Each device keeps its share of every token's KV, so this is one device's pool."""
    _check_tp(profile, tensor_parallel)
    return kv_cache_tokens(
        profile.memory_bytes,
        weight_bytes=model_class.weight_bytes / tensor_parallel,
        reserved_bytes=model_class.runtime_reserve_bytes,
        kv_bytes_per_token=model_class.kv_bytes_per_token / tensor_parallel,
    )


def default_tensor_parallel(profile: DeviceProfile, model_class: ModelClass) -> int | None:
    """The smallest tensor-parallel degree whose KV cache holds :data:`MIN_KV_TOKENS`, or None
    when even a full node of these devices cannot serve the model."""
    for tp in TENSOR_PARALLEL_DEGREES:
        if tp > profile.max_tensor_parallel:
            break
        if kv_capacity_tokens(profile, model_class, tensor_parallel=tp) >= MIN_KV_TOKENS:
            return tp
    return None


def _resolve_tp(
    profile: DeviceProfile, model_class: ModelClass, tensor_parallel: int | None
) -> int:
    if tensor_parallel is None:
        tp = default_tensor_parallel(profile, model_class)
        if tp is None:
            raise ValueError(
                f"model class {model_class.name} does not fit on "
                f"{profile.max_tensor_parallel}x {profile.name}"
            )
        return tp
    if kv_capacity_tokens(profile, model_class, tensor_parallel=tensor_parallel) < BLOCK_SIZE:
        raise ValueError(
            f"model class {model_class.name} does not fit on {tensor_parallel}x {profile.name}"
        )
    return tensor_parallel


def max_batch(
    profile: DeviceProfile,
    model_class: ModelClass,
    *,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    tensor_parallel: int | None = None,
) -> int:
    """The most sequences of ``context_tokens`` each that run at once: what the KV cache holds,
    capped by vLLM's default ``max_num_seqs``."""
    if context_tokens < 1:
        raise ValueError("context_tokens must be at least 1")
    tp = _resolve_tp(profile, model_class, tensor_parallel)
    kv = kv_capacity_tokens(profile, model_class, tensor_parallel=tp)
    return min(profile.max_num_seqs, kv // context_tokens)


# --- latency ---------------------------------------------------------------------------------


def _peak_flops(profile: DeviceProfile, model_class: ModelClass) -> float:
    if model_class.precision == "fp8" and profile.peak_fp8_flops is not None:
        return profile.peak_fp8_flops
    return profile.peak_bf16_flops


def _fixed_step_s(profile: DeviceProfile, m: ModelClass, tp: int, batch: float) -> float:
    allreduce = 2 * m.layers * profile.allreduce_latency_s if tp > 1 else 0.0
    return (
        _STEP_OVERHEAD_S + m.layers * _LAYER_OVERHEAD_S + allreduce + batch * _SEQUENCE_OVERHEAD_S
    )


def _read_s(profile: DeviceProfile, m: ModelClass, tp: int, batch: float, ctx: float) -> float:
    """Seconds to read the weights and ``batch`` sequences' KV once, per device."""
    moved = (m.weight_bytes + batch * ctx * m.kv_bytes_per_token) / tp
    return moved / (profile.memory_bandwidth * profile.decode_bandwidth_efficiency)


def _decode_flops(m: ModelClass, batch: float, ctx: float) -> float:
    """FLOPs to decode one token for each of ``batch`` sequences of context ``ctx``."""
    return batch * (2 * m.parameters + 4 * m.layers * m.hidden_size * ctx)


def _prefill_flops(m: ModelClass, new: float, cached: float) -> float:
    """FLOPs to prefill ``new`` tokens after ``cached`` ones (causal attention included)."""
    return 2 * m.parameters * new + 2 * m.layers * m.hidden_size * (new * new + 2 * new * cached)


def _step_parts(
    profile: DeviceProfile, m: ModelClass, tp: int, batch: float, ctx: float
) -> tuple[float, float, float]:
    """(fixed costs, memory time, compute time) of one decode step."""
    compute = _decode_flops(m, batch, ctx) / tp / (_peak_flops(profile, m) * profile.decode_mfu)
    return _fixed_step_s(profile, m, tp, batch), _read_s(profile, m, tp, batch, ctx), compute


def _step_s(profile: DeviceProfile, m: ModelClass, tp: int, batch: float, ctx: float) -> float:
    fixed, read, compute = _step_parts(profile, m, tp, batch, ctx)
    return fixed + max(read, compute)


def _ttft_s(
    profile: DeviceProfile,
    m: ModelClass,
    tp: int,
    *,
    prompt: int,
    cached: int,
    batch: float,
    ctx: float,
) -> float:
    hit = min(cached, prompt - 1)  # vLLM recomputes at least the last prompt token
    new = prompt - hit
    others = batch - 1
    chunk = max(1.0, profile.max_num_batched_tokens - others)  # decodes take the budget first
    chunks = math.ceil(new / chunk)
    peak = _peak_flops(profile, m)
    compute = _prefill_flops(m, new, hit) / tp / (peak * profile.prefill_mfu) + chunks * (
        _decode_flops(m, others, ctx) / tp / (peak * profile.decode_mfu)
    )
    read = chunks * _read_s(profile, m, tp, others, ctx)
    return REQUEST_OVERHEAD_S + chunks * _fixed_step_s(profile, m, tp, batch) + max(read, compute)


def _prefill_busy_s(
    profile: DeviceProfile, m: ModelClass, tp: int, prompt: int, cached: int
) -> float:
    """GPU time one request's prefill adds to the steps it shares: its FLOPs."""
    hit = min(cached, prompt - 1)
    flops = _prefill_flops(m, prompt - hit, hit) / tp
    return flops / (_peak_flops(profile, m) * profile.prefill_mfu)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")


def ttft_seconds(
    profile: DeviceProfile,
    model_class: ModelClass,
    *,
    prompt_tokens: int,
    cached_tokens: int = 0,
    batch: int = 1,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    tensor_parallel: int | None = None,
) -> float:
    """Seconds from a request's arrival at an idle-queue engine to its first token, when it joins
    ``batch - 1`` running sequences of ``context_tokens`` each (queueing excluded; see
    :func:`max_throughput_rps`). ``cached_tokens`` of the prompt hit the prefix cache."""
    _check_counts(prompt_tokens=prompt_tokens, batch=batch, context_tokens=context_tokens)
    if cached_tokens < 0 or cached_tokens > prompt_tokens:
        raise ValueError("cached_tokens must be between 0 and prompt_tokens")
    tp = _resolve_tp(profile, model_class, tensor_parallel)
    return _ttft_s(
        profile,
        model_class,
        tp,
        prompt=prompt_tokens,
        cached=cached_tokens,
        batch=batch,
        ctx=context_tokens,
    )


def itl_seconds(
    profile: DeviceProfile,
    model_class: ModelClass,
    *,
    batch: int,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    tensor_parallel: int | None = None,
) -> float:
    """Seconds between two output tokens of a sequence decoding in a batch of ``batch``."""
    _check_counts(batch=batch, context_tokens=context_tokens)
    tp = _resolve_tp(profile, model_class, tensor_parallel)
    return _step_s(profile, model_class, tp, batch, context_tokens)


def max_throughput_rps(
    profile: DeviceProfile,
    model_class: ModelClass,
    *,
    prompt_tokens: int,
    output_tokens: int,
    ttft_p90_budget_s: float,
    cached_tokens: int = 0,
    tensor_parallel: int | None = None,
) -> float:
    """Requests per second one replica sustains with TTFT p90 within ``ttft_p90_budget_s``.

    The approximation, for a Poisson arrival rate λ of identical requests:

    1. Prefills take a share ``rho = λ·s`` of the compute time, ``s`` being the prefill FLOP time
       of one request. A decode step then lasts ``t = fixed + max(read, compute + rho·t)``: it
       stretches by ``1/(1 - rho)`` once compute bound.
    2. Concurrency ``N`` solves Little's law ``N = λ·(TTFT(N) + (output - 1)·t(N))`` with the
       context of a running sequence at ``prompt + output/2`` (iterated from ``N = 1``). ``N`` must
       stay below 90% of the batch limit: KV for ``prompt + output`` tokens per sequence, capped
       by ``max_num_seqs``; beyond it arrivals queue for a slot and TTFT grows without bound.
    3. Prefills wait for each other: the p90 wait is the M/M/1 waiting-time tail
       ``s·ln(10·rho)/(1 - rho)`` (zero while ``rho ≤ 0.1``).
    4. ``TTFT_p90(λ) = TTFT(at batch N) + wait``; it grows with λ, so the answer is found by
       bisection. 0.0 when even an idle replica misses the budget.
    """
    _check_counts(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    if cached_tokens < 0 or cached_tokens > prompt_tokens:
        raise ValueError("cached_tokens must be between 0 and prompt_tokens")
    if not ttft_p90_budget_s > 0:
        raise ValueError("ttft_p90_budget_s must be positive")
    tp = _resolve_tp(profile, model_class, tensor_parallel)
    ctx = prompt_tokens + output_tokens / 2
    kv = kv_capacity_tokens(profile, model_class, tensor_parallel=tp)
    slots = min(profile.max_num_seqs, kv // (prompt_tokens + output_tokens))
    if slots < 1:
        return 0.0
    limit = max(1.0, _SLOT_HEADROOM * slots)
    busy = _prefill_busy_s(profile, model_class, tp, prompt_tokens, cached_tokens)

    def ttft_at(batch: float) -> float:
        return _ttft_s(
            profile,
            model_class,
            tp,
            prompt=prompt_tokens,
            cached=cached_tokens,
            batch=batch,
            ctx=ctx,
        )

    def step_under_load(batch: float, rho: float) -> float:
        # Prefills of arriving requests take rho of the compute time: a step of length t carries
        # rho·t of prefill compute, so t = fixed + max(read, compute + rho·t).
        fixed, read, compute = _step_parts(profile, model_class, tp, batch, ctx)
        return max(fixed + read, (fixed + compute) / (1 - rho))

    def p90(rate: float) -> float:
        rho = rate * busy
        if rho >= 1:
            return math.inf
        concurrency = 1.0
        for _ in range(200):  # rises monotonically to the least fixed point, if there is one
            e2e = ttft_at(concurrency) + (output_tokens - 1) * step_under_load(concurrency, rho)
            following = max(1.0, rate * e2e)
            if following > limit:
                return math.inf
            if following - concurrency < 1e-3:
                break
            concurrency = following
        wait = busy * math.log(10 * rho) / (1 - rho) if rho > 0.1 else 0.0
        return ttft_at(concurrency) + wait

    if p90(0.0) > ttft_p90_budget_s:
        return 0.0
    # No replica beats its decode capacity at the batch limit, nor its prefill capacity.
    high = min(limit / (output_tokens * _step_s(profile, model_class, tp, limit, ctx)), 1 / busy)
    low = 0.0
    for _ in range(40):
        middle = (low + high) / 2
        if p90(middle) <= ttft_p90_budget_s:
            low = middle
        else:
            high = middle
    return low


# --- summaries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Performance:
    """Headline numbers of one model class on one profile (defaults for context and prompt)."""

    profile: str
    model_class: str
    tensor_parallel: int
    kv_capacity_tokens: int
    max_batch: int
    """At :data:`DEFAULT_CONTEXT_TOKENS` per sequence."""
    prefill_tokens_per_s: float
    """Long-prompt prefill rate (linear FLOPs only)."""
    itl_batch1_s: float
    itl_slope_s: float
    """ITL growth per added running sequence while the step stays memory bound."""
    ttft_reference_s: float
    """TTFT of a :data:`REFERENCE_PROMPT_TOKENS` prompt on an idle replica."""


def performance(
    profile: DeviceProfile, model_class: ModelClass, *, tensor_parallel: int | None = None
) -> Performance:
    """The headline numbers, for tables and capacity plans."""
    tp = _resolve_tp(profile, model_class, tensor_parallel)
    ctx = DEFAULT_CONTEXT_TOKENS
    peak = _peak_flops(profile, model_class) * profile.prefill_mfu
    per_kv = model_class.kv_bytes_per_token / tp
    return Performance(
        profile=profile.name,
        model_class=model_class.name,
        tensor_parallel=tp,
        kv_capacity_tokens=kv_capacity_tokens(profile, model_class, tensor_parallel=tp),
        max_batch=max_batch(profile, model_class, tensor_parallel=tp),
        prefill_tokens_per_s=peak * tp / (2 * model_class.parameters),
        itl_batch1_s=_step_s(profile, model_class, tp, 1, ctx),
        itl_slope_s=_SEQUENCE_OVERHEAD_S
        + ctx * per_kv / (profile.memory_bandwidth * profile.decode_bandwidth_efficiency),
        ttft_reference_s=_ttft_s(
            profile, model_class, tp, prompt=REFERENCE_PROMPT_TOKENS, cached=0, batch=1, ctx=ctx
        ),
    )


def sim_options(profile: DeviceProfile, model_class: ModelClass) -> dict[str, float | int]:
    """Settings for the built-in simulator (``SimulatorOptions`` field names) that make a
    simulated replica behave like ``model_class`` on ``profile`` at its default parallelism.

    The simulator's latencies are constant per sequence, whatever the load, so they are taken at
    one operating point, half the batch limit: ``ttft_ms`` for a :data:`REFERENCE_PROMPT_TOKENS`
    prompt and ``itl_ms`` at that batch. An idle simulated replica is therefore slower than the
    real one and a full one faster; ``max_num_seqs`` is the batch limit (:func:`max_batch`), so
    queueing starts where the real engine's would."""
    tp = _resolve_tp(profile, model_class, None)
    limit = max_batch(profile, model_class, tensor_parallel=tp)
    operating = max(1, limit // 2)
    ctx = DEFAULT_CONTEXT_TOKENS
    ttft = _ttft_s(
        profile, model_class, tp, prompt=REFERENCE_PROMPT_TOKENS, cached=0, batch=operating, ctx=ctx
    )
    return {
        "ttft_ms": round(ttft * 1000, 1),
        "itl_ms": round(_step_s(profile, model_class, tp, operating, ctx) * 1000, 1),
        "max_num_seqs": max(1, limit),
        "max_waiting": 1000,  # llm-d-inference-sim's max-waiting-queue-length (calibration.md §8)
    }
