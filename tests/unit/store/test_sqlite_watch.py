"""SqliteStore.watch: listing start, resuming from a resourceVersion, Gone, filters, cleanup."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from aviator.api import errors
from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA
from aviator.api.labels import parse
from aviator.settings import StoreSettings
from aviator.store import SqliteStore

from .helpers import brief, md, nothing_more, replica, rv, take


async def test_without_resource_version_lists_then_follows(store: SqliteStore) -> None:
    await store.create(MODEL_DEPLOYMENT, md("b"))
    await store.create(MODEL_DEPLOYMENT, md("a"))
    await store.create(REPLICA, replica("not-this-kind"))
    for start in (None, "0"):
        current, _ = await store.list(MODEL_DEPLOYMENT)
        events = store.watch(MODEL_DEPLOYMENT, resource_version=start)
        initial = await take(events, 2)
        assert initial == [{"type": "ADDED", "object": obj} for obj in current]
        assert [e["object"]["metadata"]["name"] for e in initial] == ["a", "b"]
        obj = initial[0]["object"]
        obj["metadata"]["labels"] = {"start": str(start)}
        modified = await store.replace(MODEL_DEPLOYMENT, obj)
        assert await take(events, 1) == [{"type": "MODIFIED", "object": modified}]
        await events.aclose()


async def test_listing_start_neither_misses_nor_repeats_concurrent_writes(
    store: SqliteStore,
) -> None:
    def create(i: int) -> asyncio.Task[dict[str, object]]:
        return asyncio.create_task(store.create(MODEL_DEPLOYMENT, md(f"m{i:03}")))

    # Writes already queued on the store thread when the watch lists: they commit before the
    # listing (so it shows them) but are published to the watcher after it subscribed.
    before = [create(i) for i in range(30)]
    await asyncio.sleep(0)
    events = store.watch(MODEL_DEPLOYMENT)
    first = await anext(events)
    after = [create(i) for i in range(30, 60)]  # and writes after the listing
    received = [first, *await take(events, 59)]
    await asyncio.gather(*before, *after)
    assert sorted(e["object"]["metadata"]["name"] for e in received) == [
        f"m{i:03}" for i in range(60)
    ]
    assert {e["type"] for e in received} == {"ADDED"}
    await store.create(MODEL_DEPLOYMENT, md("marker"))
    assert [brief(e) for e in await take(events, 1)] == [("ADDED", "marker", 61)]


async def test_resuming_replays_exactly_the_later_events(store: SqliteStore) -> None:
    committed = []
    obj = await store.create(MODEL_DEPLOYMENT, md("chat", finalizers=["x/y"]))
    committed.append(("ADDED", copy.deepcopy(obj)))
    start = store.resource_version
    obj["spec"]["engine"] = "vllm"
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    committed.append(("MODIFIED", copy.deepcopy(obj)))
    await store.create(REPLICA, replica("r"))  # another kind: not in this watch
    obj = await store.replace_status(MODEL_DEPLOYMENT, {**obj, "status": {"readyReplicas": 1}})
    committed.append(("MODIFIED", copy.deepcopy(obj)))
    obj = await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    committed.append(("MODIFIED", copy.deepcopy(obj)))
    obj["metadata"]["finalizers"] = []
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    committed.append(("DELETED", copy.deepcopy(obj)))

    events = store.watch(MODEL_DEPLOYMENT, resource_version=start)
    replayed = await take(events, 4)
    assert replayed == [{"type": t, "object": o} for t, o in committed[1:]]
    assert [rv(e["object"]) for e in replayed] == [2, 4, 5, 6]
    # and then live, with no gap and no repeat
    live = await store.create(MODEL_DEPLOYMENT, md("next"))
    assert await take(events, 1) == [{"type": "ADDED", "object": live}]


async def test_too_old_resource_version_is_gone(db_path: Path) -> None:
    settings = StoreSettings(watch_history=3, watcher_queue=10)
    async with await SqliteStore.open(db_path, settings=settings) as store:
        for i in range(6):
            await store.create(MODEL_DEPLOYMENT, md(f"m{i}"))
        with pytest.raises(errors.Gone, match="too old resource version: 2") as caught:
            await anext(store.watch(MODEL_DEPLOYMENT, resource_version="2"))
        assert caught.value.code == 410
        events = store.watch(MODEL_DEPLOYMENT, resource_version="3")  # 4, 5, 6 are kept
        assert [brief(e)[2] for e in await take(events, 3)] == [4, 5, 6]
        assert store.watcher_count() == 1
        await events.aclose()
        assert store.watcher_count() == 0
    # History does not survive a restart: only "from now" can be resumed.
    async with await SqliteStore.open(db_path, settings=settings) as store:
        with pytest.raises(errors.Gone):
            await anext(store.watch(MODEL_DEPLOYMENT, resource_version="5"))
        events = store.watch(MODEL_DEPLOYMENT, resource_version="6")
        created = await store.create(MODEL_DEPLOYMENT, md("after"))
        assert await take(events, 1) == [{"type": "ADDED", "object": created}]
        assert store.watcher_count() == 1
    assert store.watcher_count() == 0


async def test_future_resource_version_waits_and_skips_up_to_it(store: SqliteStore) -> None:
    events = store.watch(MODEL_DEPLOYMENT, resource_version="2")
    reader = asyncio.create_task(anext(events))
    await store.create(MODEL_DEPLOYMENT, md("one"))
    await store.create(MODEL_DEPLOYMENT, md("two"))
    three = await store.create(MODEL_DEPLOYMENT, md("three"))
    async with asyncio.timeout(5):
        assert await reader == {"type": "ADDED", "object": three}


async def test_malformed_resource_version_is_a_bad_request(store: SqliteStore) -> None:
    for bad in ("-1", "abc", "1.5"):
        with pytest.raises(errors.BadRequest, match="invalid resourceVersion"):
            store.watch(MODEL_DEPLOYMENT, resource_version=bad)


async def test_a_watcher_that_falls_behind_is_gone_and_others_are_not(db_path: Path) -> None:
    settings = StoreSettings(watch_history=100, watcher_queue=5)
    async with await SqliteStore.open(db_path, settings=settings) as store:
        await store.create(MODEL_DEPLOYMENT, md("first"))
        slow = store.watch(MODEL_DEPLOYMENT)
        fast = store.watch(MODEL_DEPLOYMENT)
        await take(slow, 1)
        await take(fast, 1)
        for i in range(10):
            await store.create(MODEL_DEPLOYMENT, md(f"m{i}"))
            assert brief((await take(fast, 1))[0])[1] == f"m{i}"
        assert store.watcher_count() == 1  # the slow one was dropped at once
        with pytest.raises(errors.Gone, match="fell more than 5 events behind"):
            await anext(slow)
        with pytest.raises(StopAsyncIteration):
            await anext(slow)


async def test_a_watcher_with_a_full_queue_catching_up_in_time_is_kept(db_path: Path) -> None:
    settings = StoreSettings(watch_history=100, watcher_queue=5)
    async with await SqliteStore.open(db_path, settings=settings) as store:
        events = store.watch(MODEL_DEPLOYMENT, resource_version="0")
        pending = asyncio.create_task(anext(events))
        await asyncio.sleep(0)  # let it subscribe
        for round_ in range(3):
            for i in range(5):
                await store.create(MODEL_DEPLOYMENT, md(f"r{round_}-{i}"))
            if round_ == 0:
                got = [await pending]
                got += await take(events, 4)
            else:
                got = await take(events, 5)
            assert len(got) == 5


async def test_selector_watch_sees_objects_enter_and_leave(store: SqliteStore) -> None:
    events = store.watch(MODEL_DEPLOYMENT, resource_version="0", selector=parse("tier=web"))
    other = await store.create(MODEL_DEPLOYMENT, md("db", labels={"tier": "db"}))
    web = await store.create(MODEL_DEPLOYMENT, md("web", labels={"tier": "web"}))
    assert [brief(e) for e in await take(events, 1)] == [("ADDED", "web", 2)]
    other["metadata"]["labels"] = {"tier": "web"}
    await store.replace(MODEL_DEPLOYMENT, other)
    web["metadata"]["labels"] = {"tier": "db"}
    left = await store.replace(MODEL_DEPLOYMENT, web)
    left["metadata"]["annotations"] = {"still": "not selected"}
    await store.replace(MODEL_DEPLOYMENT, left)
    other = await store.get(MODEL_DEPLOYMENT, "default", "db")
    other["metadata"]["annotations"] = {"still": "selected"}
    await store.replace(MODEL_DEPLOYMENT, other)
    await store.delete(MODEL_DEPLOYMENT, "default", "db")
    await store.delete(MODEL_DEPLOYMENT, "default", "web")
    assert [brief(e) for e in await take(events, 4)] == [
        ("ADDED", "db", 3),  # starts matching
        ("DELETED", "web", 4),  # stops matching: DELETED, carrying the new state
        ("MODIFIED", "db", 6),
        ("DELETED", "db", 7),
    ]
    await nothing_more(events)


async def test_namespace_watch(store: SqliteStore) -> None:
    events = store.watch(MODEL_DEPLOYMENT, namespace="a")
    await store.create(MODEL_DEPLOYMENT, md("x", namespace="b"))
    await store.create(MODEL_DEPLOYMENT, md("y", namespace="a"))
    assert [brief(e) for e in await take(events, 1)] == [("ADDED", "y", 2)]
    replay = store.watch(MODEL_DEPLOYMENT, namespace="b", resource_version="0")
    assert [brief(e) for e in await take(replay, 1)] == [("ADDED", "x", 1)]


async def test_a_watcher_mutating_its_event_does_not_touch_others(store: SqliteStore) -> None:
    first = store.watch(MODEL_DEPLOYMENT, resource_version="0")
    second = store.watch(MODEL_DEPLOYMENT, resource_version="0")
    reads = [asyncio.create_task(anext(first)), asyncio.create_task(anext(second))]
    await asyncio.sleep(0)
    created = await store.create(MODEL_DEPLOYMENT, md("chat"))
    one, two = await asyncio.gather(*reads)
    one["object"]["spec"]["engine"] = "mutated"
    one["object"]["metadata"]["name"] = "mutated"
    assert two == {"type": "ADDED", "object": created}
    assert await store.get(MODEL_DEPLOYMENT, "default", "chat") == created
    late = store.watch(MODEL_DEPLOYMENT, resource_version="0")
    assert await take(late, 1) == [{"type": "ADDED", "object": created}]


async def test_break_aclose_and_cancel_unsubscribe(store: SqliteStore) -> None:
    await store.create(MODEL_DEPLOYMENT, md("chat"))
    async for _event in store.watch(MODEL_DEPLOYMENT):
        assert store.watcher_count() == 1
        break
    assert store.watcher_count() == 0  # at once: the hub holds watchers weakly

    events = store.watch(MODEL_DEPLOYMENT)
    await take(events, 1)
    assert store.watcher_count() == 1
    await events.aclose()
    assert store.watcher_count() == 0
    with pytest.raises(StopAsyncIteration):
        await anext(events)

    async def consume() -> None:
        async for _event in store.watch(MODEL_DEPLOYMENT, resource_version=store.resource_version):
            pass

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        while store.watcher_count() == 0:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.watcher_count() == 0


async def test_aclose_from_another_task_stops_a_waiting_reader(store: SqliteStore) -> None:
    events = store.watch(MODEL_DEPLOYMENT, resource_version=store.resource_version)
    reader = asyncio.create_task(anext(events))
    async with asyncio.timeout(5):
        while store.watcher_count() == 0:
            await asyncio.sleep(0)
        await events.aclose()
        with pytest.raises(StopAsyncIteration):
            await reader


async def test_an_unstarted_watch_holds_nothing(store: SqliteStore) -> None:
    store.watch(MODEL_DEPLOYMENT)
    store.watch(MODEL_DEPLOYMENT, resource_version="0")
    assert store.watcher_count() == 0


async def test_closing_the_store_ends_watches(db_path: Path, settings: StoreSettings) -> None:
    store = await SqliteStore.open(db_path, settings=settings)
    events = store.watch(MODEL_DEPLOYMENT, resource_version="0")
    reader = asyncio.create_task(anext(events))
    await asyncio.sleep(0)
    await store.close()
    async with asyncio.timeout(5):
        with pytest.raises(StopAsyncIteration):
            await reader
    with pytest.raises(StopAsyncIteration):
        await anext(store.watch(MODEL_DEPLOYMENT, resource_version="0"))
