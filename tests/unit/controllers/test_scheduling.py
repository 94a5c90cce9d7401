"""Scheduling glue: serialized decisions, assumed allocations, engine and profile choice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.unit.listwatch import Static

from aviator.api import admission, kinds
from aviator.api.replica import Replica
from aviator.cache import BY_OWNER, Reflector, owner_uids
from aviator.controllers import plans
from aviator.controllers.scheduling import Scheduler, binding_patch, model_class_for
from aviator.placement import profiles
from aviator.placement.allocator import Unschedulable
from aviator.placement.deviceclasses import builtin_device_classes


def h100_node(name: str, gpus: int, *, discovered: bool = False) -> dict[str, Any]:
    devices = [
        {"name": f"gpu-{i}", "driver": "gpu.nvidia.com",
         "attributes": {"type": "gpu", "productName": "NVIDIA H100 80GB HBM3",
                        "cudaComputeCapability": {"version": "9.0.0"}},
         "capacity": {"memory": "80Gi"}}
        for i in range(gpus)
    ]  # fmt: skip
    labels = {"aviator.dev/discovered": "true"} if discovered else {}
    return admission.admit(
        {"metadata": {"name": name, "labels": labels}, "spec": {"devices": devices}},
        kind=kinds.NODE,
        namespace=None,
    )


def replicas_for(
    count: int, *, model: str = "org/Llama-3.1-8B", engine: str = "auto"
) -> list[Replica]:
    raw = admission.admit(
        {"metadata": {"name": "chat"},
         "spec": {"model": {"name": model}, "engine": engine, "replicas": count,
                  "accelerators": {"deviceClassName": "gpu.nvidia.com"}}},
        kind=kinds.MODEL_DEPLOYMENT, namespace="default",
    )  # fmt: skip
    raw["metadata"].update(uid="uid-1", generation=1)
    from aviator.api.modeldeployment import ModelDeployment

    return list(plans.plan_replicas(ModelDeployment.from_raw(raw), []).create)


async def scheduler_for(
    nodes: list[dict[str, Any]], replicas: list[Replica], *, local: frozenset[str]
) -> Scheduler:
    reflectors = {
        "nodes": Reflector(source=Static(nodes), kind=kinds.NODE, on_event=lambda t, o: None),
        "classes": Reflector(
            source=Static(builtin_device_classes()), kind=kinds.DEVICE_CLASS, on_event=lambda t, o: None
        ),
        "replicas": Reflector(source=Static([r.to_raw() for r in replicas]), kind=kinds.REPLICA,
                              on_event=lambda t, o: None, indexers={BY_OWNER: owner_uids}),
    }  # fmt: skip
    tasks = [asyncio.create_task(r.run()) for r in reflectors.values()]
    await asyncio.gather(*(r.synced.wait() for r in reflectors.values()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return Scheduler(
        nodes=reflectors["nodes"], device_classes=reflectors["classes"], replicas=reflectors["replicas"],
        local_engines=local,
    )  # fmt: skip


async def test_concurrent_decisions_never_share_a_device_until_the_cache_catches_up() -> None:
    replicas = replicas_for(3)
    scheduler = await scheduler_for([h100_node("a", 2)], replicas, local=frozenset({"sim"}))
    results = await asyncio.gather(*(scheduler.schedule(r) for r in replicas))
    placed = [r for r in results if not isinstance(r, Unschedulable)]
    assert len(placed) == 2
    devices = [d["device"] for b in placed for d in b.devices]  # type: ignore[union-attr]
    assert sorted(devices) == ["gpu-0", "gpu-1"]
    [refused] = [r for r in results if isinstance(r, Unschedulable)]
    assert "0/2 devices available" in refused.message
    # A binding that could not be written is forgotten: its device is free again.
    first = next(
        r for r, res in zip(replicas, results, strict=True) if not isinstance(res, Unschedulable)
    )
    scheduler.forget(first)
    again = await scheduler.schedule(replicas[2])
    assert not isinstance(again, Unschedulable)


async def test_auto_on_a_declared_device_runs_the_simulator_with_that_device_profile() -> None:
    [replica] = replicas_for(1, model="org/Llama-3.1-70B")
    scheduler = await scheduler_for(
        [h100_node("a", 1)], [replica], local=frozenset({"sim", "vllm"})
    )
    binding = await scheduler.schedule(replica)
    assert not isinstance(binding, Unschedulable)
    assert binding.engine == "sim"
    expected = profiles.sim_options(
        profiles.profile_for("NVIDIA H100 80GB HBM3"), profiles.LLAMA_70B
    )  # type: ignore[arg-type]
    assert binding.simulator is not None and binding.simulator.itl_ms == pytest.approx(
        expected["itl_ms"]
    )
    patch = binding_patch(binding)
    assert patch["node"] == "a" and patch["devices"][0]["device"] == "gpu-0"


async def test_the_simulator_on_a_declared_device_runs_that_device_profile() -> None:
    for model, tp in (("org/Llama-3.1-8B", 1), ("org/Llama-3.1-70B", None)):
        [replica] = replicas_for(1, model=model)
        scheduler = await scheduler_for([h100_node("a", 1)], [replica], local=frozenset({"sim"}))
        binding = await scheduler.schedule(replica)
        assert not isinstance(binding, Unschedulable) and binding.simulator is not None
        options = binding.simulator
        assert (options.device_profile, options.tensor_parallel) == ("h100-sxm-80gb", tp)
        assert options.model_class == model_class_for(model).name
        assert options.max_num_seqs == profiles.PROFILES["h100-sxm-80gb"].max_num_seqs
        # 70B BF16 does not fit one H100: the simulator picks the degree that does.
        assert binding_patch(binding)["simulator"]["deviceProfile"] == "h100-sxm-80gb"


async def test_a_discovered_device_runs_a_real_engine_when_one_is_installed() -> None:
    [replica] = replicas_for(1)
    scheduler = await scheduler_for(
        [h100_node("here", 1, discovered=True)], [replica], local=frozenset({"sim", "vllm"})
    )
    binding = await scheduler.schedule(replica)
    assert not isinstance(binding, Unschedulable) and binding.engine == "vllm"


def test_model_class_from_the_name() -> None:
    assert model_class_for("meta-llama/Llama-3.1-70B-Instruct") is profiles.LLAMA_70B
    assert model_class_for("meta-llama/Llama-3.1-8B-Instruct") is profiles.LLAMA_8B
    assert model_class_for("mystery") is profiles.LLAMA_8B


def _claiming(name: str, uid: str, accelerators: dict[str, Any], **spec: Any) -> Replica:
    from aviator.api.modeldeployment import ModelDeployment

    raw = admission.admit(
        {"metadata": {"name": name},
         "spec": {"model": {"name": "m"}, "accelerators": accelerators, **spec}},
        kind=kinds.MODEL_DEPLOYMENT, namespace="default",
    )  # fmt: skip
    raw["metadata"].update(uid=uid, generation=1)
    return plans.plan_replicas(ModelDeployment.from_raw(raw), []).create[0]


async def test_spread_avoids_only_the_nodes_of_its_own_deployment() -> None:
    node_a = h100_node("a", 3)
    node_a["spec"]["region"] = "eu"
    node_b = h100_node("b", 1)
    node_b["spec"]["region"] = "us"
    # "chat-2" shares a name prefix with "chat"; its pending decision must not push chat away.
    other = _claiming(
        "chat-2",
        "uid-2",
        {"deviceClassName": "gpu.nvidia.com"},
        sovereignty={"allowedRegions": ["eu"]},
    )
    mine = _claiming("chat", "uid-1", {"deviceClassName": "gpu.nvidia.com", "strategy": "spread"})
    scheduler = await scheduler_for([node_a, node_b], [other, mine], local=frozenset({"sim"}))
    first = await scheduler.schedule(other)
    assert not isinstance(first, Unschedulable) and first.node == "a"
    second = await scheduler.schedule(mine)
    assert not isinstance(second, Unschedulable)
    assert second.node == "a", (
        "no sibling holds a node, so spread takes the node with most free devices"
    )


def gaudi_node(name: str, devices: int) -> dict[str, Any]:
    spec = [{"name": f"hl-{i}", "driver": "gaudi.intel.com",
             "attributes": {"productName": "Intel Gaudi 3"}, "capacity": {"memory": "128Gi"}}
            for i in range(devices)]  # fmt: skip
    return admission.admit(
        {"metadata": {"name": name}, "spec": {"devices": spec}}, kind=kinds.NODE, namespace=None
    )


async def test_a_pinned_engine_is_only_placed_where_the_matrix_lets_it_run() -> None:
    from aviator.api.modeldeployment import ModelDeployment

    def deployment(engine: str) -> ModelDeployment:
        raw = admission.admit(
            {"metadata": {"name": f"chat-{engine}"},
             "spec": {"model": {"name": "org/Llama-3.1-8B"}, "engine": engine,
                      "accelerators": {"firstAvailable": [{"deviceClassName": "gaudi.intel.com"},
                                                          {"deviceClassName": "gpu.nvidia.com"}]}}},
            kind=kinds.MODEL_DEPLOYMENT, namespace="default",
        )  # fmt: skip
        raw["metadata"].update(uid=f"uid-{engine}", generation=1)
        return ModelDeployment.from_raw(raw)

    nodes = [gaudi_node("g", 2), h100_node("n", 2)]
    # SGLang has no Gaudi backend: the preferred Gaudi alternative is skipped.
    sglang = deployment("sglang")
    [replica] = plans.plan_replicas(sglang, []).create
    scheduler = await scheduler_for(nodes, [replica], local=frozenset({"sim", "sglang"}))
    binding = await scheduler.schedule(replica)
    assert not isinstance(binding, Unschedulable)
    assert (binding.node, binding.engine) == ("n", "sglang")
    assert [p.driver for p in scheduler.alternatives(sglang)] == ["gpu.nvidia.com"]
    # vLLM runs on both: the preferred alternative wins.
    vllm = deployment("vllm")
    [replica] = plans.plan_replicas(vllm, []).create
    scheduler = await scheduler_for(nodes, [replica], local=frozenset({"sim", "vllm"}))
    binding = await scheduler.schedule(replica)
    assert not isinstance(binding, Unschedulable) and binding.node == "g"
