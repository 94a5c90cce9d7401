"""Shared fixtures for the Kubernetes adapters: kmock's emulator with the aviator CRDs declared,
and a ``KubeApi`` pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kmock import KubernetesEmulator, ResourceInfo
from kubernetes_asyncio import client as k8s_client

from aviator.api.kinds import KINDS
from aviator.k8s.crds import CRD_KINDS
from aviator.kube.api import KubeApi
from aviator.kube.store import KubeStore, resource_of


@pytest.fixture
def cluster(kmock: KubernetesEmulator) -> KubernetesEmulator:
    """kmock with the four aviator CRDs (status subresource) and EndpointSlices declared."""
    for name in CRD_KINDS:
        res = resource_of(KINDS[name])
        kmock.resources[f"{res.group}/{res.version}/{res.plural}"] = ResourceInfo(
            kind=res.kind, namespaced=res.namespaced, subresources={"status"}
        )
    kmock.resources["discovery.k8s.io/v1/endpointslices"] = ResourceInfo(
        kind="EndpointSlice", namespaced=True
    )
    return kmock


def configuration(cluster: KubernetesEmulator) -> k8s_client.Configuration:
    return k8s_client.Configuration(host=str(cluster.url).rstrip("/"))


@pytest.fixture
async def api(cluster: KubernetesEmulator) -> AsyncIterator[KubeApi]:
    client = KubeApi(configuration(cluster))
    yield client
    await client.aclose()


@pytest.fixture
async def store(api: KubeApi) -> KubeStore:
    return KubeStore(api=api)


def agent(name: str, *, namespace: str = "default", **labels: str) -> dict[str, Any]:
    """An Agent in wire form, as admission leaves it."""
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"owner": "ops@example.com", "purpose": "tests", "audiences": ["gateway"]},
    }
