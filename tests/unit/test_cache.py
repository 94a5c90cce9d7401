import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aviator.api import errors, kinds
from aviator.cache import Reflector
from aviator.store.protocol import EventType, WatchEvent


def obj(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name, "resourceVersion": str(rv)}}


class FakeSource:
    """Lists return ``state``; each watch replays one scripted stream then fails as told."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.streams: list[tuple[list[WatchEvent], BaseException | None]] = []
        self.watch_from: list[str | None] = []
        self.lists = 0
        self.later: list[tuple[dict[str, dict[str, Any]], int]] = []
        """States (objects, rv) that successive relists see, after the first list."""

    async def list(
        self, kind: Any, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        if self.lists > 1 and self.later:
            self.state, self.rv = self.later.pop(0)
        return list(self.state.values()), str(self.rv)

    async def watch(
        self, kind: Any, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncIterator[WatchEvent]:
        self.watch_from.append(resource_version)
        if not self.streams:
            await asyncio.Event().wait()
        events, failure = self.streams.pop(0)
        for event in events:
            yield event
        if failure is not None:
            raise failure


async def test_list_then_watch_then_relist_on_gone_emits_the_missed_changes() -> None:
    source = FakeSource()
    source.state = {"a": obj("a", 1), "b": obj("b", 2)}
    source.rv = 2
    source.streams = [([{"type": "MODIFIED", "object": obj("a", 3)}], errors.Gone("too old"))]
    seen: list[tuple[EventType, str, str]] = []
    relisted = asyncio.Event()

    def on_event(type_: EventType, o: dict[str, Any]) -> None:
        seen.append((type_, o["metadata"]["name"], o["metadata"]["resourceVersion"]))
        if len(seen) == 5:
            relisted.set()

    reflector = Reflector(
        source=source, kind=kinds.REPLICA, on_event=on_event, backoff_base_s=0.001
    )
    # What the relist after Gone will see: b deleted, c added, a unchanged since rv 3.
    source.later = [({"a": obj("a", 3), "c": obj("c", 5)}, 5)]
    task = asyncio.create_task(reflector.run())
    await asyncio.wait_for(relisted.wait(), 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == [
        ("ADDED", "a", "1"),
        ("ADDED", "b", "2"),
        ("MODIFIED", "a", "3"),
        ("DELETED", "b", "2"),
        ("ADDED", "c", "5"),
    ]
    assert set(reflector.cache) == {("default", "a"), ("default", "c")}
    assert source.watch_from[:2] == ["2", "5"]


async def test_a_cleanly_ended_watch_resumes_from_the_last_version_without_relisting() -> None:
    source = FakeSource()
    source.state = {"a": obj("a", 1)}
    source.rv = 1
    source.streams = [
        (
            [
                {"type": "ADDED", "object": obj("b", 4)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
            ],
            None,
        )
    ]
    reflector = Reflector(source=source, kind=kinds.REPLICA, on_event=lambda t, o: None)
    task = asyncio.create_task(reflector.run())
    for _ in range(100):
        if len(source.watch_from) >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert source.watch_from[:2] == ["1", "7"]
    assert source.lists == 1


async def test_errors_back_off_and_relist() -> None:
    source = FakeSource()
    source.streams = [([], ConnectionError("dropped"))]
    reflector = Reflector(
        source=source, kind=kinds.REPLICA, on_event=lambda t, o: None, backoff_base_s=0.001
    )
    task = asyncio.create_task(reflector.run())
    for _ in range(100):
        if source.lists >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert source.lists >= 2


async def test_a_failing_handler_does_not_stop_the_reflector() -> None:
    source = FakeSource()
    source.state = {"a": obj("a", 1), "b": obj("b", 2)}

    def boom(type_: EventType, o: dict[str, Any]) -> None:
        raise ValueError("handler bug")

    reflector = Reflector(source=source, kind=kinds.REPLICA, on_event=boom)
    task = asyncio.create_task(reflector.run())
    await asyncio.wait_for(reflector.synced.wait(), 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(reflector.cache) == 2


async def test_indices_follow_adds_changes_deletes_and_relists() -> None:
    from aviator.cache import BY_OWNER, owner_uids

    def owned(name: str, rv: int, owner: str) -> dict[str, Any]:
        o = obj(name, rv)
        o["metadata"]["ownerReferences"] = [{"uid": owner, "controller": True}]
        return o

    source = FakeSource()
    source.state = {"a": owned("a", 1, "u1"), "b": owned("b", 2, "u1")}
    source.rv = 2
    source.streams = [
        (
            [
                {"type": "MODIFIED", "object": owned("a", 3, "u2")},
                {"type": "DELETED", "object": owned("b", 4, "u1")},
            ],
            errors.Gone("relist"),
        )
    ]
    source.later = [({"a": owned("a", 3, "u2"), "c": owned("c", 6, "u1")}, 6)]
    done = asyncio.Event()

    def on_event(type_: EventType, o: dict[str, Any]) -> None:
        if o["metadata"]["name"] == "c":
            done.set()

    reflector = Reflector(
        source=source, kind=kinds.REPLICA, on_event=on_event, indexers={BY_OWNER: owner_uids}
    )
    task = asyncio.create_task(reflector.run())
    await asyncio.wait_for(reflector.synced.wait(), 1)
    await asyncio.wait_for(done.wait(), 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    names = {o["metadata"]["name"] for o in reflector.by_index(BY_OWNER, "u1")}
    assert names == {"c"}
    assert [o["metadata"]["name"] for o in reflector.by_index(BY_OWNER, "u2")] == ["a"]
    assert reflector.by_index(BY_OWNER, "nobody") == []
