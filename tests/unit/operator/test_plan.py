"""The operator's pure decisions: admission of a CR, fleet, scale, what to apply and prune,
status, backoff."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aviator.api import errors
from aviator.api.modeldeployment import ModelDeploymentStatus
from aviator.controllers.plans import Scale
from aviator.k8s.render import RenderOptions
from aviator.operator import plan
from aviator.operator.reconciler import status_patch
from aviator.operator.resources import MANAGED, ObjectRef, resource_type

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
UID = "uid-1"


def cr(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "chat",
            "namespace": "team-a",
            "uid": UID,
            "generation": 4,
            "resourceVersion": "812",
            "creationTimestamp": "2026-11-27T11:00:00Z",
            # What an API server and kopf add: aviator's model does not know these.
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "selfLink": "/apis/aviator.dev/v1alpha1/namespaces/team-a/modeldeployments/chat",
            "finalizers": ["aviator.dev/operator"],
            "annotations": {"operator.aviator.dev/last-handled-configuration": "{}"},
        },
        "spec": {"model": {"name": "qwen", "source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}, **spec},
        "status": {"kopf": {"progress": {}}},
    }


# --- admission -----------------------------------------------------------------------------------


def test_a_live_cr_is_admitted_with_the_planes_defaults_and_keeps_its_identity() -> None:
    md = plan.admit(cr())
    assert (md.namespace, md.name, md.metadata.uid, md.metadata.generation) == (
        "team-a",
        "chat",
        UID,
        4,
    )
    assert md.spec.replicas.min == 1  # the plane's default
    assert md.spec.engine == "auto"


def test_a_spec_the_plane_refuses_is_invalid_with_its_field() -> None:
    with pytest.raises(errors.Invalid) as caught:
        plan.admit(cr(replicas={"min": 3, "max": 1}))
    assert "spec.replicas" in str(caught.value)


def test_a_foreign_status_reads_as_empty() -> None:
    assert plan.observed_status(cr()) == ModelDeploymentStatus()
    assert plan.observed_status({"status": {"readyReplicas": 2}}).ready_replicas == 2


# --- scale ---------------------------------------------------------------------------------------


def test_without_an_slo_the_count_is_replicas_min() -> None:
    md = plan.admit(cr(replicas={"min": 3}))
    the_scale = plan.scale(md, plan=plan.capacity_plan(md, paths=[], placed={}, live=0))
    assert (the_scale.desired, the_scale.floor, the_scale.managed) == (3, 3, False)


def test_the_slo_raises_the_floor_within_the_maximum_and_says_so() -> None:
    md = plan.admit(
        cr(
            replicas={"min": 1, "max": 2},
            slo={"requestsPerSecond": 1000, "outputTokens": 100},
            simulator={"ttftMs": 50, "itlMs": 20, "maxNumSeqs": 8},
        )
    )
    capacity = plan.capacity_plan(md, paths=[], placed={}, live=0)
    assert capacity is not None
    assert capacity.replicas > 2
    the_scale = plan.scale(md, plan=capacity)
    assert (the_scale.desired, the_scale.floor) == (2, 2)
    assert f"the SLO needs {capacity.replicas} replicas; replicas.max is 2" in the_scale.limited


def test_with_autoscaling_the_hpas_count_is_kept_between_the_floor_and_the_maximum() -> None:
    md = plan.admit(cr(replicas={"min": 2, "max": 5}, autoscaling={}))
    assert plan.scale(md, plan=None, current=4).desired == 4
    assert plan.scale(md, plan=None, current=9).desired == 5
    assert plan.scale(md, plan=None, current=1).desired == 2
    assert plan.scale(md, plan=None, current=None).desired == 2


def test_with_an_hpa_the_slo_floor_becomes_its_minimum() -> None:
    md = plan.admit(cr(replicas={"min": 1, "max": 5}, autoscaling={}))
    rendered = plan.desired(
        md, the_scale=Scale(desired=3, floor=3), options=RenderOptions(aviator_image="a:1")
    )
    objects = {o["kind"]: o for o in rendered.objects}
    assert objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
    assert "replicas" not in objects["Deployment"]["spec"]
    plain = plan.desired(
        plan.admit(cr(replicas={"min": 2})),
        the_scale=Scale(desired=4, floor=2),
        options=RenderOptions(aviator_image="a:1"),
    )
    assert {o["kind"]: o for o in plain.objects}["Deployment"]["spec"]["replicas"] == 4


# --- the fleet -----------------------------------------------------------------------------------


def rslice(node: str | None, pool: str, generation: int, devices: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "driver": "gpu.nvidia.com",
        "pool": {"name": pool, "generation": generation, "resourceSliceCount": 1},
        "devices": [
            {"name": d, "attributes": {"productName": {"string": "NVIDIA H100 80GB HBM3"}}}
            for d in devices
        ],
    }
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "spec": spec}


def claim(deployment: str | None, *devices: tuple[str, str]) -> dict[str, Any]:
    labels = {} if deployment is None else {"aviator.dev/model-deployment": deployment}
    return {
        "metadata": {"name": "c", "labels": labels},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {
                            "request": "accelerators",
                            "driver": "gpu.nvidia.com",
                            "pool": p,
                            "device": d,
                        }
                        for p, d in devices
                    ]
                }
            }
        },
    }


def test_the_fleet_takes_the_newest_pool_generation_and_node_local_devices_only() -> None:
    cluster = plan.fleet(
        resource_slices=[
            rslice("a", "a", 1, ["gpu-0", "gpu-1", "gpu-2"]),  # superseded
            rslice("a", "a", 2, ["gpu-0", "gpu-1"]),
            rslice(None, "fabric", 1, ["gpu-9"]),  # network-attached: not planned
        ],
        device_classes=[],
        resource_claims=[
            claim("chat", ("a", "gpu-0")),
            claim("other", ("a", "gpu-1")),
            claim("chat", ("gone", "gpu-0")),  # a pool no slice publishes
        ],
        deployment="chat",
    )
    [node] = cluster.nodes
    assert node["metadata"]["name"] == "a"
    assert [d["name"] for d in node["spec"]["devices"]] == [
        "gpu.nvidia.com/a/gpu-0",
        "gpu.nvidia.com/a/gpu-1",
    ]
    assert cluster.taken == {("a", "gpu.nvidia.com/a/gpu-0"), ("a", "gpu.nvidia.com/a/gpu-1")}
    assert dict(cluster.ours) == {("gpu.nvidia.com", "NVIDIA H100 80GB HBM3"): 1}


# --- what to prune -------------------------------------------------------------------------------


def owned(
    kind_index: int, name: str, *, uid: str | None = UID, labels: bool = True
) -> dict[str, Any]:
    rtype = MANAGED[kind_index]
    meta: dict[str, Any] = {"name": name, "namespace": "team-a"}
    if labels:
        meta["labels"] = {
            "app.kubernetes.io/managed-by": "aviator",
            "aviator.dev/model-deployment": "chat",
        }
    if uid is not None:
        meta["ownerReferences"] = [
            {"kind": "ModelDeployment", "name": "chat", "uid": uid, "controller": True}
        ]
    return {"apiVersion": rtype.api_version, "kind": rtype.kind, "metadata": meta}


def test_only_owned_objects_that_are_no_longer_rendered_are_pruned_last_kind_first() -> None:
    keep = [ObjectRef("apps/v1", "Deployment", "team-a", "chat")]
    observed = [
        owned(1, "chat"),  # the Deployment: kept
        owned(0, "chat-accelerators"),  # claim template: stale
        owned(4, "chat"),  # HPA: stale
        owned(4, "chat-old", uid="someone-else"),  # another owner's: kept
        owned(5, "chat-x", labels=False),  # not labelled ours: kept
        owned(5, "chat-pdb", uid=None),  # labelled ours, no owner: stale
    ]
    stale = plan.stale(namespace="team-a", name="chat", uid=UID, keep=keep, observed=observed)
    assert [(r.kind, r.name) for r in stale] == [
        ("PodDisruptionBudget", "chat-pdb"),
        ("HorizontalPodAutoscaler", "chat"),
        ("ResourceClaimTemplate", "chat-accelerators"),
    ]


@given(
    objects=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(MANAGED) - 1),
            st.sampled_from(["chat", "chat-accelerators", "x"]),
            st.sampled_from([UID, "other", None]),
            st.booleans(),
        ),
        max_size=12,
    ),
    keep_mask=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_pruning_never_touches_what_is_kept_or_not_ours(
    objects: list[tuple[int, str, str | None, bool]], keep_mask: list[bool]
) -> None:
    observed = [owned(i, n, uid=u, labels=lab) for i, n, u, lab in objects]
    keep = [
        ObjectRef(o["apiVersion"], o["kind"], "team-a", o["metadata"]["name"])
        for o, k in zip(observed, keep_mask, strict=False)
        if k
    ]
    stale = plan.stale(namespace="team-a", name="chat", uid=UID, keep=keep, observed=observed)
    assert not set(stale) & set(keep)
    for ref in stale:
        sources = [
            o for o in observed if o["metadata"]["name"] == ref.name and o["kind"] == ref.kind
        ]
        assert any(
            o["metadata"].get("labels")
            and all(r["uid"] == UID for r in o["metadata"].get("ownerReferences", []))
            for o in sources
        )
    assert len(stale) == len(set(stale))


# --- status --------------------------------------------------------------------------------------


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "generation": 2},
        "status": {"observedGeneration": 2, **status},
    }


def conditions(status: ModelDeploymentStatus) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def test_status_counts_come_from_the_deployment_and_conditions_follow() -> None:
    md = plan.admit(cr(replicas={"min": 2}))
    rolling = plan.status(
        md,
        current=ModelDeploymentStatus(),
        the_scale=Scale(desired=2, floor=2),
        deployment=deployment(replicas=3, readyReplicas=1, updatedReplicas=1),
        slices=[],
        now=NOW,
    )
    assert (rolling.replicas, rolling.ready_replicas, rolling.updated_replicas) == (3, 1, 1)
    c = conditions(rolling)
    assert (c["Available"].status, c["Progressing"].reason) == ("False", "ReplicasUpdating")
    assert c["Degraded"].status == "False"
    assert "ScalingLimited" not in c
    assert rolling.observed_generation == 4

    later = NOW + timedelta(minutes=1)
    done = plan.status(
        md,
        current=rolling,
        the_scale=Scale(desired=2, floor=2),
        deployment=deployment(replicas=2, readyReplicas=2, updatedReplicas=2),
        slices=[],
        now=later,
    )
    c2 = conditions(done)
    assert (c2["Available"].status, c2["Progressing"].reason) == ("True", "NewReplicasAvailable")
    assert c2["Available"].last_transition_time == later
    # Degraded did not change: its transition time stays.
    assert c2["Degraded"].last_transition_time == c["Degraded"].last_transition_time


def test_a_stuck_or_failing_rollout_is_reported() -> None:
    md = plan.admit(cr(replicas={"min": 1}, slo={"requestsPerSecond": 1}))
    stuck = deployment(
        replicas=1,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "chat-5d8f" has timed out progressing.'},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": "pods \"chat-5d8f-\" is forbidden: exceeded quota"},
        ],
    )  # fmt: skip
    status = plan.status(
        md,
        current=ModelDeploymentStatus(),
        the_scale=Scale(desired=1, floor=1, managed=True, limited="x"),
        deployment=stuck,
        slices=[],
        now=NOW,
    )
    c = conditions(status)
    assert (c["Progressing"].status, c["Progressing"].reason) == (
        "False",
        "ProgressDeadlineExceeded",
    )
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "ReplicaFailing")
    assert "exceeded quota" in c["Degraded"].message
    assert (c["ScalingLimited"].status, c["ScalingLimited"].message) == ("True", "x")


def endpoint_slice(*endpoints: dict[str, Any], port: str = "http") -> dict[str, Any]:
    return {"ports": [{"name": port, "port": 8000}], "endpoints": list(endpoints)}


def test_endpoints_are_the_ready_pods_of_the_slices() -> None:
    slices = [
        endpoint_slice(
            {"addresses": ["10.0.0.2"], "conditions": {"ready": True}, "targetRef": {"name": "p-b"}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False}, "targetRef": {"name": "p-c"}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
            {"addresses": ["10.0.0.5"], "targetRef": {"name": "p-a"}},  # unknown counts as ready
        ),
        endpoint_slice({"addresses": ["fd00::7"], "conditions": {"ready": True}, "targetRef": {"name": "p-d"}}),
        endpoint_slice({"addresses": ["10.0.0.9"]}, port="metrics"),  # not the serving port
    ]  # fmt: skip
    assert [(e.replica, e.url) for e in plan.endpoints(slices)] == [
        ("p-a", "http://10.0.0.5:8000"),
        ("p-b", "http://10.0.0.2:8000"),
        ("p-d", "http://[fd00::7]:8000"),
    ]


def test_a_refused_spec_says_why_without_losing_the_rest_of_the_status() -> None:
    current = ModelDeploymentStatus(ready_replicas=2, desired_replicas=2)
    status = plan.invalid_status(
        current, reason="InvalidSpec", message="spec.replicas: bad", generation=5, now=NOW
    )
    c = conditions(status)
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "InvalidSpec")
    assert c["Available"].status == "False"
    assert status.ready_replicas == 2
    assert status.observed_generation == 5


def test_a_status_patch_clears_what_the_new_status_no_longer_has() -> None:
    old = {"readyReplicas": 2, "capacity": {"replicas": 3}, "endpoints": []}
    new = {"readyReplicas": 1, "endpoints": []}
    assert status_patch(old, new) == {"capacity": None, "readyReplicas": 1, "endpoints": []}


# --- backoff and paths ---------------------------------------------------------------------------


@given(retry=st.integers(min_value=-3, max_value=10_000))
def test_backoff_doubles_up_to_the_cap(retry: int) -> None:
    delay = plan.retry_delay(retry, base_s=0.5, cap_s=30)
    assert 0.5 <= delay <= 30
    assert plan.retry_delay(retry + 1, base_s=0.5, cap_s=30) >= delay
    assert plan.retry_delay(0) == 1.0
    assert plan.retry_delay(3) == 8.0


def test_rest_paths_for_core_grouped_and_cluster_scoped_kinds() -> None:
    assert ObjectRef("v1", "Service", "ns", "chat").path() == "/api/v1/namespaces/ns/services/chat"
    md = ObjectRef("aviator.dev/v1alpha1", "ModelDeployment", "ns", "chat")
    assert md.path("status") == (
        "/apis/aviator.dev/v1alpha1/namespaces/ns/modeldeployments/chat/status"
    )
    assert (
        resource_type("apps/v1", "Deployment").path(namespace=None) == "/apis/apps/v1/deployments"
    )
    with pytest.raises(KeyError, match="Secret"):
        resource_type("v1", "Secret")


def test_cr_fixture_is_not_mutated_by_admission() -> None:
    body = cr()
    before = copy.deepcopy(body)
    plan.admit(body)
    assert body == before
