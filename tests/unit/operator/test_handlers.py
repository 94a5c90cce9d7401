"""The operator end to end, in process: kopf against kmock's Kubernetes emulator.

Creating a ModelDeployment CR makes its Deployment, Service, ResourceClaimTemplate and
InferencePool appear; changing replicas or the model updates them; deleting it cleans up under
the finalizer; status follows the Deployment and the EndpointSlices."""

from __future__ import annotations

import copy
from typing import Any

import kmock
import pytest
from tests.unit.operator.cluster import (
    DEPLOYMENTS,
    MD,
    VersionedEmulator,
    configuration,
    declare,
    eventually,
    objects,
    running_operator,
)

from aviator.kube.api import KubeApi
from aviator.operator.handlers import FINALIZER
from aviator.operator.objects import ObjectApi
from aviator.operator.resources import MODEL_DEPLOYMENTS, ObjectRef

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)

NS = "team-a"
UID = "6d9b1c1e-0000-4000-8000-000000000001"

GPU = {"firstAvailable": [{"deviceClassName": "gpu.nvidia.com", "count": 1}]}


RENDERED_PLURALS = {
    "deployments",
    "services",
    "resourceclaimtemplates",
    "inferencepools",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
}


def cr(name: str = "chat", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        # The API server sets uid and generation; kmock does not, so the test plays its part.
        "metadata": {"name": name, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {
            "model": {"name": "qwen", "source": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "accelerators": GPU,
            "replicas": {"min": 2},
            **spec,
        },
    }


@pytest.fixture
def cluster(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    declare(kmock)
    return kmock


async def create_md(cluster: kmock.KubernetesEmulator, body: dict[str, Any]) -> None:
    async with KubeApi(configuration(cluster)) as kube:
        await ObjectApi(kube=kube).create(body)


def of_kind(cluster: kmock.KubernetesEmulator, resource: str) -> dict[str, Any]:
    return objects(cluster, resource)


async def test_create_makes_the_rendered_objects(cluster: kmock.KubernetesEmulator) -> None:
    async with running_operator(cluster):
        await create_md(cluster, cr())
        dep = await eventually(lambda: of_kind(cluster, DEPLOYMENTS).get((NS, "chat")))
        service = await eventually(lambda: of_kind(cluster, "v1/services").get((NS, "chat")))
        rct = await eventually(
            lambda: of_kind(cluster, "resource.k8s.io/v1/resourceclaimtemplates").get(
                (NS, "chat-accelerators")
            )
        )
        pool = await eventually(
            lambda: of_kind(cluster, "inference.networking.k8s.io/v1/inferencepools").get(
                (NS, "chat")
            )
        )
        md = await eventually(
            lambda: (
                (m := of_kind(cluster, MD).get((NS, "chat")))
                and FINALIZER in m["metadata"].get("finalizers", [])
                and m
            )
        )
    assert dep["spec"]["replicas"] == 2
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("vllm/vllm-openai")
    assert "Qwen/Qwen2.5-0.5B-Instruct" in " ".join(container["command"])
    assert dep["spec"]["template"]["spec"]["resourceClaims"] == [
        {"name": "accelerators", "resourceClaimTemplateName": "chat-accelerators"}
    ]
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ModelDeployment", "chat", UID)
    assert service["spec"]["selector"] == {"aviator.dev/model-deployment": "chat"}
    request = rct["spec"]["spec"]["devices"]["requests"][0]
    assert request["firstAvailable"][0]["deviceClassName"] == "gpu.nvidia.com"
    assert pool["spec"]["selector"]["matchLabels"] == {"aviator.dev/model-deployment": "chat"}
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert md["metadata"]["finalizers"] == [FINALIZER]
    # Every write of a rendered object is a forced server-side apply by aviator's field manager
    # (kmock merges whatever it gets, so only the request says so).
    applies = [
        r
        for r in cluster
        if r.method == kmock.method.PATCH
        and r.resource is not None
        and r.resource.plural in RENDERED_PLURALS
    ]
    assert {r.resource.plural for r in applies} == RENDERED_PLURALS - {"horizontalpodautoscalers"}
    assert {
        (r.headers["Content-Type"], tuple(sorted(r.params.items())), r.subresource) for r in applies
    } == {("application/apply-patch+yaml", (("fieldManager", "aviator"), ("force", "true")), None)}


async def replace_md(cluster: kmock.KubernetesEmulator, body: dict[str, Any]) -> None:
    async with KubeApi(configuration(cluster)) as kube:
        await ObjectApi(kube=kube).patch(body)


def rendered_names(cluster: kmock.KubernetesEmulator) -> set[tuple[str, str]]:
    kinds = {
        "apps/v1/deployments": "Deployment",
        "v1/services": "Service",
        "resource.k8s.io/v1/resourceclaimtemplates": "ResourceClaimTemplate",
        "inference.networking.k8s.io/v1/inferencepools": "InferencePool",
        "autoscaling/v2/horizontalpodautoscalers": "HorizontalPodAutoscaler",
        "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
    }
    return {
        (kind, name)
        for resource, kind in kinds.items()
        for (namespace, name) in of_kind(cluster, resource)
        if namespace == NS
    }


async def test_changing_replicas_or_the_model_updates_the_objects(
    cluster: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(cluster):
        body = cr()
        await create_md(cluster, body)
        await eventually(lambda: of_kind(cluster, DEPLOYMENTS).get((NS, "chat")))

        changed = copy.deepcopy(body)
        changed["metadata"]["generation"] = 2
        changed["spec"]["replicas"] = {"min": 3}
        await replace_md(cluster, changed)
        dep = await eventually(
            lambda: (
                (d := of_kind(cluster, DEPLOYMENTS).get((NS, "chat")))
                and d["spec"]["replicas"] == 3
                and d
            )
        )

        changed["metadata"]["generation"] = 3
        changed["spec"]["model"] = {"name": "llama", "source": "hf://meta-llama/Llama-3.2-1B"}
        await replace_md(cluster, changed)
        dep = await eventually(
            lambda: (
                (d := of_kind(cluster, DEPLOYMENTS).get((NS, "chat")))
                and "meta-llama/Llama-3.2-1B"
                in " ".join(d["spec"]["template"]["spec"]["containers"][0]["command"])
                and d
            )
        )
    assert dep["spec"]["replicas"] == 3


async def test_objects_no_longer_rendered_are_pruned(cluster: kmock.KubernetesEmulator) -> None:
    async with running_operator(cluster):
        body = cr()
        await create_md(cluster, body)
        await eventually(
            lambda: ("ResourceClaimTemplate", "chat-accelerators") in rendered_names(cluster)
        )
        unclaimed = copy.deepcopy(body)
        unclaimed["metadata"]["generation"] = 2
        # kmock merges a PUT like a merge patch: null removes the key.
        unclaimed["spec"]["accelerators"] = None
        await replace_md(cluster, unclaimed)
        await eventually(
            lambda: ("ResourceClaimTemplate", "chat-accelerators") not in rendered_names(cluster)
        )
        dep = of_kind(cluster, DEPLOYMENTS)[(NS, "chat")]
    # Without a claim the simulator runs, from aviator's image. (kmock merges an apply into
    # the old object, so the dropped resourceClaims field lingers there; a real server-side
    # apply removes the fields its manager stops applying.)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "aviator:test"
    assert rendered_names(cluster) == {
        ("Deployment", "chat"),
        ("Service", "chat"),
        ("InferencePool", "chat"),
        ("PodDisruptionBudget", "chat"),
    }


async def test_deletion_cleans_up_under_the_finalizer(cluster: kmock.KubernetesEmulator) -> None:
    async with running_operator(cluster):
        await create_md(cluster, cr())
        await eventually(lambda: len(rendered_names(cluster)) == 5)
        # Someone else's object in the namespace, with a name of ours: not touched.
        async with KubeApi(configuration(cluster)) as kube:
            api = ObjectApi(kube=kube)
            await api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "chat-other", "namespace": NS, "labels": {"app": "x"}},
                    "spec": {"ports": [{"port": 80}]},
                }
            )
            await eventually(
                lambda: of_kind(cluster, MD)[(NS, "chat")]["metadata"].get("finalizers")
            )
            await api.delete(
                ObjectRef(MODEL_DEPLOYMENTS.api_version, "ModelDeployment", NS, "chat")
            )
        await eventually(lambda: (NS, "chat") not in of_kind(cluster, MD))
    assert rendered_names(cluster) == {("Service", "chat-other")}


async def test_status_follows_the_deployment_and_its_endpoints(
    cluster: kmock.KubernetesEmulator,
) -> None:
    async with running_operator(cluster):
        await create_md(cluster, cr())
        md = await eventually(
            lambda: (m := of_kind(cluster, MD).get((NS, "chat"))) and m.get("status") and m
        )
        available = {c["type"]: c for c in md["status"]["conditions"]}["Available"]
        assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
        assert md["status"]["desiredReplicas"] == 2
        async with KubeApi(configuration(cluster)) as kube:
            api = ObjectApi(kube=kube)
            # The Deployment controller's part: two Pods up, then the EndpointSlice controller's.
            await api.patch_status(
                ObjectRef("apps/v1", "Deployment", NS, "chat"),
                {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
                field_manager="kube-controller-manager",
            )
            md = await eventually(
                lambda: (
                    (m := of_kind(cluster, MD)[(NS, "chat")])
                    and m["status"].get("readyReplicas") == 2
                    and m
                )
            )
            conditions = {c["type"]: c for c in md["status"]["conditions"]}
            assert conditions["Available"]["status"] == "True"
            assert conditions["Progressing"]["reason"] == "NewReplicasAvailable"
            await api.create(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "chat-x7k2p",
                        "namespace": NS,
                        "labels": {
                            "kubernetes.io/service-name": "chat",
                            "app.kubernetes.io/managed-by": "aviator",
                        },
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                    "endpoints": [
                        {
                            "addresses": ["10.0.0.7"],
                            "conditions": {"ready": True},
                            "targetRef": {"kind": "Pod", "name": "chat-5d8f-abcde"},
                        },
                        {
                            "addresses": ["10.0.0.8"],
                            "conditions": {"ready": False},
                            "targetRef": {"kind": "Pod", "name": "chat-5d8f-fghij"},
                        },
                    ],
                }
            )
            md = await eventually(
                lambda: (
                    (m := of_kind(cluster, MD)[(NS, "chat")]) and m["status"].get("endpoints") and m
                )
            )
    assert md["status"]["endpoints"] == [
        {"replica": "chat-5d8f-abcde", "url": "http://10.0.0.7:8000"}
    ]


async def test_a_spec_the_plane_refuses_is_reported_in_status(
    cluster: kmock.KubernetesEmulator,
) -> None:
    bad = cr()
    bad["spec"]["replicas"] = {"min": 3, "max": 1}
    async with running_operator(cluster):
        await create_md(cluster, bad)
        md = await eventually(
            lambda: (m := of_kind(cluster, MD).get((NS, "chat"))) and m.get("status") and m
        )
    progressing = {c["type"]: c for c in md["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "InvalidSpec")
    assert "spec.replicas" in progressing["message"]
    assert rendered_names(cluster) == set()


async def test_render_notes_reach_the_owner_as_events(cluster: kmock.KubernetesEmulator) -> None:
    # CUDA and ROCm need different vLLM images: one Deployment keeps the first and says so.
    mixed = {
        "firstAvailable": [
            {"deviceClassName": "gpu.nvidia.com", "count": 1},
            {"deviceClassName": "gpu.amd.com", "count": 1},
        ]
    }
    async with running_operator(cluster):
        await create_md(cluster, cr(accelerators=mixed))
        event = await eventually(
            lambda: next(
                (
                    e
                    for e in of_kind(cluster, "v1/events").values()
                    if e.get("reason") == "RenderNote" and "gpu.amd.com" in e.get("message", "")
                ),
                None,
            )
        )
    assert event["involvedObject"]["kind"] == "ModelDeployment"
    assert event["involvedObject"]["name"] == "chat"
    assert "dropped" in event["message"]
