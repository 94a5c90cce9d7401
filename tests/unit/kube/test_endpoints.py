"""EndpointSlices into the gateway's endpoint table: the pure join, then the feed against kmock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kmock import KubernetesEmulator

from aviator.api.kinds import MODEL_DEPLOYMENT
from aviator.gateway.endpoints import Endpoint, EndpointTable, endpoint_of
from aviator.kube.api import KubeApi
from aviator.kube.endpoints import SliceDiscovery, replicas_of, slice_deployment
from aviator.kube.store import KubeStore

SLICES = "discovery.k8s.io/v1/endpointslices"


def deployment(name: str, model: str, *, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": model}, "engine": "sim", "replicas": 1},
    }


def endpoint(
    pod: str, address: str, *, ready: bool | None = True, terminating: bool = False
) -> dict[str, Any]:
    conditions: dict[str, Any] = {"terminating": terminating}
    if ready is not None:
        conditions["ready"] = ready
    return {
        "addresses": [address],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"},
    }


def endpoint_slice(
    name: str,
    md: str,
    endpoints: list[dict[str, Any]],
    *,
    namespace: str = "default",
    port: int = 8000,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it for a rendered Service."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": md,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "aviator.dev/model-deployment": md,
            },
        },
        "addressType": address_type,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


# -- the pure join --------------------------------------------------------------------------------


def routable(replicas: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    return {key: (e.url if (e := endpoint_of(obj)) else None) for key, obj in replicas.items()}


def test_each_endpoint_becomes_a_replica_of_the_deployments_model() -> None:
    slices = [
        endpoint_slice("md-v6", "md", [endpoint("p1", "fd00::1")], address_type="IPv6"),
        endpoint_slice(
            "md-abc",
            "md",
            [
                endpoint("p1", "10.0.0.1"),
                endpoint("p2", "10.0.0.2", ready=False),
                endpoint("p3", "10.0.0.3", ready=None),  # absent means ready
                endpoint("p4", "10.0.0.4", ready=True, terminating=True),
            ],
        ),
        endpoint_slice("md-v6b", "md", [endpoint("p5", "fd00::5")], address_type="IPv6"),
    ]
    replicas = replicas_of(slices, deployment=("default", "md"), model="m")
    assert routable(replicas) == {
        "default/p1": "http://10.0.0.1:8000",  # IPv4 preferred over the IPv6 slice
        "default/p2": None,
        "default/p3": "http://10.0.0.3:8000",
        "default/p4": None,
        "default/p5": "http://[fd00::5]:8000",
    }
    assert {obj["spec"]["model"]["name"] for obj in replicas.values()} == {"m"}
    assert replicas["default/p2"]["metadata"]["labels"] == {"aviator.dev/model-deployment": "md"}


def test_without_the_http_port_nothing_is_routable() -> None:
    obj = endpoint_slice("md-a", "md", [endpoint("p1", "10.0.0.1")])
    obj["ports"] = [{"name": "metrics", "port": 9000}, {"name": "grpc", "port": 9001}]
    assert routable(replicas_of([obj], deployment=("default", "md"), model="m")) == {
        "default/p1": None
    }
    obj["ports"] = [{"name": "", "port": 8001}]  # a single unnamed port is the one
    assert routable(replicas_of([obj], deployment=("default", "md"), model="m")) == {
        "default/p1": "http://10.0.0.1:8001"
    }


def test_only_labelled_slices_belong_to_a_deployment() -> None:
    assert slice_deployment(endpoint_slice("a", "md", [])) == ("default", "md")
    other = endpoint_slice("kube-dns-x", "kube-dns", [])
    del other["metadata"]["labels"]["aviator.dev/model-deployment"]
    assert slice_deployment(other) is None


# -- the feed against kmock -----------------------------------------------------------------------


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def feed(api: KubeApi) -> AsyncIterator[SliceDiscovery]:
    discovery = SliceDiscovery(api=api, source=KubeStore(api=api), table=EndpointTable())
    task = asyncio.create_task(discovery.run())
    yield discovery
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def create_slice(api: KubeApi, obj: dict[str, Any]) -> None:
    ns = obj["metadata"]["namespace"]
    await api.request(
        "POST",
        f"/apis/{SLICES.rsplit('/', 1)[0]}/namespaces/{ns}/endpointslices",
        verb="create",
        body=obj,
    )


def urls(table: EndpointTable, model: str) -> list[str] | None:
    found = table.lookup(model)
    return None if found is None else [e.url for e in found]


async def test_the_table_follows_slices_and_deployments(
    api: KubeApi, cluster: KubernetesEmulator, feed: SliceDiscovery
) -> None:
    store = KubeStore(api=api)
    await store.create(MODEL_DEPLOYMENT, deployment("md", "m"))
    await create_slice(api, endpoint_slice("md-a", "md", [endpoint("p1", "10.0.0.1")]))
    await asyncio.wait_for(feed.synced.wait(), 5)
    table = feed.table
    await until(lambda: urls(table, "m") == ["http://10.0.0.1:8000"])
    assert table.endpoint("default/p1") == Endpoint("default/p1", "m", "http://10.0.0.1:8000")
    assert feed.directory.route("m") is not None

    # A second Pod gets ready; the first stops being ready: still a member, no longer routable.
    path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/md-a"
    await api.request(
        "PATCH",
        path,
        verb="patch",
        content_type="application/merge-patch+json",
        body={"endpoints": [endpoint("p1", "10.0.0.1", ready=False), endpoint("p2", "10.0.0.2")]},
    )
    await until(lambda: urls(table, "m") == ["http://10.0.0.2:8000"])
    assert table.models() == ["m"]

    # Another slice of the same Service, and a slice of something else (ignored).
    await create_slice(api, endpoint_slice("md-b", "md", [endpoint("p3", "10.0.0.3")]))
    stranger = endpoint_slice("dns-x", "dns", [endpoint("d1", "10.0.9.9")])
    del stranger["metadata"]["labels"]["aviator.dev/model-deployment"]
    await create_slice(api, stranger)
    await until(lambda: urls(table, "m") == ["http://10.0.0.2:8000", "http://10.0.0.3:8000"])

    # The model is renamed: every endpoint moves to the new name.
    await store.replace(MODEL_DEPLOYMENT, deployment("md", "m2"))
    await until(lambda: table.lookup("m") is None and len(urls(table, "m2") or []) == 2)

    # A slice disappears, then the deployment.
    await api.request("DELETE", f"{path[:-1]}b", verb="delete")
    await until(lambda: urls(table, "m2") == ["http://10.0.0.2:8000"])
    await store.delete(MODEL_DEPLOYMENT, "default", "md")
    await until(lambda: table.models() == [])
    assert len(table) == 0


async def test_slices_before_their_deployment_wait_for_its_model(
    api: KubeApi, cluster: KubernetesEmulator, feed: SliceDiscovery
) -> None:
    await create_slice(api, endpoint_slice("late-a", "late", [endpoint("p1", "10.0.1.1")]))
    await asyncio.wait_for(feed.synced.wait(), 5)
    await asyncio.sleep(0.05)
    assert feed.table.models() == []  # no model known yet: nothing to route to
    await KubeStore(api=api).create(MODEL_DEPLOYMENT, deployment("late", "slow"))
    await until(lambda: urls(feed.table, "slow") == ["http://10.0.1.1:8000"])


async def test_a_dropped_watch_is_relisted_and_reconciled(
    api: KubeApi, cluster: KubernetesEmulator
) -> None:
    store = KubeStore(api=api)
    await store.create(MODEL_DEPLOYMENT, deployment("md", "m"))
    await create_slice(api, endpoint_slice("md-a", "md", [endpoint("p1", "10.0.0.1")]))
    # The first watch of slices fails as expired: the feed relists and watches again.
    cluster["watch discovery.k8s.io/v1/endpointslices"][:1] << (
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version",
            },
        },
    )
    discovery = SliceDiscovery(api=api, source=store, table=EndpointTable(), backoff_base_s=0.01)
    task = asyncio.create_task(discovery.run())
    try:
        await until(lambda: len(cluster["watch discovery.k8s.io/v1/endpointslices"]) >= 2)
        await create_slice(api, endpoint_slice("md-b", "md", [endpoint("p2", "10.0.0.2")]))
        await until(
            lambda: urls(discovery.table, "m") == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    lists = cluster["list discovery.k8s.io/v1/endpointslices"]
    assert len(lists) >= 2
    assert next(iter(lists)).params["labelSelector"] == "aviator.dev/model-deployment"
