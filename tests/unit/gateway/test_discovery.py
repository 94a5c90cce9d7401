"""Discovery (the real ``aviator.cache.Reflector`` inside) over an in-memory list/watch source."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aviator.api import errors
from aviator.api.kinds import REPLICA, KindInfo
from aviator.api.watch import WatchEvent
from aviator.gateway.discovery import Discovery, Feed
from aviator.gateway.endpoints import EndpointTable

from .conftest import replica, until


class MemorySource:
    """Replicas in memory: ``list`` returns them, ``watch`` streams later changes to watchers."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.lists = 0
        self.failing_lists = 0
        """That many next lists fail, as when the Control API is down."""
        self.watchers: list[asyncio.Queue[WatchEvent | BaseException]] = []

    def put(self, obj: dict[str, Any], *, notify: bool = True) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        name = obj["metadata"]["name"]
        event: WatchEvent = {"type": "MODIFIED" if name in self.objects else "ADDED", "object": obj}
        self.objects[name] = obj
        if notify:
            for queue in self.watchers:
                queue.put_nowait(event)

    def remove(self, name: str, *, notify: bool = True) -> None:
        self.rv += 1
        obj = self.objects.pop(name)
        if notify:
            for queue in self.watchers:
                queue.put_nowait({"type": "DELETED", "object": obj})

    def fail_watches(self, exc: BaseException) -> None:
        for queue in self.watchers:
            queue.put_nowait(exc)

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        if kind is not REPLICA:  # only Replicas live here
            return [], str(self.rv)
        self.lists += 1
        if self.failing_lists > 0:
            self.failing_lists -= 1
            raise ConnectionError("control API down")
        return list(self.objects.values()), str(self.rv)

    async def watch(
        self, kind: KindInfo, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncIterator[WatchEvent]:
        if kind is not REPLICA:
            await asyncio.Event().wait()
        queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        self.watchers.append(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if queue in self.watchers:
                self.watchers.remove(queue)


def keys(table: EndpointTable, model: str = "m") -> list[str]:
    return [e.key for e in table.lookup(model) or ()]


@pytest.fixture
async def running() -> AsyncIterator[tuple[MemorySource, EndpointTable, Discovery]]:
    source = MemorySource()
    source.put(replica("a", url="http://h:1"))
    source.put(replica("b", url="http://h:2", ready=False))
    table = EndpointTable()
    discovery = Discovery(source=source, table=table, backoff_base_s=0.01, backoff_max_s=0.05)
    _: Feed = discovery
    task = asyncio.create_task(discovery.run())
    await asyncio.wait_for(discovery.synced.wait(), 5)
    await until(lambda: len(source.watchers) == 1)
    try:
        yield source, table, discovery
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_first_list_fills_the_table(
    running: tuple[MemorySource, EndpointTable, Discovery],
) -> None:
    _, table, _ = running
    assert keys(table) == ["default/a"]
    assert table.models() == ["m"]


async def test_ready_going_false_leaves_the_table_within_a_second(
    running: tuple[MemorySource, EndpointTable, Discovery],
) -> None:
    source, table, _ = running
    source.put(replica("b", url="http://h:2"))
    await until(lambda: keys(table) == ["default/a", "default/b"], timeout=1.0)
    source.put(replica("a", url="http://h:1", ready=False))
    await until(lambda: keys(table) == ["default/b"], timeout=1.0)
    source.remove("b")
    await until(lambda: keys(table) == [], timeout=1.0)


async def test_a_dropped_watch_keeps_the_last_table_and_relisting_catches_up(
    running: tuple[MemorySource, EndpointTable, Discovery], caplog: pytest.LogCaptureFixture
) -> None:
    source, table, _ = running
    caplog.set_level(logging.INFO)
    lists = source.lists
    source.failing_lists = 3
    source.fail_watches(ConnectionError("connection reset"))
    # Changes made while the watch is down are only seen through the next good list.
    source.remove("a", notify=False)
    source.put(replica("c", url="http://h:3"), notify=False)
    await until(lambda: source.lists >= lists + 2)
    assert keys(table) == ["default/a"]  # still serving what it knew
    await until(lambda: keys(table) == ["default/c"])
    assert "list/watch of replicas failed" in caplog.text
    assert "replica default/a (model m) is no longer routable" in caplog.text
    assert "replica default/c (model m) is routable at http://h:3" in caplog.text


async def test_gone_means_relist(running: tuple[MemorySource, EndpointTable, Discovery]) -> None:
    source, table, _ = running
    lists = source.lists
    source.put(replica("d", url="http://h:4"), notify=False)
    source.fail_watches(errors.Gone("too old"))
    await until(lambda: source.lists > lists)
    await until(lambda: keys(table) == ["default/a", "default/d"])
