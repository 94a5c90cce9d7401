"""The operator's object-level verbs over the one Kubernetes client, against kmock: the errors
the reconciler and the leader elector branch on arrive as ``aviator.api.errors`` classes."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from kubernetes_asyncio import client as kclient
from tests.unit.operator.cluster import VersionedEmulator, configuration, declare, objects

from aviator.api import errors
from aviator.kube.api import KubeApi, NoCredentials
from aviator.operator.objects import ObjectApi
from aviator.operator.resources import LEASES, ObjectRef, ref_of
from aviator.operator.runner import connection_info

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)

LEASE_REF = ObjectRef(LEASES.api_version, LEASES.kind, "sys", "op")


def lease(holder: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": LEASES.api_version,
        "kind": LEASES.kind,
        "metadata": {"name": "op", "namespace": "sys", "labels": dict(labels)},
        "spec": {"holderIdentity": holder},
    }


@pytest.fixture
async def api(kmock: kmock.KubernetesEmulator) -> AsyncIterator[ObjectApi]:
    declare(kmock)
    async with KubeApi(configuration(kmock)) as kube:
        yield ObjectApi(kube=kube)


async def test_a_missing_object_is_none_and_deleting_it_is_false(api: ObjectApi) -> None:
    assert await api.get(LEASE_REF) is None
    assert await api.delete(LEASE_REF) is False


async def test_create_get_and_delete(api: ObjectApi, kmock: kmock.KubernetesEmulator) -> None:
    created = await api.create(lease("a"))
    assert ref_of({**lease("a"), **created}) == LEASE_REF
    got = await api.get(LEASE_REF)
    assert got is not None and got["spec"]["holderIdentity"] == "a"
    assert await api.delete(LEASE_REF) is True
    assert objects(kmock, "coordination.k8s.io/v1/leases") == {}


async def test_a_taken_name_is_already_exists(api: ObjectApi) -> None:
    await api.create(lease("a"))
    with pytest.raises(errors.AlreadyExists):
        await api.create(lease("b"))


async def test_a_patch_of_a_stale_version_is_a_conflict(api: ObjectApi) -> None:
    created = await api.create(lease("a"))
    version = created["metadata"]["resourceVersion"]
    await api.patch(
        {**lease("b"), "metadata": {**lease("b")["metadata"], "resourceVersion": version}}
    )
    stale = {**lease("c"), "metadata": {**lease("c")["metadata"], "resourceVersion": version}}
    with pytest.raises(errors.Conflict):
        await api.patch(stale)
    got = await api.get(LEASE_REF)
    assert (
        got is not None and got["spec"]["holderIdentity"] == "b"
    )  # the stale write changed nothing


async def test_list_restores_kinds_and_keeps_only_the_labels_asked_for(api: ObjectApi) -> None:
    await api.create(lease("a", team="x"))
    other = lease("b", team="y")
    other["metadata"]["name"] = "other"
    await api.create(other)
    everything = await api.list(LEASES, namespace="sys")
    assert {(o["kind"], o["apiVersion"], o["metadata"]["name"]) for o in everything} == {
        ("Lease", "coordination.k8s.io/v1", "op"),
        ("Lease", "coordination.k8s.io/v1", "other"),
    }
    ours = await api.list(LEASES, namespace="sys", labels={"team": "x"})
    assert [o["metadata"]["name"] for o in ours] == ["op"]
    assert await api.list(LEASES, namespace="elsewhere") == []


async def test_an_unreachable_server_is_service_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with KubeApi(kclient.Configuration(host=f"http://127.0.0.1:{port}")) as kube:
        with pytest.raises(errors.ServiceUnavailable):
            await ObjectApi(kube=kube).get(LEASE_REF)


async def test_kopf_logs_in_with_the_same_server_and_token() -> None:
    configuration = kclient.Configuration(host="https://10.0.0.1:443")
    configuration.api_key = {"BearerToken": "Bearer secret-token-1"}
    info = await connection_info(configuration)
    assert (info.server, info.scheme, info.token) == (
        "https://10.0.0.1:443",
        "Bearer",
        "secret-token-1",
    )
    configuration.host = ""
    with pytest.raises(NoCredentials, match="names no API server"):
        await connection_info(configuration)


async def test_apply_is_a_forced_server_side_apply_by_our_field_manager(
    api: ObjectApi, kmock: kmock.KubernetesEmulator
) -> None:
    await api.create(lease("a"))
    await api.apply(lease("b"), field_manager="aviator")
    await api.apply(lease("c"), field_manager="someone", force=False)
    patches = [r for r in kmock if r.method == kmock.method.PATCH]
    assert [(r.headers["Content-Type"], dict(r.params)) for r in patches] == [
        ("application/apply-patch+yaml", {"fieldManager": "aviator", "force": "true"}),
        ("application/apply-patch+yaml", {"fieldManager": "someone"}),
    ]
    # The body is the whole intent (JSON is YAML), to the object's own path.
    assert patches[0].url.path == "/apis/coordination.k8s.io/v1/namespaces/sys/leases/op"
    assert patches[0].data["spec"] == {"holderIdentity": "b"}
    assert patches[0].data["kind"] == "Lease"


async def test_patch_and_status_are_merge_patches(
    api: ObjectApi, kmock: kmock.KubernetesEmulator
) -> None:
    await api.create(lease("a"))
    await api.patch(lease("b"))
    await api.patch_status(LEASE_REF, {"x": 1}, field_manager="aviator")
    patches = [r for r in kmock if r.method == kmock.method.PATCH]
    assert [(r.headers["Content-Type"], r.url.path.rsplit("/", 1)[-1]) for r in patches] == [
        ("application/merge-patch+json", "op"),
        ("application/merge-patch+json", "status"),
    ]
    assert dict(patches[1].params) == {"fieldManager": "aviator"}
