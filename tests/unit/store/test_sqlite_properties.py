"""Property: any sequence of writes gives strictly increasing resourceVersions, and a watch replays
exactly the committed sequence (replaying it rebuilds what list shows, before and after reopen)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.api import errors
from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA, KindInfo
from aviator.settings import StoreSettings
from aviator.store import SqliteStore, WatchEvent

from .helpers import md, owner_ref, replica, rv, take

NAMES = ("a", "b", "c")
KINDS = {"md": MODEL_DEPLOYMENT, "rep": REPLICA}
STORE = StoreSettings(watch_history=1_000, watcher_queue=1_000)

Op = tuple[str, str, str, int]

ops = st.lists(
    st.tuples(
        st.sampled_from(["create", "spec", "label", "status", "delete", "unfinalize", "stale"]),
        st.sampled_from(sorted(KINDS)),
        st.sampled_from(NAMES),
        st.integers(0, 2),
    ),
    max_size=30,
)


async def apply(store: SqliteStore, op: Op) -> dict[str, Any] | None:
    """Run one operation; the returned object, or None when the store refused it."""
    verb, kind_key, name, value = op
    kind = KINDS[kind_key]
    try:
        if verb == "create":
            extra: dict[str, Any] = {"finalizers": ["t/f"]} if value == 1 else {}
            if kind is REPLICA:
                try:
                    owner = await store.get(MODEL_DEPLOYMENT, "default", name)
                    extra["ownerReferences"] = [owner_ref(owner)]
                except errors.NotFound:
                    pass
                return await store.create(kind, replica(name, **extra))
            return await store.create(kind, md(name, **extra))
        current = await store.get(kind, "default", name)
        if verb == "spec":
            current["spec"]["node"] = f"n{value}"
            return await store.replace(kind, current)
        if verb == "label":
            current["metadata"]["labels"] = {"v": str(value)}
            return await store.replace(kind, current)
        if verb == "status":
            return await store.replace_status(kind, {**current, "status": {"v": value}})
        if verb == "delete":
            return await store.delete(kind, "default", name)
        if verb == "unfinalize":
            current["metadata"]["finalizers"] = []
            return await store.replace(kind, current)
        current["metadata"]["resourceVersion"] = "1"  # stale
        current["spec"]["node"] = "stale"
        return await store.replace(kind, current)
    except (errors.NotFound, errors.AlreadyExists, errors.Conflict):
        return None


def rebuild(events: list[WatchEvent], start: dict[str, dict[str, Any]]) -> dict[str, Any]:
    state = dict(start)
    for event in events:
        obj = event["object"]
        key = obj["metadata"]["name"]
        if event["type"] == "DELETED":
            del state[key]
        else:
            state[key] = obj
    return state


async def scenario(path: Path, operations: list[Op]) -> None:
    async with await SqliteStore.open(path, settings=STORE) as store:
        seed = await store.create(MODEL_DEPLOYMENT, md("seed"))
        live = {k: store.watch(kind, resource_version="1") for k, kind in KINDS.items()}
        last = 1
        results: dict[int, dict[str, Any]] = {}
        for op in operations:
            before = int(store.resource_version)
            result = await apply(store, op)
            after = int(store.resource_version)
            if result is None:
                assert after == before, f"{op} was refused yet moved the resourceVersion"
                continue
            if rv(result) > last:
                results[rv(result)] = result
            assert rv(result) <= after
            assert after >= last
            last = after
        final = int(store.resource_version)
        listed = {}
        for key, kind in KINDS.items():
            items, version = await store.list(kind)
            assert version == str(final)
            listed[key] = items

        replayed: dict[str, list[WatchEvent]] = {}
        for key, kind in KINDS.items():
            mine = await _drain(store, kind, final)
            replayed[key] = mine
            versions = [rv(e["object"]) for e in mine]
            assert versions == sorted(set(versions)), "not strictly increasing"
            assert await take(live[key], len(mine)) == mine, "live and replayed watches differ"
            start = {"seed": seed} if kind is MODEL_DEPLOYMENT else {}
            assert rebuild(mine, start) == {i["metadata"]["name"]: i for i in listed[key]}
        everything = sorted(rv(e["object"]) for events in replayed.values() for e in events)
        assert everything == list(range(2, final + 1)), "a resourceVersion without its event"
        by_rv = {rv(e["object"]): e["object"] for events in replayed.values() for e in events}
        for acked, result in results.items():
            assert by_rv[acked] == result, "an acknowledged write differs from its event"
        closing = store.resource_version

    async with await SqliteStore.open(path, settings=STORE) as reopened:
        assert reopened.resource_version == closing
        for key, kind in KINDS.items():
            assert (await reopened.list(kind))[0] == listed[key]


async def _drain(store: SqliteStore, kind: KindInfo, final: int) -> list[WatchEvent]:
    """Every retained event of ``kind`` after the seed, read up to the marker write below."""
    marker = await store.create(kind, {"metadata": {"name": "zz-marker", "namespace": "m"}})
    events = store.watch(kind, resource_version="1")
    out: list[WatchEvent] = []
    async with asyncio.timeout(5):
        async for event in events:
            if event["object"]["metadata"]["uid"] == marker["metadata"]["uid"]:
                break
            out.append(event)
    await store.delete(kind, "m", "zz-marker")
    return [e for e in out if rv(e["object"]) <= final]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=ops)
def test_writes_and_watch_replay_agree(operations: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp) / "store.db", operations))
