"""One core, two homes: for the same ModelDeployment the embedded plane's controller and the
operator decide the same replica count and capacity plan, and run the same engine command line.

The embedded side is the real ``ModelDeploymentReconciler`` over a SQLite store and a fleet of
Nodes; the operator side is :mod:`aviator.operator.plan` over the same devices published as
``resource.k8s.io/v1`` ResourceSlices."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.listwatch import Static

from aviator.api import admission, kinds
from aviator.api.modeldeployment import ModelDeployment
from aviator.api.replica import Replica
from aviator.cache import BY_OWNER, Reflector, owner_uids
from aviator.controllers.load import LoadReader
from aviator.controllers.modeldeployment import ModelDeploymentReconciler
from aviator.controllers.scheduling import Scheduler
from aviator.k8s.render import ENGINE_PORT, RenderOptions
from aviator.operator import plan
from aviator.placement.deviceclasses import builtin_device_classes
from aviator.runtime.engines import for_engine
from aviator.settings import StoreSettings
from aviator.store.sqlite import SqliteStore

NS = "team-a"


def h100_node(name: str, gpus: int) -> dict[str, Any]:
    devices = [
        {
            "name": f"gpu-{i}",
            "driver": "gpu.nvidia.com",
            "attributes": {"type": "gpu", "productName": "NVIDIA H100 80GB HBM3"},
            "capacity": {"memory": "80Gi"},
        }
        for i in range(gpus)
    ]
    return admission.admit(
        {"metadata": {"name": name}, "spec": {"devices": devices}},
        kind=kinds.NODE,
        namespace=None,
    )


def resource_slice(node: dict[str, Any]) -> dict[str, Any]:
    """The same devices as a DRA driver publishes them for the node."""
    name = node["metadata"]["name"]
    devices = node["spec"]["devices"]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{name}-gpu.nvidia.com"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": name,
            "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {"name": d["name"], "attributes": d["attributes"], "capacity": d["capacity"]}
                for d in devices
            ],
        },
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "db.sqlite", settings=StoreSettings())
    yield s
    await s.close()


async def embedded(
    store: SqliteStore, body: dict[str, Any], nodes: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[Replica]]:
    """The embedded plane's first reconcile of ``body``: its status and the Replicas it made."""
    created = await store.create(
        kinds.MODEL_DEPLOYMENT, admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace=NS)
    )
    name = created["metadata"]["name"]
    reflectors = {
        "deployments": Reflector(
            source=store, kind=kinds.MODEL_DEPLOYMENT, on_event=lambda _t, _o: None
        ),
        "replicas": Reflector(
            source=store,
            kind=kinds.REPLICA,
            on_event=lambda _t, _o: None,
            indexers={BY_OWNER: owner_uids},
        ),
        "nodes": Reflector(source=Static(nodes), kind=kinds.NODE, on_event=lambda _t, _o: None),
        "classes": Reflector(
            source=Static(builtin_device_classes()),
            kind=kinds.DEVICE_CLASS,
            on_event=lambda _t, _o: None,
        ),
    }
    tasks = [asyncio.create_task(r.run()) for r in reflectors.values()]
    load = LoadReader()
    try:
        await asyncio.wait_for(asyncio.gather(*(r.synced.wait() for r in reflectors.values())), 5)
        reconciler = ModelDeploymentReconciler(
            store=store,
            deployments=reflectors["deployments"],
            replicas=reflectors["replicas"],
            scheduler=Scheduler(
                nodes=reflectors["nodes"],
                device_classes=reflectors["classes"],
                replicas=reflectors["replicas"],
                local_engines=frozenset({"sim", "vllm"}),
            ),
            load=load,
        )
        await reconciler.reconcile((NS, name))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await load.aclose()
    status = (await store.get(kinds.MODEL_DEPLOYMENT, NS, name))["status"]
    replicas, _ = await store.list(kinds.REPLICA, namespace=NS)
    return status, [Replica.from_raw(r) for r in replicas]


def operator_side(
    body: dict[str, Any], nodes: list[dict[str, Any]]
) -> tuple[ModelDeployment, Any, dict[str, dict[str, Any]]]:
    """What the operator decides for the CR ``body`` in a cluster with ``nodes``' devices."""
    md = plan.admit(body)
    cluster = plan.fleet(
        resource_slices=[resource_slice(n) for n in nodes],
        device_classes=builtin_device_classes(),
    )
    capacity = plan.capacity_plan(
        md, paths=plan.execution_paths(md, cluster), placed=cluster.ours, live=0
    )
    the_scale = plan.scale(md, plan=capacity)
    rendered = plan.desired(md, the_scale=the_scale, options=RenderOptions(aviator_image="a:1"))
    return md, the_scale, {o["kind"]: o for o in rendered.objects}


def replicas_of(objects: dict[str, dict[str, Any]]) -> int:
    """How many replicas the cluster starts with: the Deployment's count, or with an HPA its
    minimum (the embedded autoscaler likewise starts from the floor)."""
    if "HorizontalPodAutoscaler" in objects:
        assert "replicas" not in objects["Deployment"]["spec"]  # the HPA's to set
        return int(objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"])
    return int(objects["Deployment"]["spec"]["replicas"])


def body(spec: dict[str, Any], name: str = "chat") -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"model": {"name": "qwen", "source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}, **spec},
    }


def command(deployment: dict[str, Any]) -> list[str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return list(container.get("command", [])) + list(container.get("args", []))


@pytest.mark.parametrize(
    ("slo", "replicas"),
    [
        ({"requestsPerSecond": 40, "outputTokens": 100, "ttftP90Ms": 500}, {"min": 1, "max": 8}),
        ({"requestsPerSecond": 400, "outputTokens": 200}, {"min": 1, "max": 3}),
        ({"requestsPerSecond": 5}, {"min": 2, "max": 4}),
        ({"requestsPerSecond": 10, "ttftP90Ms": 10}, {"min": 1, "max": 2}),
    ],
)
async def test_simulated_deployments_get_the_same_plan_and_command(
    store: SqliteStore, slo: dict[str, Any], replicas: dict[str, Any]
) -> None:
    spec = {
        "replicas": replicas,
        "slo": slo,
        "engineArgs": ["--max-model-len", "4096"],
        "simulator": {"ttftMs": 50, "itlMs": 20},
    }
    status, made = await embedded(store, body(spec), nodes=[])
    _, the_scale, objects = operator_side(body(spec), nodes=[])

    assert the_scale.desired == status["desiredReplicas"] == len(made)
    assert replicas_of(objects) == status["desiredReplicas"]
    deployment = objects["Deployment"]
    assert the_scale.capacity is not None
    assert (
        the_scale.capacity.model_dump(mode="json", by_alias=True, exclude_none=True)
        == status["capacity"]
    )
    # The same adapter builds both command lines; only the interpreter's path differs.
    replica = made[0]
    argv = for_engine(replica.spec.engine).argv(replica, host="0.0.0.0", port=ENGINE_PORT)
    assert argv is not None
    assert command(deployment) == ["python3" if a == sys.executable else a for a in argv]


@pytest.mark.parametrize("rps", [3.0, 30.0, 300.0])
async def test_deployments_on_devices_get_the_same_capacity_plan(
    store: SqliteStore, rps: float
) -> None:
    nodes = [h100_node("a", 4), h100_node("b", 2)]
    spec = {
        "model": {"name": "org/Llama-3.1-8B"},
        "replicas": {"min": 1, "max": 6},
        "slo": {"requestsPerSecond": rps, "ttftP90Ms": 800},
        "accelerators": {"deviceClassName": "gpu.nvidia.com", "count": 1},
    }
    status, made = await embedded(store, body(spec), nodes=nodes)
    _, the_scale, objects = operator_side(body(spec), nodes=nodes)

    assert the_scale.capacity is not None
    assert (
        the_scale.capacity.model_dump(mode="json", by_alias=True, exclude_none=True)
        == status["capacity"]
    )
    assert the_scale.desired == status["desiredReplicas"] == len(made)
    assert replicas_of(objects) == status["desiredReplicas"]
