"""The asyncio shell: waking handlers, the single timer, closing."""

from __future__ import annotations

import asyncio

import pytest

from aviator.sim.driver import AsyncEngine, Flight
from aviator.sim.engine import ConstantLatency, FinishReason, ServiceUnavailable

from .helpers import FakeClock


def engine(*, ttft: float = 0.0, itl: float = 0.0, clock: FakeClock | None = None) -> AsyncEngine:
    kwargs = {"clock": clock} if clock is not None else {}
    return AsyncEngine(
        max_num_seqs=2,
        max_waiting=2,
        latency=ConstantLatency(ttft_s=ttft, itl_s=itl),
        kv_cache_blocks=100,
        **kwargs,
    )


def submit(eng: AsyncEngine, *, out: int = 4, stream: bool = False) -> Flight:
    return eng.submit(
        num_prompt_tokens=8, max_output_tokens=out, end_reason=FinishReason.LENGTH, stream=stream
    )


async def test_zero_latency_completes_inside_submit() -> None:
    eng = engine()
    flight = submit(eng)
    assert flight.done
    assert flight.seq.num_output_tokens == 4
    assert eng.num_flights == 0


async def test_timer_drives_tokens_and_streaming_flights_wake_per_token() -> None:
    eng = engine(ttft=0.005, itl=0.002)
    flight = submit(eng, out=3, stream=True)
    seen = []
    while not flight.done:
        await asyncio.wait_for(flight.wait(), 2)
        seen.append(flight.seq.num_output_tokens)
    assert seen[-1] == 3
    assert seen == sorted(seen)


async def test_news_while_not_waiting_is_not_lost() -> None:
    eng = engine(ttft=0.001, itl=60.0)
    flight = submit(eng, stream=True)
    await asyncio.sleep(0.05)  # the first token arrives while nobody waits
    assert flight.seq.num_output_tokens == 1
    await asyncio.wait_for(flight.wait(), 0.5)  # returns at once: level-triggered


async def test_a_timer_firing_before_the_clock_reaches_the_deadline_still_counts() -> None:
    frozen = FakeClock(100.0)  # as if the loop woke early every time: the clock never advances
    eng = engine(ttft=0.003, itl=0.001, clock=frozen)
    flight = submit(eng, out=3)
    await asyncio.wait_for(flight.wait(), 2)
    assert flight.done
    assert flight.seq.finished_time == pytest.approx(100.0 + 0.003 + 2 * 0.001)


async def test_abort_frees_the_slot_and_close_wakes_everyone() -> None:
    eng = engine(ttft=60.0)
    first, second, third = submit(eng), submit(eng), submit(eng)
    assert eng.scheduler.num_waiting == 1
    eng.abort(first)
    assert (eng.scheduler.num_running, eng.scheduler.num_waiting) == (2, 0)
    waiters = [asyncio.create_task(f.wait()) for f in (second, third)]
    await asyncio.sleep(0)
    eng.close()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert all(f.seq.finish_reason is FinishReason.ABORT for f in (first, second, third))
    with pytest.raises(ServiceUnavailable):
        submit(eng)
