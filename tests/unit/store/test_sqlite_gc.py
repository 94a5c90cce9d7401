"""SqliteStore deletion: finalizers, cascades through ownerReferences, orphans."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from aviator.api import errors
from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA
from aviator.store import SqliteStore
from aviator.store.database import Database

from .helpers import brief, md, owner_ref, replica, rv, take


async def test_finalizers_hold_deletion_until_they_are_removed(store: SqliteStore) -> None:
    obj = await store.create(REPLICA, replica("r", finalizers=["aviator.dev/runtime", "b/c"]))
    events = store.watch(REPLICA, resource_version=store.resource_version)
    marked = await store.delete(REPLICA, "default", "r")
    stamp = marked["metadata"]["deletionTimestamp"]
    assert stamp >= obj["metadata"]["creationTimestamp"]
    assert rv(marked) == 2
    # Deleting again changes nothing: the timestamp is set once.
    assert await store.delete(REPLICA, "default", "r") == marked
    assert store.resource_version == "2"
    # A terminating object may lose finalizers but not gain new ones.
    with pytest.raises(errors.Invalid) as caught:
        await store.replace(
            REPLICA, {**marked, "metadata": {**marked["metadata"], "finalizers": ["new/one"]}}
        )
    assert caught.value.causes[0].field == "metadata.finalizers"
    one_left = await store.replace(
        REPLICA, {**marked, "metadata": {**marked["metadata"], "finalizers": ["b/c"]}}
    )
    assert one_left["metadata"]["deletionTimestamp"] == stamp
    await store.replace_status(REPLICA, {**one_left, "status": {"phase": "Terminating"}})
    current = await store.get(REPLICA, "default", "r")
    final = await store.replace(
        REPLICA, {**current, "metadata": {**current["metadata"], "finalizers": []}}
    )
    assert rv(final) == 5
    assert final["metadata"]["finalizers"] == []
    assert final["status"] == {"phase": "Terminating"}
    with pytest.raises(errors.NotFound):
        await store.get(REPLICA, "default", "r")
    assert [brief(e) for e in await take(events, 4)] == [
        ("MODIFIED", "r", 2),
        ("MODIFIED", "r", 3),
        ("MODIFIED", "r", 4),
        ("DELETED", "r", 5),
    ]


async def test_cascade_removes_two_levels_across_kinds(store: SqliteStore) -> None:
    deployment = await store.create(MODEL_DEPLOYMENT, md("chat"))
    first = await store.create(REPLICA, replica("chat-0", owner=deployment))
    await store.create(REPLICA, replica("chat-1", owner=deployment))
    await store.create(REPLICA, replica("grandchild", owner=first))
    await store.create(REPLICA, replica("unrelated"))
    replicas = store.watch(REPLICA, resource_version=store.resource_version)
    deployments = store.watch(MODEL_DEPLOYMENT, resource_version=store.resource_version)

    gone = await store.delete(MODEL_DEPLOYMENT, "default", "chat")

    assert rv(gone) == 6
    assert [brief(e) for e in await take(deployments, 1)] == [("DELETED", "chat", 6)]
    assert [brief(e) for e in await take(replicas, 3)] == [
        ("DELETED", "chat-0", 7),
        ("DELETED", "chat-1", 8),
        ("DELETED", "grandchild", 9),
    ]
    items, version = await store.list(REPLICA)
    assert [i["metadata"]["name"] for i in items] == ["unrelated"]
    assert version == "9"


async def test_cascade_respects_finalizers_of_dependents(store: SqliteStore) -> None:
    deployment = await store.create(MODEL_DEPLOYMENT, md("chat"))
    child = await store.create(
        REPLICA, replica("child", owner=deployment, finalizers=["aviator.dev/runtime"])
    )
    await store.create(REPLICA, replica("grandchild", owner=child))
    events = store.watch(REPLICA, resource_version=store.resource_version)

    await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    [marked] = await take(events, 1)
    assert brief(marked) == ("MODIFIED", "child", 5)
    assert marked["object"]["metadata"]["deletionTimestamp"]
    # The grandchild stays while its owner is only terminating...
    assert (await store.get(REPLICA, "default", "grandchild"))["metadata"]["name"] == "grandchild"
    # ...and goes in the same transaction as its owner's final removal.
    current = marked["object"]
    current["metadata"]["finalizers"] = []
    await store.replace(REPLICA, current)
    assert [brief(e) for e in await take(events, 2)] == [
        ("DELETED", "child", 6),
        ("DELETED", "grandchild", 7),
    ]


async def test_a_terminating_owner_keeps_its_dependents(store: SqliteStore) -> None:
    deployment = await store.create(MODEL_DEPLOYMENT, md("chat", finalizers=["x/y"]))
    await store.create(REPLICA, replica("chat-0", owner=deployment))
    marked = await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    assert len((await store.list(REPLICA))[0]) == 1
    marked["metadata"]["finalizers"] = []
    await store.replace(MODEL_DEPLOYMENT, marked)
    assert (await store.list(REPLICA))[0] == []


async def test_a_dependent_with_another_live_owner_stays(store: SqliteStore) -> None:
    a = await store.create(MODEL_DEPLOYMENT, md("a"))
    b = await store.create(MODEL_DEPLOYMENT, md("b"))
    await store.create(REPLICA, replica("shared", ownerReferences=[owner_ref(a), owner_ref(b)]))
    await store.delete(MODEL_DEPLOYMENT, "default", "a")
    assert (await store.get(REPLICA, "default", "shared"))["metadata"]["name"] == "shared"
    await store.delete(MODEL_DEPLOYMENT, "default", "b")
    with pytest.raises(errors.NotFound):
        await store.get(REPLICA, "default", "shared")


async def test_an_orphan_is_collected_right_after_create(store: SqliteStore) -> None:
    gone_owner = await store.create(MODEL_DEPLOYMENT, md("chat"))
    await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    events = store.watch(REPLICA, resource_version=store.resource_version)

    created = await store.create(REPLICA, replica("orphan", owner=gone_owner))
    assert rv(created) == 3  # the create itself succeeded...
    assert [brief(e) for e in await take(events, 2)] == [
        ("ADDED", "orphan", 3),
        ("DELETED", "orphan", 4),  # ...and the collector removed it in the same transaction
    ]
    with pytest.raises(errors.NotFound):
        await store.get(REPLICA, "default", "orphan")

    held = await store.create(REPLICA, replica("held", owner=gone_owner, finalizers=["x/y"]))
    assert rv(held) == 5
    terminating = await store.get(REPLICA, "default", "held")
    assert terminating["metadata"]["deletionTimestamp"]
    assert rv(terminating) == 6


async def test_pointing_an_object_at_a_vanished_owner_collects_it(store: SqliteStore) -> None:
    owner = await store.create(MODEL_DEPLOYMENT, md("chat"))
    await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    obj = await store.create(REPLICA, replica("r"))
    obj["metadata"]["ownerReferences"] = [owner_ref(owner)]
    await store.replace(REPLICA, obj)
    with pytest.raises(errors.NotFound):
        await store.get(REPLICA, "default", "r")


async def test_changing_owner_references_moves_the_cascade(store: SqliteStore) -> None:
    a = await store.create(MODEL_DEPLOYMENT, md("a"))
    b = await store.create(MODEL_DEPLOYMENT, md("b"))
    obj = await store.create(REPLICA, replica("r", owner=a))
    obj["metadata"]["ownerReferences"] = [owner_ref(b)]
    await store.replace(REPLICA, obj)
    await store.delete(MODEL_DEPLOYMENT, "default", "a")
    assert (await store.get(REPLICA, "default", "r"))["metadata"]["name"] == "r"
    await store.delete(MODEL_DEPLOYMENT, "default", "b")
    with pytest.raises(errors.NotFound):
        await store.get(REPLICA, "default", "r")


async def test_a_failure_inside_a_cascade_rolls_the_whole_write_back(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = await store.create(MODEL_DEPLOYMENT, md("chat"))
    await store.create(REPLICA, replica("chat-0", owner=deployment))
    events = store.watch(MODEL_DEPLOYMENT, resource_version=store.resource_version)
    real_remove = Database._remove
    calls = 0

    def failing_second_remove(self: Database, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_remove(self, *args, **kwargs)

    monkeypatch.setattr(Database, "_remove", failing_second_remove)
    with pytest.raises(errors.InternalError, match="disk I/O error") as caught:
        await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    monkeypatch.undo()

    assert store.resource_version == "2"
    assert await store.get(MODEL_DEPLOYMENT, "default", "chat") == deployment
    assert len((await store.list(REPLICA))[0]) == 1
    # No number was used up, and no event escaped: the next write is 3, and it is next.
    again = await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    assert rv(again) == 3
    assert [brief(e) for e in await take(events, 1)] == [("DELETED", "chat", 3)]
