"""The simulator against published vLLM measurements (calibration.md §3.1), on a fake clock.

Each case replays the published workload through the pure engine (``StepScheduler`` timed by
``ProfileLatency``, sized by ``SimOptions.resolve`` like the server) and compares the same
statistic the source reports. Sources are the ones the device profiles were calibrated on:

- yobitel: https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/ (1x H100-80GB HBM3,
  Llama-3.1-8B-Instruct fp16, vLLM 0.21.0, "chatbot-short", concurrency 1). The prompt and answer
  lengths are not published: 128 and 256 tokens are assumed (a short chat turn).
- Lambda: LambdaLabsML/vllm-benchmark ``results/prompt_10/<gpu>/<model>_tp1_len2048.json``
  (vLLM ~0.6.0, ``vllm bench serve`` with 10 ShareGPT prompts sent at once; the files list each
  prompt's and answer's length, replayed here exactly). Their medians of TTFT and of TPOT.
- johnmusgrave: https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on (1x A100 40GB,
  Llama-3.1-8B-Instruct BF16, vLLM 0.23.0, 1024 tokens in, 128 out, concurrency 1: "about
  75 tokens/sec", i.e. 13.3 ms per token).
- AMD: https://www.amd.com/en/developer/resources/rocm-hub/dev-ai/performance-results.html
  (8x MI300X, Llama-3.1-70B FP8, TP8, ROCm vLLM 0.10.2, ``benchmark_latency`` 128 in / 2048 out:
  seconds for the whole batch at batch size 1, 2, 4).

Tolerances, and why:

- Decode figures (TPOT, and the latency of decode-bound batches): within 20 %. Two vLLM
  measurements of the same GPU and model at low load disagree by 17 % (H100, Llama-3-8B: yobitel
  6.48 ms vs Lambda 7.56 ms TPOT), so agreement much tighter than that cannot be claimed.
- Prefill figures (TTFT): within 25 %. Prefill efficiency depends on the vLLM version and the
  batch's shape: the H100 profile uses BLIS's fitted MFU of 0.45, while Lambda's two H100 runs
  imply about 0.39 (8B) and 0.36 (70B FP8).

One comparison is a known miss and marked so (strict xfail, so that fixing it shows): Lambda's
A100-80GB TTFT implies a prefill MFU near 0.6, well above the A100 profile's BLIS value of 0.38;
the profile (``aviator.placement.profiles``) is where that would change.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pytest

from aviator.sim.engine import FinishReason, Sequence, StepScheduler
from aviator.sim.latency import ProfileLatency
from aviator.sim.options import SimOptions

from .helpers import FakeClock, drain

DECODE, PREFILL = 0.20, 0.25
SHAREGPT_10_IN = (13, 25, 27, 10, 329, 29, 399, 328, 4, 205)
"""Prompt lengths of Lambda's 10 ShareGPT prompts (the same in every result file)."""


@dataclass(frozen=True)
class Case:
    name: str
    profile: str
    model_class: str
    tensor_parallel: int
    requests: tuple[tuple[int, int], ...]
    """(prompt tokens, output tokens), all sent at once."""
    metric: str
    published: float
    tolerance: float


def median_ttft_ms(seqs: list[Sequence]) -> float:
    return 1000 * statistics.median(
        s.first_token_time - s.arrival_time for s in seqs if s.first_token_time is not None
    )


def median_tpot_ms(seqs: list[Sequence]) -> float:
    # vllm bench serve: (latency - ttft) / (output - 1), for answers longer than one token.
    return 1000 * statistics.median(
        (s.finished_time - s.first_token_time) / (s.num_output_tokens - 1)
        for s in seqs
        if s.finished_time is not None
        and s.first_token_time is not None
        and s.num_output_tokens > 1
    )


def batch_seconds(seqs: list[Sequence]) -> float:
    return max(s.finished_time or 0.0 for s in seqs)


METRICS = {"ttft_ms": median_ttft_ms, "tpot_ms": median_tpot_ms, "batch_s": batch_seconds}


def lambda_case(
    name: str, profile: str, model_class: str, outputs: tuple[int, ...], metric: str, value: float
) -> Case:
    # Two of the 70B answers are empty in the file; they were still prefilled, so they count.
    requests = tuple((i, max(1, o)) for i, o in zip(SHAREGPT_10_IN, outputs, strict=True))
    tolerance = PREFILL if metric == "ttft_ms" else DECODE
    return Case(name, profile, model_class, 1, requests, metric, value, tolerance)


H100_8B_OUT = (120, 429, 233, 194, 101, 741, 9, 3, 6, 31)
A100_8B_OUT = (120, 507, 233, 194, 101, 741, 9, 3, 6, 31)
H100_70B_OUT = (120, 655, 92, 194, 101, 741, 0, 0, 6, 78)

CASES = [
    Case("yobitel H100 8B c=1 TTFT", "h100-sxm-80gb", "8b", 1, ((128, 256),), "ttft_ms", 13.98,
         PREFILL),
    Case("yobitel H100 8B c=1 TPOT", "h100-sxm-80gb", "8b", 1, ((128, 256),), "tpot_ms", 6.48,
         DECODE),
    lambda_case("Lambda H100 8B TTFT", "h100-sxm-80gb", "8b", H100_8B_OUT, "ttft_ms", 62.19),
    lambda_case("Lambda H100 8B TPOT", "h100-sxm-80gb", "8b", H100_8B_OUT, "tpot_ms", 7.56),
    pytest.param(
        lambda_case("Lambda A100 8B TTFT", "a100-sxm-80gb", "8b", A100_8B_OUT, "ttft_ms", 126.73),
        marks=pytest.mark.xfail(
            strict=True, reason="A100 profile prefill MFU 0.38 (BLIS) vs ~0.6 in this run"
        ),
    ),
    lambda_case("Lambda A100 8B TPOT", "a100-sxm-80gb", "8b", A100_8B_OUT, "tpot_ms", 12.01),
    lambda_case("Lambda H100 70B-FP8 TTFT", "h100-sxm-80gb", "70b-fp8", H100_70B_OUT, "ttft_ms",
                280.37),
    lambda_case("Lambda H100 70B-FP8 TPOT", "h100-sxm-80gb", "70b-fp8", H100_70B_OUT, "tpot_ms",
                32.09),
    Case("johnmusgrave A100-40 8B c=1 TPOT", "a100-40gb", "8b", 1, ((1024, 128),), "tpot_ms",
         1000 / 75, DECODE),
    Case("AMD MI300X 70B-FP8 TP8 BS1", "mi300x-192gb", "70b-fp8", 8, ((128, 2048),), "batch_s",
         15.882, DECODE),
    Case("AMD MI300X 70B-FP8 TP8 BS2", "mi300x-192gb", "70b-fp8", 8, ((128, 2048),) * 2,
         "batch_s", 17.934, DECODE),
    Case("AMD MI300X 70B-FP8 TP8 BS4", "mi300x-192gb", "70b-fp8", 8, ((128, 2048),) * 4,
         "batch_s", 18.487, DECODE),
]  # fmt: skip


def simulate(case: Case) -> float:
    options = SimOptions(
        model="m",
        device_profile=case.profile,
        model_class=case.model_class,
        tensor_parallel=case.tensor_parallel,
    )
    config = options.resolve()
    assert config.profile is not None and config.model_class is not None
    clock = FakeClock()
    sched = StepScheduler(
        max_num_seqs=config.max_num_seqs,
        max_waiting=1000,
        latency=ProfileLatency(
            config.profile, config.model_class, tensor_parallel=case.tensor_parallel
        ),
        clock=clock,
        kv_cache_blocks=config.num_gpu_blocks,
        max_num_batched_tokens=config.max_num_batched_tokens or 0,
    )
    seqs = [
        sched.add(num_prompt_tokens=i, max_output_tokens=o, end_reason=FinishReason.LENGTH)
        for i, o in case.requests
    ]
    drain(sched, clock)
    assert all(s.finished for s in seqs)
    return METRICS[case.metric](seqs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_simulated_latency_matches_published_vllm_figures(case: Case) -> None:
    simulated = simulate(case)
    error = simulated / case.published - 1
    assert abs(error) <= case.tolerance, (
        f"{case.name}: simulated {simulated:.2f} vs published {case.published:.2f} "
        f"{case.metric} ({error:+.1%}, tolerance ±{case.tolerance:.0%})"
    )
