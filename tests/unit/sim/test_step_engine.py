"""vLLM's step loop (``StepScheduler``) timed by a device profile (``ProfileLatency``)."""

from __future__ import annotations

import itertools
import math

import pytest

from aviator.placement import profiles
from aviator.sim.engine import FinishReason, Sequence, SequenceStatus, StepBatch, StepScheduler
from aviator.sim.latency import ProfileLatency

from .helpers import FakeClock, drain

H100 = profiles.PROFILES["h100-sxm-80gb"]


def engine(
    *,
    profile: profiles.DeviceProfile = H100,
    model_class: profiles.ModelClass = profiles.LLAMA_8B,
    tp: int = 1,
    budget: int | None = None,
    max_num_seqs: int = 256,
    time_scale: float = 1.0,
    blocks: int = 20_000,
) -> tuple[StepScheduler, FakeClock, ProfileLatency]:
    clock = FakeClock()
    latency = ProfileLatency(profile, model_class, tensor_parallel=tp, time_scale=time_scale)
    sched = StepScheduler(
        max_num_seqs=max_num_seqs, max_waiting=10_000, latency=latency, clock=clock,
        kv_cache_blocks=blocks, max_num_batched_tokens=budget or profile.max_num_batched_tokens,
    )  # fmt: skip
    return sched, clock, latency


def add(sched: StepScheduler, prompt: int, out: int, ids: list[int] | None = None) -> Sequence:
    return sched.add(
        num_prompt_tokens=prompt, max_output_tokens=out, end_reason=FinishReason.LENGTH,
        prompt_token_ids=ids,
    )  # fmt: skip


def ttft(seq: Sequence) -> float:
    assert seq.first_token_time is not None
    return seq.first_token_time - seq.arrival_time


def tpot(seq: Sequence) -> float:
    assert seq.finished_time is not None and seq.first_token_time is not None
    return (seq.finished_time - seq.first_token_time) / (seq.num_output_tokens - 1)


def fitting() -> list[tuple[str, str, int]]:
    out = []
    for profile in profiles.PROFILES.values():
        for model_class in profiles.MODEL_CLASSES.values():
            tp = profiles.default_tensor_parallel(profile, model_class)
            if tp is not None:
                out.append((profile.name, model_class.name, tp))
    return out


@pytest.mark.parametrize(("profile", "model_class", "tp"), fitting())
def test_steps_reproduce_the_profile_functions(profile: str, model_class: str, tp: int) -> None:
    p, m = profiles.PROFILES[profile], profiles.MODEL_CLASSES[model_class]
    latency = ProfileLatency(p, m, tensor_parallel=tp)
    for batch, context in ((1, 1), (1, 1000), (8, 512), (64, 2048), (512, 300)):
        step = latency.step_seconds(
            StepBatch(
                num_seqs=batch, num_decode=batch, decode_context_tokens=batch * context,
                prefill_tokens=0, prefill_attention=0,
            )
        )  # fmt: skip
        expected = profiles.itl_seconds(
            p, m, batch=batch, context_tokens=context, tensor_parallel=tp
        )
        assert step == pytest.approx(expected, rel=1e-9)
    # One prompt on an idle engine, in one step: exactly the profile's TTFT.
    for prompt in (1, 100, 1000, p.max_num_batched_tokens):
        sched, clock, _ = engine(profile=p, model_class=m, tp=tp)
        seq = add(sched, prompt, 2)
        drain(sched, clock)
        expected = profiles.ttft_seconds(p, m, prompt_tokens=prompt, tensor_parallel=tp)
        assert ttft(seq) == pytest.approx(expected, rel=1e-9)


def test_a_prompt_longer_than_the_budget_is_prefilled_in_chunks() -> None:
    sched, clock, _ = engine()
    seq = add(sched, 20_000, 2)  # 8192 + 8192 + 3616
    drain(sched, clock)
    assert sched.num_steps == 3 + 1
    # The profile counts chunks the same way: each pays a step's fixed costs and weight read.
    expected = profiles.ttft_seconds(H100, profiles.LLAMA_8B, prompt_tokens=20_000)
    assert ttft(seq) == pytest.approx(expected, rel=1e-9)
    one_step = engine(budget=20_000)
    seq = add(one_step[0], 20_000, 2)
    drain(one_step[0], one_step[1])
    assert ttft(seq) < expected


def test_ttft_is_overhead_plus_the_prefill_of_the_uncached_tokens() -> None:
    prompt = list(range(4000))
    sched, clock, _ = engine()
    cold = add(sched, len(prompt), 2, ids=prompt)
    drain(sched, clock)
    warm = add(sched, len(prompt) + 10, 2, ids=[*prompt, *range(10)])
    drain(sched, clock)
    assert warm.num_cached_tokens == 4000 // 16 * 16
    hot = profiles.ttft_seconds(
        H100, profiles.LLAMA_8B, prompt_tokens=4010, cached_tokens=warm.num_cached_tokens
    )
    assert ttft(warm) == pytest.approx(hot, rel=1e-9)
    assert ttft(warm) < ttft(cold) / 3


def test_itl_grows_with_the_batch_as_the_profile_says() -> None:
    itls = {}
    for batch in (1, 16, 128, 512):
        # One step prefills them all, so they decode in lockstep.
        sched, clock, _ = engine(max_num_seqs=1024, budget=batch * 1000, blocks=40_000)
        seqs = [add(sched, 1000, 64) for _ in range(batch)]
        drain(sched, clock)
        itls[batch] = tpot(seqs[0])
        # All decode in lockstep: every step carries the whole batch at ~1032 tokens each.
        expected = profiles.itl_seconds(H100, profiles.LLAMA_8B, batch=batch, context_tokens=1032)
        assert itls[batch] == pytest.approx(expected, rel=0.02)
    assert itls[1] < itls[16] < itls[128] < itls[512]


def test_a_prefill_sharing_a_step_stretches_the_decoders_itl() -> None:
    sched, clock, latency = engine()
    decoder = add(sched, 100, 40)
    drain(sched, clock, until=0.1)
    add(sched, 8000, 1)  # one step with an 8000-token chunk
    drain(sched, clock)
    plain = profiles.itl_seconds(H100, profiles.LLAMA_8B, batch=1, context_tokens=140)
    assert tpot(decoder) > plain * 1.5  # one ~300 ms step among 39 of ~8 ms
    assert latency.request_overhead_s == profiles.REQUEST_OVERHEAD_S


def test_decodes_go_first_and_waiting_prompts_take_the_budget_left() -> None:
    sched, clock, _ = engine(budget=64)
    decoders = [add(sched, 10, 50) for _ in range(8)]
    drain(sched, clock, until=0.2)
    assert all(s.num_output_tokens > 1 for s in decoders)
    long = add(sched, 560, 2)  # 64 - 8 decodes = 56 prompt tokens a step: 10 chunks
    computed = [0]
    while long.first_token_time is None:
        deadline = sched.next_deadline()
        assert deadline is not None
        clock.now = deadline
        sched.advance()
        if long.num_computed_tokens != computed[-1]:
            computed.append(long.num_computed_tokens)
    assert [b - a for a, b in itertools.pairwise(computed)] == [56] * 10
    assert all(s.status is SequenceStatus.RUNNING for s in decoders)


def test_an_arrival_during_a_step_waits_for_the_next_one() -> None:
    sched, clock, latency = engine()
    add(sched, 100, 50)
    drain(sched, clock, until=0.05)  # decoding: steps of ~7.7 ms
    deadline = sched.next_deadline()
    assert deadline is not None and deadline > clock.now
    late = add(sched, 100, 2)
    assert late.status is SequenceStatus.WAITING
    drain(sched, clock)
    assert late.scheduled_time is not None
    assert late.scheduled_time >= late.arrival_time + latency.request_overhead_s
    assert late.scheduled_time >= deadline


def test_time_scale_multiplies_every_duration() -> None:
    results = []
    for scale in (1.0, 0.1):
        sched, clock, _ = engine(time_scale=scale)
        seq = add(sched, 500, 20)
        drain(sched, clock)
        results.append((ttft(seq), tpot(seq)))
    (ttft1, tpot1), (ttft2, tpot2) = results
    assert ttft2 == pytest.approx(ttft1 * 0.1) and tpot2 == pytest.approx(tpot1 * 0.1)
    sched, clock, _ = engine(time_scale=0.0)
    seqs = [add(sched, 500, 20) for _ in range(3)]
    assert all(s.finished for s in seqs)  # no time passes: done within the arrival


def test_max_num_seqs_caps_the_batch_in_steps() -> None:
    sched, clock, _ = engine(max_num_seqs=2)
    seqs = [add(sched, 50, 10) for _ in range(3)]
    drain(sched, clock, until=0.006)  # past the request overhead: the first step runs
    assert [s.status for s in seqs].count(SequenceStatus.RUNNING) == 2
    drain(sched, clock)
    assert seqs[2].scheduled_time == seqs[0].finished_time


def test_an_abort_during_a_step_frees_the_blocks_at_once() -> None:
    sched, clock, _ = engine()
    seq = add(sched, 5000, 10)
    drain(sched, clock, until=0.006)  # past the request overhead: its prefill step runs
    assert seq.status is SequenceStatus.RUNNING and sched.kv_cache_usage > 0
    sched.abort(seq)
    assert seq.finish_reason is FinishReason.ABORT
    assert sched.kv_cache.num_free == sched.kv_cache.num_blocks
    drain(sched, clock)
    assert sched.next_deadline() is None


def test_the_kv_cache_of_a_profile_follows_device_memory() -> None:
    from aviator.sim.options import SimOptions

    config = SimOptions(model="m", device_profile="h100-sxm-80gb").resolve()
    tokens = profiles.kv_capacity_tokens(H100, profiles.LLAMA_8B, tensor_parallel=1)
    assert config.num_gpu_blocks == tokens // 16
    assert config.max_num_seqs == H100.max_num_seqs
    assert config.max_num_batched_tokens == H100.max_num_batched_tokens
    l4 = SimOptions(model="m", device_profile="l4-24gb").resolve()
    assert l4.max_model_len == l4.num_gpu_blocks * 16 < 131_072  # capped by the KV cache
    seventy = SimOptions(model="m", device_profile="h100-sxm-80gb", model_class="70b").resolve()
    assert seventy.tensor_parallel == profiles.default_tensor_parallel(H100, profiles.LLAMA_70B)
    assert math.isclose(
        seventy.num_gpu_blocks * 16,
        profiles.kv_capacity_tokens(H100, profiles.LLAMA_70B, tensor_parallel=4),
    )
