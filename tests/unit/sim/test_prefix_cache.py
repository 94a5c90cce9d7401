"""Paged KV cache and automatic prefix caching in the engine, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from aviator.sim.engine import (
    ConstantLatency,
    FinishReason,
    Scheduler,
    Sequence,
    SequenceStatus,
    StepBatch,
    StepScheduler,
)
from aviator.sim.kvcache import hash_blocks
from aviator.sim.metrics import SimMetrics
from aviator.sim.tokenizer import Tokenizer, render_chat

from .helpers import FakeClock, drain

TTFT, ITL = 0.040, 0.008
Make = Callable[..., tuple[Scheduler | StepScheduler, FakeClock]]


@dataclass(frozen=True)
class LinearSteps:
    """A ``StepModel`` that is easy to reason about: 1 ms a step plus 10 µs a token."""

    request_overhead_s: float = 0.0

    def step_seconds(self, batch: StepBatch) -> float:
        return 0.001 + 1e-5 * (batch.num_decode + batch.prefill_tokens)


def timeline(
    *,
    blocks: int = 64,
    caching: bool = True,
    max_num_seqs: int = 8,
    metrics: SimMetrics | None = None,
) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    sched = Scheduler(
        max_num_seqs=max_num_seqs, max_waiting=100, latency=ConstantLatency(ttft_s=TTFT, itl_s=ITL),
        clock=clock, kv_cache_blocks=blocks, enable_prefix_caching=caching, observer=metrics,
    )  # fmt: skip
    return sched, clock


def stepped(
    *, blocks: int = 64, budget: int = 64, max_num_seqs: int = 8, metrics: SimMetrics | None = None
) -> tuple[StepScheduler, FakeClock]:
    clock = FakeClock()
    sched = StepScheduler(
        max_num_seqs=max_num_seqs, max_waiting=100, latency=LinearSteps(), clock=clock,
        kv_cache_blocks=blocks, max_num_batched_tokens=budget, observer=metrics,
    )  # fmt: skip
    return sched, clock


def add(
    sched: Scheduler | StepScheduler,
    prompt: list[int],
    out: int = 4,
    answer: list[int] | None = None,
) -> Sequence:
    return sched.add(
        num_prompt_tokens=len(prompt), max_output_tokens=out, end_reason=FinishReason.LENGTH,
        prompt_token_ids=prompt, output_token_ids=answer,
    )  # fmt: skip


def ids(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


@pytest.mark.parametrize("make", [timeline, stepped])
def test_a_shared_prefix_hits_in_whole_blocks(make: Make) -> None:
    metrics = SimMetrics(model_name="m", kv_cache_blocks=64)
    sched, clock = make(metrics=metrics)
    first = add(sched, ids(100))
    drain(sched, clock)
    assert first.num_cached_tokens == 0
    second = add(sched, [*ids(85), *ids(15, start=1000)])  # shares 85 tokens: 5 full blocks
    drain(sched, clock)
    assert second.num_cached_tokens == 80
    assert (metrics.prefix_cache_queries, metrics.prefix_cache_hits) == (200, 80)


@pytest.mark.parametrize("make", [timeline, stepped])
def test_an_identical_prompt_recomputes_at_least_its_last_token(make: Make) -> None:
    sched, clock = make()
    add(sched, ids(64))
    drain(sched, clock)
    again = add(sched, ids(64))
    assert again.num_cached_tokens == 48  # (64 - 1) // 16 blocks: the last block is recomputed
    drain(sched, clock)
    short = add(sched, ids(15))
    assert short.num_cached_tokens == 0  # no full block, nothing to hit


@pytest.mark.parametrize("make", [timeline, stepped])
def test_only_full_blocks_are_cached(make: Make) -> None:
    sched, clock = make()
    add(sched, ids(20), out=1)
    drain(sched, clock)
    assert sched.kv_cache.num_cached == 1  # 20 tokens: one full block, a partial one
    assert add(sched, ids(40)).num_cached_tokens == 16


@pytest.mark.parametrize("make", [timeline, stepped])
def test_generated_blocks_are_cached_so_the_next_turn_hits_them(make: Make) -> None:
    sched, clock = make()
    answer = ids(30, start=500)
    add(sched, ids(10), out=30, answer=answer)
    drain(sched, clock)
    # 40 tokens, 39 computed (the last sampled token's KV never is): two full blocks cached.
    assert sched.kv_cache.num_cached == 2
    follow_up = add(sched, [*ids(10), *answer, *ids(8, start=900)])
    assert follow_up.num_cached_tokens == 32


def test_without_ids_or_with_caching_off_nothing_hits() -> None:
    sched, clock = timeline()
    for _ in range(2):
        seq = sched.add(num_prompt_tokens=64, max_output_tokens=2, end_reason=FinishReason.STOP)
        drain(sched, clock)
        assert seq.num_cached_tokens == 0
    metrics = SimMetrics(model_name="m", kv_cache_blocks=64, enable_prefix_caching=False)
    sched, clock = timeline(caching=False, metrics=metrics)
    for _ in range(2):
        seq = add(sched, ids(64))
        drain(sched, clock)
        assert seq.num_cached_tokens == 0
    assert sched.kv_cache.num_cached == 0
    assert (metrics.prefix_cache_queries, metrics.prefix_cache_hits) == (0, 0)


def test_running_sequences_share_cached_blocks() -> None:
    sched, clock = timeline()
    first = add(sched, ids(48), out=50)
    clock.now = TTFT  # first token: the prompt's KV is computed and its 2 full blocks cached
    sched.advance()
    second = add(sched, [*ids(32), 7, 7, 7], out=50)
    assert second.num_cached_tokens == 32
    shared = second._blocks[:2]
    assert shared == first._blocks[:2]
    assert [b.ref_cnt for b in shared] == [2, 2]
    used = len({id(b) for b in first._blocks} | {id(b) for b in second._blocks})
    assert sched.kv_cache.usage == pytest.approx(used / 64)


def test_eviction_takes_the_least_recently_released_block_and_a_prompt_tail_first() -> None:
    sched, clock = timeline(blocks=6)
    old = ids(32)  # 2 blocks
    new = ids(32, start=100)
    for prompt in (old, new):
        add(sched, prompt, out=1)
        drain(sched, clock)
    assert sched.kv_cache.num_cached == 4
    add(sched, ids(40, start=200), out=1)  # needs 3 blocks: 2 never used, then 1 evicted
    drain(sched, clock)
    # The evicted one is old's tail: old's head still hits, new's two blocks too.
    assert add(sched, old, out=1).num_cached_tokens == 16
    drain(sched, clock)
    assert add(sched, [*new, 1], out=1).num_cached_tokens == 32


def test_a_long_shared_system_prompt_gives_identical_leading_blocks() -> None:
    tok = Tokenizer()
    system = "You are the support assistant of ExampleCorp. " * 40
    prompts = [
        tok.encode(render_chat([("system", system), ("user", question)]))
        for question in ("How do I reset my password?", "What are your opening hours today?")
    ]
    a, b = (hash_blocks(p) for p in prompts)
    # What the two prompts share: everything up to the end of the system turn.
    shared_text = (
        f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    )
    assert all(render_chat([("system", system), ("user", q)]).startswith(shared_text) for q in "ab")
    shared = len(tok.encode(shared_text))
    assert shared > 400
    full = shared // 16
    assert a[:full] == b[:full]  # every block inside the shared text hashes the same
    assert a[full + 1 :] != b[full + 1 :]  # and none after the questions begin
    sched, clock = timeline()
    add(sched, prompts[0], out=1)
    drain(sched, clock)
    assert add(sched, prompts[1], out=1).num_cached_tokens >= full * 16


def test_a_multi_turn_conversation_hits_the_previous_answer() -> None:
    tok = Tokenizer()
    turn1 = [("system", "Be brief and exact. " * 10), ("user", "Explain prefix caching.")]
    answer = (
        "Prefix caching keeps computed blocks and reuses them, when the next prompt begins " * 3
    )
    prompt1 = tok.encode(render_chat(turn1))
    answer_ids = tok.encode(answer)
    prompt2 = tok.encode(render_chat([*turn1, ("assistant", answer), ("user", "And eviction?")]))
    # The second turn's tokens begin with the first turn's prompt and answer, exactly.
    assert prompt2[: len(prompt1) + len(answer_ids)] == prompt1 + answer_ids
    sched, clock = timeline()
    add(sched, prompt1, out=len(answer_ids), answer=answer_ids)
    drain(sched, clock)
    second = add(sched, prompt2)
    assert second.num_cached_tokens == (len(prompt1) + len(answer_ids) - 1) // 16 * 16


# -- preemption


def test_a_sequence_that_cannot_grow_preempts_the_latest_admitted_one() -> None:
    metrics = SimMetrics(model_name="m", kv_cache_blocks=4)
    sched, clock = timeline(blocks=4, metrics=metrics)
    older = add(sched, ids(16, start=0), out=40)  # 56 tokens: 4 blocks alone
    newer = add(sched, ids(16, start=100), out=30)  # 46 tokens: 3 blocks alone
    assert (older.num_blocks, newer.num_blocks) == (1, 1)
    clock.now = TTFT + 20 * ITL  # both need a third block at 33 tokens: 2 + 2 + 1 > 4
    sched.advance()
    assert newer.status is SequenceStatus.WAITING and newer.num_preemptions == 1
    assert newer.num_blocks == 0 and newer.num_output_tokens > 0
    assert older.status is SequenceStatus.RUNNING
    assert metrics.preemptions == sched.num_preemptions == 1
    drain(sched, clock)
    assert older.finished and newer.finished
    assert older.num_output_tokens == 40 and newer.num_output_tokens == 30
    assert newer.finished_time is not None and older.finished_time is not None
    assert newer.finished_time > older.finished_time  # resumed only once blocks were free
    assert sched.kv_cache.num_free == 4


def test_a_preempted_sequence_is_recomputed_from_its_cached_blocks() -> None:
    sched, clock = stepped(blocks=5, budget=512)
    older = add(sched, ids(32), out=40, answer=ids(40, start=50))
    newer = add(sched, ids(32, start=200), out=20, answer=ids(20, start=300))
    drain(sched, clock, until=0.5)
    assert newer.num_preemptions >= 1
    drain(sched, clock)
    assert older.finished and newer.finished and newer.num_output_tokens == 20
    # Prefix-cache counters count the first admission only.
    assert newer.num_cached_tokens == 0


def test_stepped_preemption_keeps_the_oldest_sequences_running() -> None:
    metrics = SimMetrics(model_name="m", kv_cache_blocks=6)
    sched, clock = stepped(blocks=6, budget=256, metrics=metrics)
    seqs = [add(sched, ids(16, start=100 * i), out=30) for i in range(3)]
    drain(sched, clock)
    assert all(s.finished and s.num_output_tokens == 30 for s in seqs)
    assert seqs[0].num_preemptions == 0
    assert metrics.preemptions == sum(s.num_preemptions for s in seqs) > 0
    assert sched.kv_cache.num_free == 6


def test_admission_waits_for_free_blocks() -> None:
    sched, clock = timeline(blocks=4)
    big = add(sched, ids(60), out=2)  # 4 blocks
    small = add(sched, ids(10, start=100), out=2)
    assert big.status is SequenceStatus.RUNNING
    assert small.status is SequenceStatus.WAITING  # a slot is free, blocks are not
    drain(sched, clock)
    assert small.finished and small.scheduled_time == big.finished_time
