"""The Control API over a real SQLite store, in process (aiohttp test server + our client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from aviator.api import errors, kinds
from aviator.client import Client
from aviator.controlapi.app import build_app
from aviator.settings import ApiSettings, StoreSettings
from aviator.store.sqlite import SqliteStore

TOKEN = "t0ken-for-tests"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(
        tmp_path / "db.sqlite", settings=StoreSettings(watch_history=50, watcher_queue=50)
    )
    yield s
    await s.close()


@pytest.fixture
async def server(store: SqliteStore) -> AsyncIterator[TestServer]:
    app = build_app(
        store=store,
        settings=ApiSettings(max_body_bytes=64 * 1024, watch_keepalive_s=0.2),
        token=TOKEN,
    )
    srv = TestServer(app)
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[Client]:
    async with Client(str(server.make_url("")), token=TOKEN) as c:
        yield c


def md(name: str = "chat", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"name": "m"}, **spec},
    }


async def test_create_get_list_replace_patch_delete(client: Client) -> None:
    created = await client.create(kinds.MODEL_DEPLOYMENT, md(), namespace="default")
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1 and meta["uid"]
    assert created["spec"]["replicas"] == {"min": 1, "max": 1}

    got = await client.get(kinds.MODEL_DEPLOYMENT, "chat", namespace="default")
    assert got == created
    items, rv = await client.list(kinds.MODEL_DEPLOYMENT, namespace="default")
    assert [i["metadata"]["name"] for i in items] == ["chat"] and int(rv) >= int(
        meta["resourceVersion"]
    )

    replaced = await client.replace(
        kinds.MODEL_DEPLOYMENT, {**created, "spec": {**created["spec"], "replicas": 3}}
    )
    assert replaced["spec"]["replicas"] == {"min": 3, "max": 3}
    assert replaced["metadata"]["generation"] == 2

    patched = await client.patch(
        kinds.MODEL_DEPLOYMENT,
        "chat",
        {"metadata": {"labels": {"team": "a"}}, "spec": {"priority": "critical"}},
        namespace="default",
    )
    assert patched["metadata"]["labels"] == {"team": "a"}
    assert patched["spec"]["priority"] == "critical" and patched["spec"]["replicas"]["min"] == 3

    with pytest.raises(errors.Invalid) as info:
        await client.patch(
            kinds.MODEL_DEPLOYMENT, "chat", {"spec": {"replicas": {"min": -2}}}, namespace="default"
        )
    assert info.value.causes[0].field == "spec.replicas.min"

    selected, _ = await client.list(kinds.MODEL_DEPLOYMENT, namespace="default", selector="team=a")
    assert len(selected) == 1
    none, _ = await client.list(kinds.MODEL_DEPLOYMENT, namespace="default", selector="team=b")
    assert none == []

    await client.delete(kinds.MODEL_DEPLOYMENT, "chat", namespace="default")
    with pytest.raises(errors.NotFound):
        await client.get(kinds.MODEL_DEPLOYMENT, "chat", namespace="default")


async def test_status_subresource_does_not_touch_spec_or_generation(client: Client) -> None:
    created = await client.create(kinds.MODEL_DEPLOYMENT, md(), namespace="default")
    body = {
        **created,
        "spec": {**created["spec"], "priority": "critical"},
        "status": {"readyReplicas": 2},
    }
    updated = await client.replace_status(kinds.MODEL_DEPLOYMENT, body)
    assert updated["status"]["readyReplicas"] == 2
    assert updated["spec"]["priority"] == "standard"
    assert updated["metadata"]["generation"] == 1
    # A spec write keeps the status.
    again = await client.replace(
        kinds.MODEL_DEPLOYMENT, {**updated, "spec": {**updated["spec"], "priority": "critical"}}
    )
    assert again["status"]["readyReplicas"] == 2
    with pytest.raises(errors.Conflict):
        await client.replace_status(
            kinds.MODEL_DEPLOYMENT, {**created, "status": {"readyReplicas": 1}}
        )


async def test_duplicate_create_is_409_already_exists(client: Client) -> None:
    await client.create(kinds.MODEL_DEPLOYMENT, md(), namespace="default")
    with pytest.raises(errors.AlreadyExists):
        await client.create(kinds.MODEL_DEPLOYMENT, md(), namespace="default")


async def test_watch_streams_events_and_bookmarks_and_410_for_old_versions(
    client: Client, store: SqliteStore
) -> None:
    created = await client.create(kinds.MODEL_DEPLOYMENT, md("a"), namespace="default")
    events: list[tuple[str, str]] = []

    async def consume() -> None:
        async for event in client.watch(
            kinds.MODEL_DEPLOYMENT, resource_version=created["metadata"]["resourceVersion"]
        ):
            events.append((event["type"], event["object"]["metadata"].get("name", "")))
            if len(events) >= 4:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await client.create(kinds.MODEL_DEPLOYMENT, md("b"), namespace="default")
    await client.delete(kinds.MODEL_DEPLOYMENT, "a", namespace="default")
    await asyncio.wait_for(task, 5)
    assert ("ADDED", "b") in events and ("DELETED", "a") in events
    assert ("BOOKMARK", "") in events  # keepalive is 0.2 s in this fixture

    for i in range(60):  # push the first version out of the 50-event history
        await client.create(
            kinds.REPLICA,
            {"metadata": {"name": f"r{i}"}, "spec": {"model": {"name": "m"}, "engine": "sim"}},
            namespace="default",
        )
    with pytest.raises(errors.Gone):
        async for _ in client.watch(
            kinds.MODEL_DEPLOYMENT, resource_version=created["metadata"]["resourceVersion"]
        ):
            pass


async def test_every_request_needs_the_token(server: TestServer) -> None:
    async with httpx.AsyncClient(base_url=str(server.make_url(""))) as raw:
        for path in ("/healthz", "/openapi/v3", "/apis/aviator.dev/v1alpha1/modeldeployments"):
            resp = await raw.get(path)
            assert resp.status_code == 401, path
            assert resp.json()["reason"] == "Unauthorized"
        resp = await raw.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 200


async def test_body_limit_and_namespace_validation(client: Client, server: TestServer) -> None:
    big = md()
    big["metadata"]["annotations"] = {"x": "y" * (100 * 1024)}
    with pytest.raises(errors.RequestEntityTooLarge):
        await client.create(kinds.MODEL_DEPLOYMENT, big, namespace="default")
    with pytest.raises(errors.BadRequest, match="invalid namespace"):
        await client.create(kinds.MODEL_DEPLOYMENT, md(), namespace="Bad_NS")
    items, _ = await client.list(kinds.MODEL_DEPLOYMENT)
    assert items == []


async def test_openapi_and_discovery(client: Client, server: TestServer) -> None:
    doc = await client.openapi()
    assert doc["openapi"].startswith("3.")
    async with httpx.AsyncClient(
        base_url=str(server.make_url("")), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as raw:
        resources = (await raw.get("/apis/aviator.dev/v1alpha1")).json()["resources"]
    assert {"modeldeployments", "replicas", "modeldeployments/status"} <= {
        r["name"] for r in resources
    }


async def test_unreachable_api_is_unavailable() -> None:
    from aviator.client import Unavailable
    from aviator.runtime.processes import free_port

    async with Client(f"http://127.0.0.1:{free_port('127.0.0.1')}", token=TOKEN, timeout=1) as c:
        with pytest.raises(Unavailable):
            await c.list(kinds.MODEL_DEPLOYMENT)


async def test_admission_checks_refuse_with_field_causes_and_store_nothing(
    store: SqliteStore,
) -> None:
    from aviator.api.errors import FieldError

    def no_gpus(kind: Any, obj: dict[str, Any]) -> list[FieldError]:
        return (
            [FieldError("spec.engine", "not on Tuesdays")]
            if obj["spec"]["engine"] == "vllm"
            else []
        )

    app = build_app(store=store, settings=ApiSettings(), token=TOKEN, checks=(no_gpus,))
    srv = TestServer(app)
    await srv.start_server()
    try:
        async with Client(str(srv.make_url("")), token=TOKEN) as c:
            with pytest.raises(errors.Invalid) as info:
                await c.create(kinds.MODEL_DEPLOYMENT, md(engine="vllm"), namespace="default")
            assert info.value.causes[0].field == "spec.engine"
            await c.create(kinds.MODEL_DEPLOYMENT, md("ok", engine="sim"), namespace="default")
            with pytest.raises(errors.Invalid):
                await c.patch(
                    kinds.MODEL_DEPLOYMENT, "ok", {"spec": {"engine": "vllm"}}, namespace="default"
                )
            items, _ = await c.list(kinds.MODEL_DEPLOYMENT)
            assert [(i["metadata"]["name"], i["spec"]["engine"]) for i in items] == [("ok", "sim")]
    finally:
        await srv.close()
