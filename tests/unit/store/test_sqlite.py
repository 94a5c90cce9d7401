"""SqliteStore: create/get/replace/status/delete/list, resourceVersions, reopen, errors."""

from __future__ import annotations

import asyncio
import inspect
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from aviator import store as store_package
from aviator.api import errors
from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA
from aviator.api.labels import parse
from aviator.settings import StoreSettings
from aviator.store import SqliteStore, Store

from .helpers import NODE, md, replica, rv, take

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.mark.parametrize(
    "member",
    ["get", "list", "create", "replace", "replace_status", "delete", "watch", "close"],
)
def test_methods_match_the_store_protocol(member: str) -> None:
    def shape(fn: Callable[..., object]) -> list[tuple[str, object, object]]:
        params = inspect.signature(fn).parameters.values()
        return [(p.name, p.kind, p.default) for p in params]

    assert shape(getattr(SqliteStore, member)) == shape(getattr(Store, member))
    assert inspect.iscoroutinefunction(getattr(SqliteStore, member)) == (member != "watch")


def test_package_exports() -> None:
    assert store_package.__all__ == sorted(["SqliteStore", "Store", "WatchEvent"])
    assert isinstance(SqliteStore.resource_version, property)


# -- create --------------------------------------------------------------------------------


async def test_create_sets_server_fields_and_drops_client_ones(store: SqliteStore) -> None:
    body = md(
        "chat",
        uid="client-uid",
        resourceVersion="999",
        generation=7,
        creationTimestamp="2000-01-01T00:00:00Z",
        deletionTimestamp="2000-01-01T00:00:00Z",
        labels={"a": "1"},
    )
    created = await store.create(MODEL_DEPLOYMENT, body)
    meta = created["metadata"]
    assert meta["uid"] != "client-uid"
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert meta["resourceVersion"] == "1"
    assert meta["generation"] == 1
    assert RFC3339_Z.match(meta["creationTimestamp"])
    assert meta["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert "deletionTimestamp" not in meta
    assert meta["labels"] == {"a": "1"}
    assert created["spec"] == body["spec"]
    assert await store.get(MODEL_DEPLOYMENT, "default", "chat") == created
    assert store.resource_version == "1"


async def test_create_keeps_status_as_given(store: SqliteStore) -> None:
    body = replica("s")
    body["status"] = {"phase": "Running", "restarts": 2}
    assert (await store.create(REPLICA, body))["status"] == {"phase": "Running", "restarts": 2}


async def test_create_refuses_a_taken_name(store: SqliteStore) -> None:
    await store.create(MODEL_DEPLOYMENT, md("chat"))
    with pytest.raises(errors.AlreadyExists) as caught:
        await store.create(MODEL_DEPLOYMENT, md("chat"))
    assert caught.value.to_status()["details"] == {"name": "chat", "kind": "modeldeployments"}
    assert store.resource_version == "1"
    # The same name in another namespace or of another kind is a different object.
    await store.create(MODEL_DEPLOYMENT, md("chat", namespace="other"))
    await store.create(REPLICA, replica("chat"))


async def test_create_refuses_a_name_whose_old_object_is_terminating(store: SqliteStore) -> None:
    await store.create(MODEL_DEPLOYMENT, md("chat", finalizers=["x/y"]))
    await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    with pytest.raises(errors.AlreadyExists):
        await store.create(MODEL_DEPLOYMENT, md("chat"))


async def test_concurrent_creates_of_one_name_exactly_one_wins(store: SqliteStore) -> None:
    results = await asyncio.gather(
        *(store.create(MODEL_DEPLOYMENT, md("chat", labels={"n": str(i)})) for i in range(20)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, errors.AlreadyExists)]
    assert len(won) == 1
    assert len(lost) == 19
    assert await store.get(MODEL_DEPLOYMENT, "default", "chat") == won[0]


async def test_objects_do_not_alias_the_callers_dicts(store: SqliteStore) -> None:
    body = md("chat")
    created = await store.create(MODEL_DEPLOYMENT, body)
    body["spec"]["engine"] = "vllm"
    created["spec"]["engine"] = "vllm"
    fetched = await store.get(MODEL_DEPLOYMENT, "default", "chat")
    assert fetched["spec"]["engine"] == "sim"
    fetched["metadata"]["labels"] = {"x": "y"}
    assert "labels" not in (await store.get(MODEL_DEPLOYMENT, "default", "chat"))["metadata"]


async def test_scope_rules(store: SqliteStore) -> None:
    with pytest.raises(errors.BadRequest, match="namespace is required"):
        await store.create(MODEL_DEPLOYMENT, md("chat", namespace=""))
    node = {"metadata": {"name": "n1"}, "spec": {}}
    created = await store.create(NODE, node)
    assert "namespace" not in created["metadata"]
    assert await store.get(NODE, None, "n1") == created
    assert (await store.list(NODE))[0] == [created]
    with pytest.raises(errors.BadRequest, match="cluster-scoped"):
        await store.create(NODE, {"metadata": {"name": "n2", "namespace": "default"}})
    with pytest.raises(errors.BadRequest, match="cluster-scoped"):
        await store.get(NODE, "default", "n1")
    with pytest.raises(errors.BadRequest, match="cluster-scoped"):
        await store.list(NODE, namespace="default")
    with pytest.raises(errors.BadRequest, match="namespace is required"):
        await store.get(MODEL_DEPLOYMENT, None, "chat")


async def test_bodies_the_store_cannot_key_or_encode(store: SqliteStore) -> None:
    with pytest.raises(errors.BadRequest, match=r"metadata\.name"):
        await store.create(MODEL_DEPLOYMENT, {"metadata": {"namespace": "default"}})
    with pytest.raises(errors.BadRequest, match="no metadata"):
        await store.create(MODEL_DEPLOYMENT, {"spec": {}})
    with pytest.raises(errors.BadRequest, match="kind"):
        await store.create(MODEL_DEPLOYMENT, replica("r"))
    with pytest.raises(errors.BadRequest, match="JSON"):
        await store.create(MODEL_DEPLOYMENT, {**md("chat"), "spec": {"x": {1, 2}}})
    assert store.resource_version == "0"


# -- replace -------------------------------------------------------------------------------


async def test_replace_with_stale_resource_version_conflicts_and_changes_nothing(
    store: SqliteStore,
) -> None:
    first = await store.create(MODEL_DEPLOYMENT, md("chat"))
    second = await store.replace(
        MODEL_DEPLOYMENT, {**first, "metadata": {**first["metadata"], "labels": {"v": "2"}}}
    )
    stale = {**first, "spec": {**first["spec"], "engine": "vllm"}}
    events = store.watch(MODEL_DEPLOYMENT, resource_version=store.resource_version)
    with pytest.raises(errors.Conflict, match="has been modified") as caught:
        await store.replace(MODEL_DEPLOYMENT, stale)
    assert caught.value.code == 409
    with pytest.raises(errors.Conflict):
        await store.replace_status(MODEL_DEPLOYMENT, {**stale, "status": {"x": 1}})
    with pytest.raises(errors.Conflict):
        await store.delete(MODEL_DEPLOYMENT, "default", "chat", resource_version="1")
    assert await store.get(MODEL_DEPLOYMENT, "default", "chat") == second
    assert store.resource_version == "2"
    # The next event anyone sees is the next real write.
    await store.create(MODEL_DEPLOYMENT, md("marker"))
    [event] = await take(events, 1)
    assert event["object"]["metadata"]["name"] == "marker"
    assert rv(event["object"]) == 3


async def test_replace_keeps_server_fields_and_status(store: SqliteStore) -> None:
    created = await store.create(REPLICA, replica("r", finalizers=["x/y"]))
    await store.delete(REPLICA, "default", "r")  # terminating: deletionTimestamp set
    current = await store.get(REPLICA, "default", "r")
    body = {
        **current,
        "metadata": {
            **current["metadata"],
            "uid": None,
            "generation": 40,
            "creationTimestamp": "1999-01-01T00:00:00Z",
            "deletionTimestamp": None,
            "labels": {"new": "label"},
        },
        "status": {"phase": "Failed"},
    }
    del body["metadata"]["uid"]
    replaced = await store.replace(REPLICA, body)
    meta = replaced["metadata"]
    assert meta["uid"] == created["metadata"]["uid"]
    assert meta["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert meta["deletionTimestamp"] == current["metadata"]["deletionTimestamp"]
    assert meta["generation"] == 1
    assert meta["labels"] == {"new": "label"}
    assert replaced["status"] == {"phase": "Pending"}
    assert rv(replaced) == rv(current) + 1


async def test_generation_moves_only_with_spec(store: SqliteStore) -> None:
    obj = await store.create(MODEL_DEPLOYMENT, md("chat"))
    obj["metadata"]["annotations"] = {"a": "b"}
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    assert (obj["metadata"]["generation"], rv(obj)) == (1, 2)
    obj["spec"]["engine"] = "vllm"
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    assert (obj["metadata"]["generation"], rv(obj)) == (2, 3)
    # Key order is not a change; a type change (1 vs 1.0) is.
    obj["spec"] = dict(reversed(list(obj["spec"].items())))
    assert (await store.replace(MODEL_DEPLOYMENT, obj))["metadata"]["generation"] == 2
    obj["spec"]["replicas"] = {"min": 1}
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    obj["spec"]["replicas"] = {"min": 1.0}
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    assert obj["metadata"]["generation"] == 4


async def test_a_replace_that_changes_nothing_is_not_a_write(store: SqliteStore) -> None:
    obj = await store.create(MODEL_DEPLOYMENT, md("chat"))
    events = store.watch(MODEL_DEPLOYMENT, resource_version="1")
    again = await store.replace(MODEL_DEPLOYMENT, obj)
    assert again == obj
    body = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
    assert await store.replace(MODEL_DEPLOYMENT, body) == obj
    assert await store.replace_status(MODEL_DEPLOYMENT, obj) == obj
    assert store.resource_version == "1"
    await store.create(MODEL_DEPLOYMENT, md("marker"))
    assert [e["object"]["metadata"]["name"] for e in await take(events, 1)] == ["marker"]


async def test_replace_checks_the_uid_and_existence(store: SqliteStore) -> None:
    obj = await store.create(MODEL_DEPLOYMENT, md("chat"))
    await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    with pytest.raises(errors.NotFound, match='modeldeployments "chat" not found'):
        await store.replace(MODEL_DEPLOYMENT, obj)
    await store.create(MODEL_DEPLOYMENT, md("chat"))
    unversioned = {**obj, "metadata": {**obj["metadata"], "resourceVersion": None}}
    with pytest.raises(errors.Conflict, match="uid"):
        await store.replace(MODEL_DEPLOYMENT, unversioned)


# -- replace_status ------------------------------------------------------------------------


async def test_status_write_changes_only_status_and_never_generation(store: SqliteStore) -> None:
    obj = await store.create(REPLICA, replica("r"))
    body = {
        **obj,
        "metadata": {**obj["metadata"], "labels": {"ignored": "yes"}},
        "spec": {"engine": "ignored"},
        "status": {"phase": "Running", "endpoint": "http://127.0.0.1:1"},
    }
    updated = await store.replace_status(REPLICA, body)
    assert updated["status"] == {"phase": "Running", "endpoint": "http://127.0.0.1:1"}
    assert updated["spec"] == obj["spec"]
    assert "labels" not in updated["metadata"]
    assert updated["metadata"]["generation"] == 1
    assert rv(updated) == rv(obj) + 1
    assert await store.get(REPLICA, "default", "r") == updated


# -- delete --------------------------------------------------------------------------------


async def test_delete_without_finalizers_removes_with_a_new_resource_version(
    store: SqliteStore,
) -> None:
    obj = await store.create(MODEL_DEPLOYMENT, md("chat"))
    events = store.watch(MODEL_DEPLOYMENT, resource_version="1")
    gone = await store.delete(MODEL_DEPLOYMENT, "default", "chat", resource_version="1")
    assert rv(gone) == 2
    assert {**gone["metadata"], "resourceVersion": "1"} == obj["metadata"]
    [event] = await take(events, 1)
    assert event == {"type": "DELETED", "object": gone}
    with pytest.raises(errors.NotFound):
        await store.get(MODEL_DEPLOYMENT, "default", "chat")
    with pytest.raises(errors.NotFound):
        await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    # The name is free again, and the counter never goes back.
    assert rv(await store.create(MODEL_DEPLOYMENT, md("chat"))) == 3


# -- list ----------------------------------------------------------------------------------


async def test_list_sorts_filters_and_reports_the_resource_version(store: SqliteStore) -> None:
    for namespace, name, tier in [("b", "x", "web"), ("a", "z", "db"), ("a", "y", "web")]:
        await store.create(MODEL_DEPLOYMENT, md(name, namespace=namespace, labels={"tier": tier}))
    await store.create(REPLICA, replica("other-kind"))
    items, version = await store.list(MODEL_DEPLOYMENT)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [
        ("a", "y"),
        ("a", "z"),
        ("b", "x"),
    ]
    assert version == store.resource_version == "4"
    only_a, _ = await store.list(MODEL_DEPLOYMENT, namespace="a")
    assert [i["metadata"]["name"] for i in only_a] == ["y", "z"]
    web, _ = await store.list(MODEL_DEPLOYMENT, selector=parse("tier=web"))
    assert [i["metadata"]["name"] for i in web] == ["y", "x"]
    none, _ = await store.list(MODEL_DEPLOYMENT, namespace="c")
    assert none == []


# -- resourceVersion and reopen ------------------------------------------------------------


async def test_every_write_gets_the_next_resource_version(store: SqliteStore) -> None:
    seen = []
    obj = await store.create(MODEL_DEPLOYMENT, md("chat", finalizers=["x/y"]))
    seen.append(rv(obj))
    obj["spec"]["engine"] = "vllm"
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    seen.append(rv(obj))
    obj = await store.replace_status(MODEL_DEPLOYMENT, {**obj, "status": {"readyReplicas": 1}})
    seen.append(rv(obj))
    obj = await store.delete(MODEL_DEPLOYMENT, "default", "chat")
    seen.append(rv(obj))
    obj["metadata"]["finalizers"] = []
    obj = await store.replace(MODEL_DEPLOYMENT, obj)
    seen.append(rv(obj))
    assert seen == [1, 2, 3, 4, 5]
    assert store.resource_version == "5"


async def test_reopen_keeps_objects_and_continues_the_counter(
    db_path: Path, settings: StoreSettings
) -> None:
    async with await SqliteStore.open(db_path, settings=settings) as first:
        kept = await first.create(MODEL_DEPLOYMENT, md("kept"))
        await first.create(MODEL_DEPLOYMENT, md("dropped"))
        await first.delete(MODEL_DEPLOYMENT, "default", "dropped")  # rv 3 lives only here
    async with await SqliteStore.open(db_path, settings=settings) as second:
        assert second.resource_version == "3"
        assert await second.get(MODEL_DEPLOYMENT, "default", "kept") == kept
        assert (await second.list(MODEL_DEPLOYMENT)) == ([kept], "3")
        assert rv(await second.create(MODEL_DEPLOYMENT, md("new"))) == 4


async def test_open_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    async with await SqliteStore.open(path, settings=StoreSettings()) as store:
        await store.create(MODEL_DEPLOYMENT, md("chat"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert conn.execute("SELECT rv FROM revision").fetchone() == (1,)
    conn.close()


# -- threads, closing, errors --------------------------------------------------------------


async def test_database_work_runs_on_one_store_thread(store: SqliteStore) -> None:
    names: set[str] = set()

    def record() -> None:
        names.add(threading.current_thread().name)

    await asyncio.gather(*(store.create(MODEL_DEPLOYMENT, md(f"m{i}")) for i in range(10)))
    for _ in range(3):
        await store._read(record)  # the boundary every call crosses
    assert len(names) == 1
    assert next(iter(names)).startswith("aviator-store")
    assert threading.current_thread().name not in names


async def test_closed_store_refuses_work_and_close_is_idempotent(
    db_path: Path, settings: StoreSettings
) -> None:
    store = await SqliteStore.open(db_path, settings=settings)
    await store.close()
    await store.close()
    with pytest.raises(errors.InternalError, match="closed"):
        await store.get(MODEL_DEPLOYMENT, "default", "chat")
    with pytest.raises(errors.InternalError, match="closed"):
        await store.create(MODEL_DEPLOYMENT, md("chat"))


async def test_open_failure_is_an_api_error_chained_to_sqlite(tmp_path: Path) -> None:
    directory = tmp_path / "is-a-directory"
    directory.mkdir()
    with pytest.raises(errors.InternalError, match="store failure") as caught:
        await SqliteStore.open(directory, settings=StoreSettings())
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_a_newer_schema_is_refused(db_path: Path, settings: StoreSettings) -> None:
    async with await SqliteStore.open(db_path, settings=settings):
        pass
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(errors.InternalError, match="schema version is 99"):
        await SqliteStore.open(db_path, settings=settings)
