"""``KubeStore`` against kmock's emulator: the Store protocol over the aviator CRDs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kmock import KubernetesEmulator
from kubernetes_asyncio import client as k8s_client

from aviator.api import errors, labels
from aviator.api.kinds import AGENT, POLICY, REPLICA
from aviator.api.watch import WatchEvent
from aviator.cache import Reflector
from aviator.kube.api import KubeApi
from aviator.kube.store import KubeStore
from aviator.store.protocol import Store

from .conftest import agent

AGENTS = "/apis/aviator.dev/v1alpha1/namespaces/default/agents"


def test_it_is_a_store(store: KubeStore) -> None:
    typed: Store = store  # mypy checks the protocol
    assert typed.resource_version == ""


async def test_create_get_list_replace_and_delete(store: KubeStore) -> None:
    created = await store.create(
        AGENT,
        {
            **agent("b"),
            "metadata": {**agent("b")["metadata"], "uid": "mine", "resourceVersion": "9"},
        },
    )
    assert created["metadata"]["name"] == "b"
    assert "uid" not in created["metadata"]  # server-owned: never sent on create
    await store.create(AGENT, agent("a", team="x"))
    await store.create(AGENT, agent("c", namespace="other"))

    got = await store.get(AGENT, "default", "a")
    assert got["spec"]["owner"] == "ops@example.com"
    assert got["apiVersion"] == "aviator.dev/v1alpha1" and got["kind"] == "Agent"

    items, _ = await store.list(AGENT)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [
        ("default", "a"),
        ("default", "b"),
        ("other", "c"),
    ]
    items, _ = await store.list(AGENT, namespace="default")
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    items, _ = await store.list(AGENT, selector=labels.parse("team=x"))
    assert [i["metadata"]["name"] for i in items] == ["a"]

    changed = agent("a")  # no labels, a new purpose, and no "audiences"
    changed["spec"] = {"owner": "ops@example.com", "purpose": "changed"}
    changed["status"] = {"ignored": True}
    replaced = await store.replace(AGENT, changed)
    assert replaced["spec"] == {"owner": "ops@example.com", "purpose": "changed"}
    assert replaced["metadata"].get("labels") in (None, {})
    assert "status" not in replaced  # status is written through replace_status only

    with_status = await store.replace_status(AGENT, {**changed, "status": {"tokensToday": 5}})
    assert with_status["status"] == {"tokensToday": 5}
    assert with_status["spec"]["purpose"] == "changed"

    last = await store.delete(AGENT, "default", "a")
    assert last["metadata"]["name"] == "a"
    with pytest.raises(errors.NotFound):
        await store.get(AGENT, "default", "a")
    with pytest.raises(errors.NotFound):
        await store.delete(AGENT, "default", "a")


async def test_errors_are_translated(store: KubeStore, cluster: KubernetesEmulator) -> None:
    await store.create(AGENT, agent("a"))
    with pytest.raises(errors.AlreadyExists):
        await store.create(AGENT, agent("a"))
    with pytest.raises(errors.NotFound):
        await store.replace(AGENT, agent("missing"))
    (
        cluster[f"post {AGENTS}"]
        << 422
        << {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Invalid",
            "code": 422,
            "message": 'Agent.aviator.dev "bad" is invalid',
            "details": {
                "name": "bad",
                "kind": "Agent",
                "causes": [
                    {
                        "field": "spec.owner",
                        "message": "Required value",
                        "reason": "FieldValueRequired",
                    }
                ],
            },
        }
    )
    with pytest.raises(errors.Invalid) as invalid:
        await store.create(AGENT, agent("bad"))
    assert invalid.value.name == "bad"
    assert invalid.value.causes == (
        errors.FieldError("spec.owner", "Required value", "FieldValueRequired"),
    )


async def test_bad_input_is_refused_before_any_request(
    api: KubeApi, cluster: KubernetesEmulator
) -> None:
    confined = KubeStore(api=api, namespace="team-a")
    before = len(cluster)
    with pytest.raises(errors.NotFound, match="not a custom resource"):
        await confined.list(REPLICA)
    with pytest.raises(errors.Forbidden, match="confined to the namespace 'team-a'"):
        await confined.get(AGENT, "default", "a")
    with pytest.raises(errors.BadRequest, match="cluster-scoped"):
        await confined.get(POLICY, "default", "p")
    with pytest.raises(errors.BadRequest, match="namespace is required"):
        await confined.create(AGENT, {**agent("a"), "metadata": {"name": "a"}})
    with pytest.raises(errors.Invalid, match=r"metadata\.name"):
        await confined.create(AGENT, {**agent("a"), "metadata": {"namespace": "team-a"}})
    assert len(cluster) == before


async def test_a_confined_store_lists_its_namespace_only(api: KubeApi, store: KubeStore) -> None:
    await store.create(AGENT, agent("a", namespace="team-a"))
    await store.create(AGENT, agent("b", namespace="team-b"))
    items, _ = await KubeStore(api=api, namespace="team-a").list(AGENT)
    assert [i["metadata"]["name"] for i in items] == ["a"]


async def test_replace_checks_the_resource_version(
    store: KubeStore, cluster: KubernetesEmulator
) -> None:
    stored = agent("a")
    stored["metadata"]["resourceVersion"] = "7"
    await store.create(AGENT, stored)
    # kmock keeps no versions: give the stored object one, as a server would.
    cluster.objects["aviator.dev/v1alpha1/agents", "default", "a"].patch(
        {"metadata": {"resourceVersion": "7"}}
    )
    stale = agent("a")
    stale["metadata"]["resourceVersion"] = "6"
    with pytest.raises(errors.Conflict):
        await store.replace(AGENT, stale)
    with pytest.raises(errors.Conflict):
        await store.replace_status(AGENT, {**stale, "status": {"x": 1}})

    fresh = agent("a", team="y")
    fresh["metadata"]["resourceVersion"] = "7"
    replaced = await store.replace(AGENT, fresh)
    assert replaced["metadata"]["labels"] == {"team": "y"}
    patch = list(cluster["patch"])[-1].data
    # The server's own optimistic-concurrency check gets the version the patch was made against.
    assert patch["metadata"]["resourceVersion"] == "7"


async def test_an_unconditional_replace_retries_a_lost_race(
    store: KubeStore, cluster: KubernetesEmulator
) -> None:
    await store.create(AGENT, agent("a"))
    conflict = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Conflict",
        "code": 409,
        "message": "the object has been modified",
    }
    cluster[f"patch {AGENTS}/a"][:1] << 409 << conflict
    replaced = await store.replace(AGENT, agent("a", team="z"))
    assert replaced["metadata"]["labels"] == {"team": "z"}
    assert len(cluster["patch"]) == 2

    conditional = agent("a")
    conditional["metadata"]["resourceVersion"] = ""  # empty: no precondition
    cluster[f"patch {AGENTS}/a"] << 409 << conflict
    with pytest.raises(errors.Conflict, match="kept changing"):
        await store.replace(AGENT, conditional)


async def _collect(events: AsyncIterator[WatchEvent], into: list[WatchEvent]) -> None:
    async for event in events:
        into.append(event)


async def _until(condition: Any, *, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_watch_sends_the_version_and_asks_for_bookmarks(
    store: KubeStore, cluster: KubernetesEmulator
) -> None:
    await store.create(AGENT, agent("a"))
    seen: list[WatchEvent] = []
    task = asyncio.create_task(_collect(store.watch(AGENT, resource_version="41"), seen))
    try:
        await _until(lambda: len(seen) == 1)
        await store.replace(AGENT, agent("a", team="x"))
        await store.delete(AGENT, "default", "a")
        await _until(lambda: len(seen) == 3)
    finally:
        task.cancel()
    assert [e["type"] for e in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[1]["object"]["metadata"]["labels"] == {"team": "x"}
    params = next(iter(cluster["watch"])).params
    assert params["resourceVersion"] == "41"
    assert params["allowWatchBookmarks"] == "true"
    assert int(params["timeoutSeconds"]) > 0


async def test_watch_passes_bookmarks_and_raises_gone(
    store: KubeStore, cluster: KubernetesEmulator
) -> None:
    cluster["watch aviator.dev/v1alpha1/agents"][:1] << (
        {
            "type": "BOOKMARK",
            "object": {
                "kind": "Agent",
                "apiVersion": "aviator.dev/v1alpha1",
                "metadata": {"resourceVersion": "120"},
            },
        },
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "Expired",
                "code": 410,
                "message": "too old resource version: 100 (120)",
            },
        },
    )
    seen: list[WatchEvent] = []
    with pytest.raises(errors.Gone, match="too old"):
        await _collect(store.watch(AGENT, resource_version="100"), seen)
    assert [e["type"] for e in seen] == ["BOOKMARK"]
    assert store.resource_version == "120"


async def test_watch_with_a_selector_reports_objects_leaving_it(store: KubeStore) -> None:
    await store.create(AGENT, agent("in", team="x"))
    await store.create(AGENT, agent("out", team="y"))
    seen: list[WatchEvent] = []
    task = asyncio.create_task(_collect(store.watch(AGENT, selector=labels.parse("team=x")), seen))
    try:
        await _until(lambda: len(seen) == 1)
        await store.replace(AGENT, agent("in", team="y"))  # leaves the selector
        await store.replace(AGENT, agent("out", team="x"))  # enters it
        await _until(lambda: len(seen) == 3)
    finally:
        task.cancel()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [
        ("ADDED", "in"),
        ("DELETED", "in"),
        ("MODIFIED", "out"),
    ]


async def test_a_reflector_over_the_store_follows_the_cluster(store: KubeStore) -> None:
    await store.create(AGENT, agent("a"))
    events: list[tuple[str, str]] = []
    reflector = Reflector(
        source=store, kind=AGENT, on_event=lambda t, o: events.append((t, o["metadata"]["name"]))
    )
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 5)
        await store.create(AGENT, agent("b"))
        await _until(lambda: ("ADDED", "b") in events)
        await store.delete(AGENT, "default", "a")
        await _until(lambda: ("DELETED", "a") in events)
    finally:
        task.cancel()
    assert set(reflector.cache) == {("default", "b")}


async def test_an_unreachable_api_server_is_service_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    api = KubeApi(k8s_client.Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(errors.ServiceUnavailable, match="cannot reach the Kubernetes API"):
            await KubeStore(api=api).get(AGENT, "default", "a")
    finally:
        await api.aclose()
