"""WatchHub history and WatchStream conversion, without a database."""

from __future__ import annotations

import pytest

from aviator.api import errors
from aviator.api.labels import parse
from aviator.api.watch import EventType
from aviator.store.watch import Change, WatchHub, WatchStream, parse_resource_version

from .helpers import take


def change(
    revision: int,
    *,
    kind: str = "K",
    type_: EventType = "ADDED",
    labels: dict[str, str] | None = None,
    previous: dict[str, str] | None = None,
    namespace: str | None = "ns",
) -> Change:
    return Change(
        revision=revision,
        type=type_,
        kind=kind,
        namespace=namespace,
        labels=labels or {},
        previous_labels=previous,
        body=b'{"metadata": {"name": "o%d", "resourceVersion": "%d"}}' % (revision, revision),
    )


async def no_snapshot() -> tuple[list[dict[str, object]], int]:
    raise AssertionError("not used")


def stream(hub: WatchHub, *, start: int, selector: str = "", limit: int = 10) -> WatchStream:
    return WatchStream(
        hub,
        kind="K",
        namespace=None,
        selector=parse(selector),
        resource_version=start,
        snapshot=no_snapshot,
        limit=limit,
    )


def test_parse_resource_version() -> None:
    assert parse_resource_version(None) is None
    assert parse_resource_version("") is None
    assert parse_resource_version("0") is None
    assert parse_resource_version("17") == 17
    with pytest.raises(errors.BadRequest):
        parse_resource_version("x1")


def test_history_keeps_the_last_changes_and_moves_the_floor() -> None:
    hub = WatchHub(revision=10, history=3)
    assert (hub.revision, hub.floor) == (10, 10)
    assert hub.since("K", 10) == []
    hub.publish([change(11), change(12, kind="Other")])
    hub.publish([change(13)])
    assert [c.revision for c in hub.since("K", 10)] == [11, 13]
    assert hub.floor == 10
    hub.publish([change(14)])
    assert (hub.revision, hub.floor) == (14, 11)
    assert [c.revision for c in hub.since("K", 11)] == [13, 14]
    with pytest.raises(errors.Gone, match="too old resource version: 10"):
        hub.since("K", 10)
    assert hub.since("K", 99) == []


def test_no_history_means_only_now_can_be_resumed() -> None:
    hub = WatchHub(revision=0, history=0)
    hub.publish([change(1), change(2)])
    assert hub.floor == 2
    assert hub.since("K", 2) == []
    with pytest.raises(errors.Gone):
        hub.since("K", 1)


async def test_selector_conversion_of_modified_changes() -> None:
    hub = WatchHub(revision=0, history=10)
    watcher = stream(hub, start=0, selector="app=x")
    hub.publish([change(1, labels={"app": "y"})])  # before the watch starts: replayed
    hub.publish(
        [
            change(2, type_="MODIFIED", labels={"app": "x"}, previous={"app": "y"}),
            change(3, type_="MODIFIED", labels={"app": "x"}, previous={"app": "x"}),
            change(4, type_="MODIFIED", labels={"app": "y"}, previous={"app": "x"}),
            change(5, type_="MODIFIED", labels={"app": "y"}, previous={"app": "y"}),
            change(6, type_="DELETED", labels={"app": "y"}),
            change(7, type_="DELETED", labels={"app": "x"}),
        ]
    )
    got = [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in await take(watcher, 4)]
    assert got == [("ADDED", "2"), ("MODIFIED", "3"), ("DELETED", "4"), ("DELETED", "7")]


async def test_overflow_ends_the_stream_with_gone() -> None:
    hub = WatchHub(revision=0, history=10)
    watcher = stream(hub, start=0, limit=2)
    hub.publish([change(1)])
    assert len(await take(watcher, 1)) == 1
    hub.publish([change(2), change(3)])
    assert hub.watcher_count() == 1
    hub.publish([change(4)])
    assert hub.watcher_count() == 0
    with pytest.raises(errors.Gone):
        await anext(watcher)


async def test_closing_the_hub_delivers_what_is_queued_then_stops() -> None:
    hub = WatchHub(revision=0, history=10)
    watcher = stream(hub, start=0)
    hub.publish([change(1)])
    await take(watcher, 1)
    hub.publish([change(2)])
    hub.close()
    assert hub.watcher_count() == 0
    assert (await anext(watcher))["object"]["metadata"]["resourceVersion"] == "2"
    with pytest.raises(StopAsyncIteration):
        await anext(watcher)
