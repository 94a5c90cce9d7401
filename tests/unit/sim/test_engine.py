"""The engine model on a fake clock: admission, queueing, timelines, aborts, observer reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from aviator.sim.engine import (
    ConstantLatency,
    FinishReason,
    QueueFull,
    Scheduler,
    Sequence,
    SequenceStatus,
)

from .helpers import FakeClock

TTFT, ITL = 0.040, 0.008


@dataclass
class Recorder:
    """An EngineObserver that keeps every call."""

    calls: list[tuple[str, int, Any]] = field(default_factory=list)
    states: list[tuple[int, int, float]] = field(default_factory=list)

    def on_scheduled(self, seq: Sequence) -> None:
        self.calls.append(("scheduled", seq.seq_id, seq.scheduled_time))

    def on_first_token(self, seq: Sequence) -> None:
        self.calls.append(("first", seq.seq_id, seq.first_token_time))

    def on_decode(self, seq: Sequence, *, count: int, interval: float) -> None:
        self.calls.append(("decode", seq.seq_id, (count, interval)))

    def on_preempted(self, seq: Sequence) -> None:
        self.calls.append(("preempted", seq.seq_id, seq.num_output_tokens))

    def on_finished(self, seq: Sequence) -> None:
        self.calls.append(("finished", seq.seq_id, seq.finish_reason))

    def on_state(self, *, num_running: int, num_waiting: int, kv_cache_usage: float) -> None:
        self.states.append((num_running, num_waiting, kv_cache_usage))


def scheduler(
    *,
    max_num_seqs: int = 2,
    max_waiting: int = 2,
    ttft: float = TTFT,
    itl: float = ITL,
    kv_cache_blocks: int = 100,
    observer: Recorder | None = None,
) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    sched = Scheduler(
        max_num_seqs=max_num_seqs,
        max_waiting=max_waiting,
        latency=ConstantLatency(ttft_s=ttft, itl_s=itl),
        clock=clock,
        kv_cache_blocks=kv_cache_blocks,
        observer=observer,
    )
    return sched, clock


def add(sched: Scheduler, *, prompt: int = 10, out: int = 5) -> Sequence:
    return sched.add(
        num_prompt_tokens=prompt, max_output_tokens=out, end_reason=FinishReason.LENGTH
    )


def test_a_lone_request_gets_ttft_then_one_token_per_itl() -> None:
    sched, clock = scheduler()
    seq = add(sched, out=5)
    assert seq.status is SequenceStatus.RUNNING
    assert sched.next_deadline() == pytest.approx(TTFT)
    clock.now = TTFT - 1e-6
    assert sched.advance() == []
    clock.now = TTFT
    assert sched.advance() == [seq]
    assert seq.num_output_tokens == 1
    assert seq.first_token_time == pytest.approx(TTFT)
    clock.now = TTFT + 2 * ITL
    sched.advance()
    assert seq.num_output_tokens == 3
    clock.now = 10.0
    assert sched.advance() == [seq]
    assert seq.finished
    assert seq.finish_reason is FinishReason.LENGTH
    assert seq.finished_time == pytest.approx(TTFT + 4 * ITL)  # e2e = TTFT + (n - 1) * ITL
    assert sched.next_deadline() is None


def test_requests_beyond_max_num_seqs_queue_and_their_ttft_includes_the_wait() -> None:
    sched, clock = scheduler(max_num_seqs=2)
    a, b, c = add(sched), add(sched), add(sched)
    assert [s.status for s in (a, b, c)] == [SequenceStatus.RUNNING] * 2 + [SequenceStatus.WAITING]
    assert (sched.num_running, sched.num_waiting) == (2, 1)
    clock.now = 10.0  # one late wake-up: the timeline is still exact
    changed = sched.advance()
    assert set(changed) == {a, b, c}
    slot_free = TTFT + 4 * ITL
    assert c.scheduled_time == pytest.approx(slot_free)
    assert c.first_token_time == pytest.approx(slot_free + TTFT)
    assert c.finished_time == pytest.approx(slot_free + TTFT + 4 * ITL)
    assert (sched.num_running, sched.num_waiting) == (0, 0)


def test_a_full_waiting_queue_refuses_with_queue_full() -> None:
    sched, clock = scheduler(max_num_seqs=1, max_waiting=1)
    add(sched)
    add(sched)
    with pytest.raises(QueueFull) as info:
        add(sched)
    assert info.value.code == 503
    assert (sched.num_running, sched.num_waiting) == (1, 1)
    clock.now = 10.0
    sched.advance()
    assert add(sched).status is SequenceStatus.RUNNING


def test_zero_waiting_bound_refuses_as_soon_as_all_slots_run() -> None:
    sched, _ = scheduler(max_num_seqs=1, max_waiting=0)
    add(sched)
    with pytest.raises(QueueFull):
        add(sched)


def test_arrival_after_a_slot_freed_in_the_past_does_not_queue() -> None:
    sched, clock = scheduler(max_num_seqs=1)
    first = add(sched)
    clock.now = 1.0  # first finished long ago; nobody called advance()
    second = add(sched)
    assert first.finished
    assert second.status is SequenceStatus.RUNNING
    assert second.scheduled_time == second.arrival_time == 1.0


def test_aborting_a_running_sequence_frees_its_slot_for_the_next() -> None:
    sched, clock = scheduler(max_num_seqs=1)
    a, b = add(sched), add(sched)
    clock.now = 0.010
    sched.abort(a)
    assert a.finish_reason is FinishReason.ABORT
    assert a.finished_time == 0.010
    assert b.status is SequenceStatus.RUNNING
    assert b.scheduled_time == 0.010
    assert sched.next_deadline() == pytest.approx(0.010 + TTFT)
    sched.abort(a)  # idempotent


def test_aborting_a_waiting_sequence_removes_it_from_the_queue() -> None:
    sched, clock = scheduler(max_num_seqs=1)
    a, b = add(sched), add(sched)
    sched.abort(b)
    assert (sched.num_running, sched.num_waiting) == (1, 0)
    assert b.finish_reason is FinishReason.ABORT
    assert b.scheduled_time is None
    clock.now = 10.0
    assert sched.advance() == [b, a]  # b's end is news too


def test_abort_all_ends_everything_and_schedules_nothing() -> None:
    sched, _ = scheduler(max_num_seqs=1)
    seqs = [add(sched) for _ in range(3)]
    assert set(sched.abort_all()) == set(seqs)
    assert all(s.finish_reason is FinishReason.ABORT for s in seqs)
    assert (sched.num_running, sched.num_waiting, sched.next_deadline()) == (0, 0, None)


def test_zero_latency_finishes_within_one_advance() -> None:
    sched, _ = scheduler(ttft=0.0, itl=0.0)
    seq = add(sched, out=16)
    assert sched.advance() == [seq]
    assert seq.finished
    assert seq.num_output_tokens == 16


def test_interleaved_sequences_are_processed_in_time_order() -> None:
    seen: list[tuple[int, int]] = []

    class Probe(ConstantLatency):
        def decode_seconds(self, seq: Sequence, *, num_running: int) -> float:
            seen.append((seq.seq_id, seq.num_output_tokens))
            return self.itl_s

    clock = FakeClock()
    sched = Scheduler(
        max_num_seqs=4, max_waiting=0, latency=Probe(ttft_s=0.010, itl_s=0.010),
        clock=clock, kv_cache_blocks=100,
    )  # fmt: skip
    a = add(sched, out=3)
    clock.now = 0.005
    b = add(sched, out=3)
    clock.now = 1.0
    sched.advance()
    # a's tokens at 10, 20, 30 ms; b's at 15, 25, 35 ms: alternate.
    assert seen == [(a.seq_id, 1), (b.seq_id, 1), (a.seq_id, 2), (b.seq_id, 2)]


def test_latency_model_sees_the_running_batch() -> None:
    batches: list[int] = []

    class Loaded(ConstantLatency):
        def prefill_seconds(self, seq: Sequence, *, num_running: int) -> float:
            batches.append(num_running)
            return self.ttft_s * num_running

    clock = FakeClock()
    sched = Scheduler(
        max_num_seqs=4, max_waiting=0, latency=Loaded(ttft_s=0.010, itl_s=0.0),
        clock=clock, kv_cache_blocks=100,
    )  # fmt: skip
    add(sched)
    second = add(sched)
    assert batches == [1, 2]
    assert sched.next_deadline() == pytest.approx(0.010)
    clock.now = 1.0
    sched.advance()
    assert second.first_token_time == pytest.approx(0.020)


def test_observer_sees_the_whole_life_of_a_sequence() -> None:
    rec = Recorder()
    sched, clock = scheduler(observer=rec)
    seq = add(sched, out=4)
    clock.now = 1.0
    sched.advance()
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["scheduled", "first", "decode", "finished"]
    assert rec.calls[2][2] == (3, pytest.approx(ITL))
    assert rec.calls[3][2] is FinishReason.LENGTH
    assert rec.states[0][:2] == (1, 0)
    assert rec.states[-1] == (0, 0, 0.0)
    assert seq.num_output_tokens == 4


def test_kv_cache_usage_counts_blocks_of_sixteen_tokens_of_running_sequences() -> None:
    sched, clock = scheduler(kv_cache_blocks=10)
    seq = add(sched, prompt=32, out=3)
    assert sched.kv_cache_usage == pytest.approx(0.2)  # 32 tokens = 2 blocks
    clock.now = TTFT
    sched.advance()
    assert seq.num_tokens == 33
    assert sched.kv_cache_usage == pytest.approx(0.3)
    clock.now = 1.0
    sched.advance()
    assert sched.kv_cache_usage == 0.0


def test_a_request_that_can_never_fit_the_kv_cache_is_refused() -> None:
    sched, _ = scheduler(kv_cache_blocks=2)
    with pytest.raises(ValueError, match="never fit"):
        add(sched, prompt=30, out=4)  # 33 tokens of KV: 3 blocks
    add(sched, prompt=30, out=3)  # 32 tokens: exactly 2 blocks
    assert sched.kv_cache_usage == 1.0


def test_bad_arguments_are_refused() -> None:
    sched, _ = scheduler()
    with pytest.raises(ValueError, match="max_output_tokens"):
        add(sched, out=0)
    with pytest.raises(ValueError, match="max_num_seqs"):
        Scheduler(
            max_num_seqs=0, max_waiting=0, latency=ConstantLatency(ttft_s=0, itl_s=0),
            clock=FakeClock(), kv_cache_blocks=1,
        )  # fmt: skip
