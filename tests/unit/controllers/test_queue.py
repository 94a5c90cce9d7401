import asyncio

import pytest

from aviator.controllers.queue import ShutDown, WorkQueue


async def test_keys_are_deduplicated_while_queued() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "a"]:
        q.add(key)
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_a_key_added_while_processing_comes_back_after_done_not_before() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # changed while being reconciled
    assert len(q) == 0, "must not be handed to a second worker concurrently"
    q.done(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_waiting_workers_wake_up_on_add() -> None:
    q: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_rate_limited_backoff_doubles_and_forget_resets() -> None:
    q: WorkQueue[str] = WorkQueue(backoff_base_s=0.01, backoff_max_s=0.04)
    delays = [q.add_rate_limited("k") for _ in range(4)]
    assert delays == [0.01, 0.02, 0.04, 0.04]
    assert q.failures("k") == 4
    q.forget("k")
    assert q.failures("k") == 0
    assert await asyncio.wait_for(q.get(), 1) == "k"


async def test_add_after_keeps_the_earliest_wakeup() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("k", 10)
    q.add_after("k", 0.01)
    assert await asyncio.wait_for(q.get(), 1) == "k"


async def test_shutdown_releases_waiters() -> None:
    q: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(getter, 1)


async def test_a_cancelled_waiter_does_not_swallow_a_wakeup() -> None:
    q: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("x")
    first.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert "x" in results
