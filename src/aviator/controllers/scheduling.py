"""Scheduling: giving an unscheduled Replica its devices, one decision at a time.

The allocator (``aviator.placement.allocator``) decides; this module feeds it the fleet, the device
classes and the devices already held, from the informer caches, and makes the decisions safe:

- **One at a time.** Decisions are serialized by a lock, so two concurrent reconciles can never
  pick the same free device.
- **Assumed until seen.** A decision is remembered (like the Kubernetes scheduler's "assume" cache)
  until the Replica's binding is visible in the cache, so a decision made just before the cache
  catches up is not handed out again.
- **Durable.** The binding is written into the Replica (``spec.node``/``spec.devices``), so a
  restarted plane knows every allocation from the store alone.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aviator.api.modeldeployment import (
    ExecutionPath,
    ModelDeployment,
    SimulatorOptions,
    Sovereignty,
)
from aviator.api.replica import Replica
from aviator.cache import BY_OWNER, Reflector
from aviator.placement import allocator, engines, profiles
from aviator.placement.cel import compile_selector, selector_context

DISCOVERED_LABEL = "aviator.dev/discovered"
"""Nodes carrying this label are this machine; others are declared (what-if) fleet."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What scheduling writes into a Replica's spec."""

    node: str
    devices: list[dict[str, str]]
    engine: str
    simulator: SimulatorOptions | None


@dataclass(frozen=True, slots=True)
class _Assumed:
    """A decision not yet visible in the cache."""

    node: str
    devices: frozenset[tuple[str, str]]
    owner: str
    """The uid of the replica's controlling owner (for spreading its siblings)."""


def model_class_for(model_name: str) -> profiles.ModelClass:
    """The profile class of a model from its name: ``…-70B…`` is 70B-class, anything else 8B."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model_name)
    if match and float(match.group(1)) >= 30:
        return profiles.LLAMA_70B
    return profiles.LLAMA_8B


def installed_engines() -> frozenset[str]:
    """Engines installed on this machine, as the local runtime would run them (called once, at
    plane start; nothing is imported or run): ``vllm`` and ``llama-server`` on ``PATH``, SGLang
    importable by this interpreter (the one its adapter runs). The simulator always is."""
    found = {"sim"}
    if shutil.which("vllm"):
        found.add("vllm")
    try:
        # find_spec locates a top-level package without importing it.
        if importlib.util.find_spec("sglang") is not None:
            found.add("sglang")
    except (ImportError, ValueError):  # a broken or half-installed package: not usable
        pass
    if shutil.which("llama-server"):
        found.add("llamacpp")
    return frozenset(found)


class Scheduler:
    def __init__(
        self,
        *,
        nodes: Reflector,
        device_classes: Reflector,
        replicas: Reflector,
        local_engines: Collection[str],
    ) -> None:
        self._nodes = nodes
        self._classes = device_classes
        self._replicas = replicas
        self._local_engines = frozenset(local_engines)
        self._lock = asyncio.Lock()
        self._assumed: dict[str, _Assumed] = {}
        # Verdicts (per selector and selector-relevant device value) and prepared contexts survive
        # between decisions, so a new node of a known shape costs no CEL evaluation at all
        # (bench/placement.py: 1,000 claims over 10,000 devices, cold 0.45 s, warm 0.14 s).
        self._selectors = allocator.SelectorCache()

    def _taken(self, *, exclude: str) -> set[tuple[str, str]]:
        # Prune decisions the cache now shows (or whose replica is gone), then add the rest.
        for key in list(self._assumed):
            namespace, name = key.split("/", 1)
            cached = self._replicas.get((namespace, name))
            if cached is None or (cached.get("spec") or {}).get("node"):
                del self._assumed[key]
        taken = set(allocator.taken_devices(self._replicas.cache.values()))
        for key, decision in self._assumed.items():
            if key != exclude:
                taken |= decision.devices
        return taken

    def _claim(
        self, replica: Replica, *, group_nodes: frozenset[str] = frozenset()
    ) -> allocator.Claim:
        assert replica.spec.accelerators is not None
        return allocator.Claim(
            key=f"{replica.namespace}/{replica.name}",
            accelerators=replica.spec.accelerators,
            sovereignty=self._engine_sovereignty(replica.spec.engine, replica.spec.sovereignty),
            spread_avoid=group_nodes,
        )

    def _engine_sovereignty(
        self, engine: str, sovereignty: Sovereignty | None
    ) -> Sovereignty | None:
        """``sovereignty`` plus, for a pinned engine, the fleet's drivers it does not run on (the
        compatibility matrix, by driver; attribute requirements are checked when binding)."""
        if engine in ("auto", "sim", "external"):
            return sovereignty
        drivers = {
            d.get("driver", "")
            for node in self._nodes.cache.values()
            for d in (node.get("spec") or {}).get("devices") or ()
        }
        unsupported = sorted(d for d in drivers if d and engines.support_for(engine, d) is None)
        if not unsupported:
            return sovereignty
        base = sovereignty or Sovereignty()
        excluded = sorted({*base.excluded_drivers, *unsupported})
        return base.model_copy(update={"excluded_drivers": excluded})

    def _sibling_nodes(self, replica: Replica) -> frozenset[str]:
        """Nodes the same deployment's other replicas hold (for ``strategy: spread``)."""
        owners = [ref.uid for ref in replica.metadata.owner_references if ref.controller]
        nodes = {
            (raw.get("spec") or {}).get("node", "")
            for uid in owners
            for raw in self._replicas.by_index(BY_OWNER, uid)
            if raw["metadata"]["name"] != replica.name
        }
        nodes |= {decision.node for decision in self._assumed.values() if decision.owner in owners}
        return frozenset(n for n in nodes if n)

    async def schedule(self, replica: Replica) -> Binding | allocator.Unschedulable:
        """Allocate devices to ``replica`` (which claims accelerators and has no node yet)."""
        key = f"{replica.namespace}/{replica.name}"
        async with self._lock:
            taken = self._taken(exclude=key)
            claim = self._claim(replica, group_nodes=self._sibling_nodes(replica))
            result = allocator.allocate(
                [claim],
                fleet=list(self._nodes.cache.values()),
                classes=allocator.class_selectors(self._classes.cache.values()),
                compile_selector=compile_selector,
                taken=taken,
                prepare_device=selector_context,
                cache=self._selectors,
            )[key]
            if isinstance(result, allocator.Unschedulable):
                return result
            self._assumed[key] = _Assumed(
                node=result.node,
                devices=frozenset((result.node, d.device) for d in result.devices),
                owner=next((r.uid for r in replica.metadata.owner_references if r.controller), ""),
            )
        return self._binding(replica, result)

    def forget(self, replica: Replica) -> None:
        """Drop a decision whose binding could not be written (the devices are free again)."""
        self._assumed.pop(f"{replica.namespace}/{replica.name}", None)

    def _binding(self, replica: Replica, allocation: allocator.Allocation) -> Binding:
        node = self._nodes.get(("", allocation.node)) or {}
        devices_by_name = {d["name"]: d for d in (node.get("spec") or {}).get("devices") or ()}
        first = devices_by_name.get(allocation.devices[0].device, {}) if allocation.devices else {}
        driver, attributes = first.get("driver", ""), first.get("attributes") or {}
        discovered = (node.get("metadata") or {}).get("labels", {}).get(DISCOVERED_LABEL) == "true"
        # A declared (what-if) device has nothing real to run an engine on: only the simulator.
        available = self._local_engines if discovered else frozenset({"sim"})
        engine = engines.choose_engine(replica.spec.engine, driver, attributes, available=available)
        if engine is None:
            engine = "sim" if replica.spec.engine == "auto" else replica.spec.engine
        simulator = replica.spec.simulator
        if engine == "sim" and replica.spec.engine == "auto":
            # The plane chose the simulator: make it answer like the device it was placed on.
            profile = profiles.profile_for_device(driver, attributes)
            if profile is not None:
                model_class = model_class_for(replica.spec.model.name)
                # The replica's devices are its tensor-parallel group when vLLM could use them so
                # and the model fits; otherwise the simulator takes the smallest degree that fits,
                # as if the replica had those devices.
                tp: int | None = len(allocation.devices)
                if (
                    tp not in profiles.TENSOR_PARALLEL_DEGREES
                    or tp > profile.max_tensor_parallel
                    or profiles.kv_capacity_tokens(profile, model_class, tensor_parallel=tp)
                    < profiles.BLOCK_SIZE
                ):
                    tp = None
                simulator = SimulatorOptions.model_validate(
                    {
                        # The flat numbers stay, for readers of the spec; the simulator itself
                        # runs vLLM's step loop from the profile, with vLLM's batch limit for the
                        # device (its KV cache, sized from the device, bounds the rest).
                        **profiles.sim_options(profile, model_class),
                        "max_num_seqs": profile.max_num_seqs,
                        "device_profile": profile.name,
                        "model_class": model_class.name,
                        "tensor_parallel": tp,
                    }
                )
        return Binding(
            node=allocation.node,
            devices=[d.model_dump(by_alias=True) for d in allocation.allocated_devices()],
            engine=engine,
            simulator=simulator,
        )

    def execution_paths(self, md: ModelDeployment) -> list[allocator.AlternativePath]:
        """Every execution path of ``md``'s claim, with what is free now."""
        if md.spec.accelerators is None:
            return []
        key = f"{md.namespace}/{md.name}"
        claim = allocator.Claim(
            key=key,
            accelerators=md.spec.accelerators,
            sovereignty=self._engine_sovereignty(md.spec.engine, md.spec.sovereignty),
        )
        return list(
            allocator.alternatives_report(
                [claim],
                fleet=list(self._nodes.cache.values()),
                classes=allocator.class_selectors(self._classes.cache.values()),
                compile_selector=compile_selector,
                taken=allocator.taken_devices(self._replicas.cache.values()),
                prepare_device=selector_context,
                cache=self._selectors,
            )[key]
        )

    def alternatives(self, md: ModelDeployment) -> list[ExecutionPath]:
        """Every execution path of ``md``'s claim and what fits now (for ``status.alternatives``)."""
        return execution_paths_status(self.execution_paths(md))

    def placed_paths(self, replicas: Collection[Replica]) -> Counter[tuple[str, str, str | None]]:
        """How many of ``replicas`` hold devices on each (request, driver, product) path."""
        out: Counter[tuple[str, str, str | None]] = Counter()
        for replica in replicas:
            if not replica.spec.node or not replica.spec.devices:
                continue
            first = replica.spec.devices[0]
            node = self._nodes.get(("", replica.spec.node)) or {}
            device = next(
                (
                    d
                    for d in (node.get("spec") or {}).get("devices") or ()
                    if d.get("name") == first.device
                ),
                None,
            )
            value = None if device is None else allocator.attribute_value(device, "productName")
            product = None if value is None else str(value[1])
            out[(first.request, first.driver, product)] += 1
        return out


def execution_paths_status(paths: list[allocator.AlternativePath]) -> list[ExecutionPath]:
    return [
        ExecutionPath(
            request=p.request,
            device_class=p.device_class,
            driver=p.driver,
            product=p.product,
            count=p.count,
            devices=p.devices,
            free=p.free,
            replicas=p.replicas,
            fits_now=p.free_replicas,
            engines=engines.compatible_engines(p.driver, p.attributes),
        )
        for p in paths
    ]


def binding_patch(binding: Binding) -> dict[str, Any]:
    """The spec fields scheduling sets."""
    out: dict[str, Any] = {
        "node": binding.node,
        "devices": binding.devices,
        "engine": binding.engine,
    }
    if binding.simulator is not None:
        out["simulator"] = binding.simulator.model_dump(by_alias=True)
    return out
