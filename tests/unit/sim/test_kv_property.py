"""Property: whatever arrives, finishes, aborts or gets preempted, KV blocks never leak."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.sim.engine import (
    ConstantLatency,
    FinishReason,
    Scheduler,
    Sequence,
    SequenceStatus,
    StepBatch,
    StepScheduler,
)
from aviator.sim.options import BLOCK_SIZE

from .helpers import FakeClock, drain

BLOCKS = 10


@dataclass(frozen=True)
class Steps:
    request_overhead_s: float = 0.0005

    def step_seconds(self, batch: StepBatch) -> float:
        return 0.001 + 2e-5 * (batch.num_decode + batch.prefill_tokens)


def make(kind: str, clock: FakeClock) -> Scheduler | StepScheduler:
    if kind == "timeline":
        return Scheduler(
            max_num_seqs=4, max_waiting=1000, latency=ConstantLatency(ttft_s=0.004, itl_s=0.001),
            clock=clock, kv_cache_blocks=BLOCKS,
        )  # fmt: skip
    return StepScheduler(
        max_num_seqs=4, max_waiting=1000, latency=Steps(), clock=clock, kv_cache_blocks=BLOCKS,
        max_num_batched_tokens=24,
    )  # fmt: skip


def check(sched: Scheduler | StepScheduler) -> None:
    """Every block's reference count is the number of running sequences holding it; waiting and
    finished sequences hold none; the free count and the cache index agree with the blocks."""
    pool = sched.kv_cache
    held: Counter[int] = Counter()
    for seq in sched.sequences():
        if seq.status is SequenceStatus.RUNNING:
            assert len(seq._blocks) * BLOCK_SIZE >= seq.num_computed_tokens
            assert len({b.block_id for b in seq._blocks}) == len(seq._blocks)
            held.update(b.block_id for b in seq._blocks)
        else:
            assert seq._blocks == []
    for block in pool.blocks:
        assert block.ref_cnt == held[block.block_id] >= 0
        if block.block_hash is not None:
            assert pool.lookup([block.block_hash]) == [block]
    assert pool.num_free == pool.num_blocks - len(held)
    assert sched.kv_cache_usage == pytest.approx(len(held) / pool.num_blocks)


add_op = st.tuples(
    st.just("add"),
    st.integers(0, 2),  # which shared prefix
    st.integers(0, 48),  # how much of it
    st.integers(0, 30),  # own tokens after it
    st.integers(1, 40),  # output tokens
    st.booleans(),  # answer ids known
)
tick_op = st.tuples(st.just("tick"), st.floats(0, 0.03))
abort_op = st.tuples(st.just("abort"), st.integers(0, 40))


@pytest.mark.parametrize("kind", ["timeline", "stepped"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(add_op, tick_op, abort_op), max_size=50))
def test_blocks_never_leak(kind: str, ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    sched = make(kind, clock)
    seqs: list[Sequence] = []
    unique = 10_000
    for op in ops:
        if op[0] == "add":
            _, prefix, shared, own, out, answer = op
            prompt = [prefix * 1000 + i for i in range(shared)]
            prompt += range(unique, unique + own + (0 if shared + own else 1))
            unique += own + 1
            seqs.append(
                sched.add(
                    num_prompt_tokens=len(prompt),
                    max_output_tokens=out,
                    end_reason=FinishReason.LENGTH,
                    prompt_token_ids=prompt,
                    output_token_ids=list(range(-out, 0)) if answer else None,
                )
            )
        elif op[0] == "tick":
            clock.now += op[1]
            sched.advance()
        elif seqs:
            sched.abort(seqs[op[1] % len(seqs)])
        check(sched)
    drain(sched, clock)
    check(sched)
    for seq in seqs:
        assert seq.finished
        if seq.finish_reason is FinishReason.LENGTH:
            assert seq.num_output_tokens == seq.max_output_tokens
    pool = sched.kv_cache
    assert pool.num_free == pool.num_blocks  # nothing held
    evictable = len(pool.evictable())
    assert evictable == pool.num_cached  # every cached block is free, hence evictable
    pool.allocate(pool.num_blocks)  # and all of them can be taken back
    assert pool.num_cached == 0
