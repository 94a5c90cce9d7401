"""Placement: 1,000 replica claims over 10,000 devices (budget ≤ 2 s, DESIGN §10).

Builds a synthetic mixed fleet — by default 1,250 nodes of 8 devices in two regions: NVIDIA H100,
A100 and L40S, AMD MI300X and MI210, Intel Gaudi 3, and CPU nodes (``dra.cpu``) — with the
attributes and capacities the DRA drivers publish (productName, uuid, pcieRoot, memory, …),
admitted through the ``Node`` model so devices are in the stored wire shape; 1 % of the nodes
cordoned and 10 % of the devices already held by replicas. Then 1,000 claims: 100 deployments of
10 replicas over eight templates with ``firstAvailable`` alternatives, CEL selectors on memory and
product name, ``matchAttribute: resource.kubernetes.io/pcieRoot``, sovereignty (EU only, no NVIDIA)
and pack/spread; one template asks for what the fleet lacks, so its replicas stay Pending.

Times ``allocate`` cold (it indexes the fleet, compiles and evaluates the selectors inside the
measured call) over wire dicts and over typed ``Node`` models, and ``alternatives_report`` for the
100 deployments. Uses the real CEL module (``aviator.placement.cel``) when it exists, otherwise
Python stand-ins for the same expressions; the output says which. The CEL selectors have a
``verdict_key``, so the allocator evaluates each once per device shape (``selector_evaluations_cold``
counts the evaluations of one cold call); ``--per-device`` hides it to measure evaluating every
device (the stand-ins have none).

    .venv/bin/python bench/placement.py [--nodes 1250] [--deployments 100] [--replicas 10]
        [--runs 5] [--fake-cel] [--per-device]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import platform
import random
import re
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aviator.api.devices import Node
from aviator.api.modeldeployment import (
    AcceleratorClaim,
    DeviceConstraint,
    DeviceSubRequest,
    Sovereignty,
)
from aviator.placement.allocator import (
    Allocation,
    Claim,
    CompileSelector,
    PrepareDevice,
    Selector,
    SelectorCache,
    Unschedulable,
    allocate,
    alternatives_report,
    class_selectors,
)
from aviator.placement.deviceclasses import builtin_device_classes

NVIDIA, AMD, GAUDI, CPU = "gpu.nvidia.com", "gpu.amd.com", "gaudi.intel.com", "dra.cpu"
CPU_CLASS = "cpu"  # the class of dra.cpu devices (aviator.placement.deviceclasses)
ROOT = "resource.kubernetes.io/pcieRoot"

# (share of nodes, driver, productName, memory per device, extra attributes)
NODE_KINDS: list[tuple[float, str, str, str, dict[str, Any]]] = [
    (
        0.20,
        NVIDIA,
        "NVIDIA H100 80GB HBM3",
        "80Gi",
        {"architecture": "Hopper", "cudaComputeCapability": {"version": "9.0.0"}},
    ),
    (
        0.10,
        NVIDIA,
        "NVIDIA A100-SXM4-40GB",
        "40Gi",
        {"architecture": "Ampere", "cudaComputeCapability": {"version": "8.0.0"}},
    ),
    (
        0.10,
        NVIDIA,
        "NVIDIA L40S",
        "48Gi",
        {"architecture": "Ada Lovelace", "cudaComputeCapability": {"version": "8.9.0"}},
    ),
    (0.15, AMD, "AMD Instinct MI300X", "192Gi", {"partitionProfile": "spx_nps1"}),
    (0.05, AMD, "AMD Instinct MI210", "64Gi", {"partitionProfile": "spx_nps1"}),
    (0.15, GAUDI, "Intel Gaudi 3", "128Gi", {}),
    (0.25, CPU, "AMD EPYC 9654", "96Gi", {}),
]

MEM = "device.capacity['{d}'].memory.compareTo(quantity('{q}')) >= 0"
H100 = "device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('^.*h100.*$')"
L40S = "device.attributes['gpu.nvidia.com'].productName.lowerAscii().contains('l40s')"
HUGE = "device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity('1Ti'))"


def alt(name: str, cls: str, *selectors: str, count: int = 1) -> DeviceSubRequest:
    return DeviceSubRequest(
        name=name, device_class_name=cls, selectors=list(selectors), count=count
    )


# (template, alternatives, constraints, strategy, sovereignty)
TEMPLATES: list[
    tuple[str, list[DeviceSubRequest], list[str], Literal["pack", "spread"], Sovereignty | None]
] = [
    (
        "llama-70b",
        [
            alt("h100x2", NVIDIA, MEM.format(d=NVIDIA, q="80Gi"), count=2),
            alt("mi300x", AMD, MEM.format(d=AMD, q="128Gi")),
            alt("gaudi-x2", GAUDI, count=2),
        ],
        [ROOT],
        "pack",
        None,
    ),
    (
        "llama-8b",
        [
            alt("nvidia-40g", NVIDIA, MEM.format(d=NVIDIA, q="40Gi")),
            alt("amd", AMD),
            alt("cpu", CPU_CLASS),
        ],
        [],
        "spread",
        None,
    ),
    (
        "mixtral",
        [alt("h100x4", NVIDIA, H100, count=4), alt("mi300x-x2", AMD, count=2)],
        [ROOT],
        "pack",
        None,
    ),
    (
        "eu-chat",
        [alt("nvidia-40g", NVIDIA, MEM.format(d=NVIDIA, q="40Gi")), alt("gaudi", GAUDI)],
        [],
        "spread",
        Sovereignty(allowed_regions=["eu-west"]),
    ),
    (
        "no-nvidia",
        [
            alt("h100", NVIDIA, MEM.format(d=NVIDIA, q="80Gi")),
            alt("mi300x", AMD, MEM.format(d=AMD, q="128Gi")),
            alt("gaudi", GAUDI),
        ],
        [],
        "pack",
        Sovereignty(excluded_drivers=[NVIDIA]),
    ),
    ("embeddings", [alt("l40s", NVIDIA, L40S), alt("cpu", CPU_CLASS)], [], "spread", None),
    ("batch-cpu", [alt("cpu", CPU_CLASS, count=2)], [ROOT], "pack", None),
    ("too-big", [alt("1ti", NVIDIA, HUGE), alt("tpu", "tpu.google.com")], [], "pack", None),
]


Result = dict[str, Allocation | Unschedulable]


def build_fleet(nodes: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    bounds: list[tuple[float, tuple[str, str, str, dict[str, Any]]]] = []
    acc = 0.0
    for share, driver, product, memory, extra in NODE_KINDS:
        acc += share
        bounds.append((acc, (driver, product, memory, extra)))
    for n in range(nodes):
        position = (n + 0.5) / nodes
        driver, product, memory, extra = next(r for b, r in bounds if position <= b + 1e-9)
        devices = []
        for i in range(8):
            attributes: dict[str, Any] = {"productName": product, ROOT: f"pci0000:{i // 4:02x}"}
            attributes.update(extra)
            if driver == CPU:
                devices.append(
                    {
                        "name": f"cpu-{i}",
                        "driver": driver,
                        "attributes": {**attributes, "numaNode": i, "socket": i // 4},
                        "capacity": {"cpus": "24", "memory": memory},
                    }
                )
                continue
            attributes.update(
                {
                    "type": "gpu" if driver == NVIDIA else "amdgpu",
                    "uuid": f"GPU-{rng.getrandbits(64):016x}",
                    "index": i,
                    "driverVersion": {"version": "570.86.15"},
                    "resource.kubernetes.io/pciBusID": f"0000:{0x18 + i:02x}:00.0",
                }
            )
            devices.append(
                {
                    "name": f"{'hpu' if driver == GAUDI else 'gpu'}-{i}",
                    "driver": driver,
                    "attributes": attributes,
                    "capacity": {"memory": memory},
                }
            )
        node = {
            "metadata": {"name": f"node-{n:05d}"},
            "spec": {
                "region": "eu-west" if rng.random() < 0.5 else "us-east",
                "unschedulable": rng.random() < 0.01,
                "devices": devices,
            },
        }
        out.append(Node.model_validate(node).to_raw())  # the stored (admitted) shape
    return out


def build_claims(deployments: int, replicas: int) -> tuple[list[Claim], list[Claim]]:
    per_replica, per_deployment = [], []
    for d in range(deployments):
        name, alternatives, constraints, strategy, sovereignty = TEMPLATES[d % len(TEMPLATES)]
        accelerators = AcceleratorClaim(
            first_available=alternatives,
            constraints=[DeviceConstraint(match_attribute=c) for c in constraints],
            strategy=strategy,
        )
        key = f"ns-{d % 10}/{name}-{d}"
        per_deployment.append(Claim(key, accelerators, sovereignty))
        for r in range(replicas):
            per_replica.append(Claim(f"{key}-{r:03d}", accelerators, sovereignty, group=key))
    return per_replica, per_deployment


# --- stand-ins for the CEL module, for when it is missing -----------------------------------


@dataclass(frozen=True)
class _Verdict:
    matched: bool
    error: str | None = None


_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit or ""]


def _lookup(device: Mapping[str, Any], section: str, domain: str, name: str) -> Any:
    found = device.get(section, {}).get(name)
    if found is None and device["driver"] == domain:
        found = device.get(section, {}).get(f"{domain}/{name}")
    if found is None:
        raise KeyError(f"no such key: {name}")
    return next(iter(found.values()))


class _FakeSelector:
    def __init__(self, predicate: Callable[[Mapping[str, Any]], bool]) -> None:
        self._predicate = predicate

    def evaluate(self, device: Mapping[str, Any], /) -> _Verdict:
        try:
            return _Verdict(self._predicate(device))
        except KeyError as exc:
            return _Verdict(False, str(exc))


def fake_compile(expression: str) -> Selector:
    if m := re.fullmatch(r"device\.driver == '([^']+)'", expression):
        driver = m.group(1)
        return _FakeSelector(lambda d: d["driver"] == driver)
    if m := re.fullmatch(
        r"device\.driver == '([^']+)' && device\.attributes\['[^']+'\]\.type == '([^']+)'",
        expression,
    ):
        driver, kind = m.groups()
        return _FakeSelector(
            lambda d: d["driver"] == driver and _lookup(d, "attributes", driver, "type") == kind
        )
    if m := re.fullmatch(
        r"device\.capacity\['([^']+)'\]\.memory\.(?:compareTo\(quantity\('(\w+)'\)\) >= 0|"
        r"isGreaterThan\(quantity\('(\w+)'\)\))",
        expression,
    ):
        domain, at_least, above = m.groups()
        if at_least:
            return _FakeSelector(
                lambda d: _quantity(_lookup(d, "capacity", domain, "memory")) >= _quantity(at_least)
            )
        return _FakeSelector(
            lambda d: _quantity(_lookup(d, "capacity", domain, "memory")) > _quantity(above)
        )
    if m := re.fullmatch(
        r"device\.attributes\['([^']+)'\]\.productName\.lowerAscii\(\)\."
        r"(?:matches|contains)\('([^']+)'\)",
        expression,
    ):
        domain, pattern = m.groups()
        return _FakeSelector(
            lambda d: (
                re.search(pattern, _lookup(d, "attributes", domain, "productName").lower())
                is not None
            )
        )
    raise ValueError(f"no stand-in for {expression!r}")


def selector_compiler(force_fake: bool) -> tuple[CompileSelector, PrepareDevice | None, str]:
    if not force_fake:
        try:
            from aviator.placement import cel
        except ImportError:
            pass
        else:
            return (
                cel.compile_selector,
                cel.selector_context,
                "real CEL (aviator.placement.cel, devices prepared with selector_context)",
            )
    return fake_compile, None, "Python stand-ins for the CEL selectors (--fake-cel or no cel.py)"


class Counting:
    """Counts selector evaluations (wraps the compiler; keeps the selectors' ``verdict_key``)."""

    def __init__(self, compile_selector: CompileSelector) -> None:
        self.compile_selector = compile_selector
        self.evaluations = 0

    def __call__(self, expression: str) -> Selector:
        inner = self.compile_selector(expression)
        outer = self
        key = getattr(inner, "verdict_key", None)

        class _Counted:
            def evaluate(self, device: Mapping[str, Any], /) -> Any:
                outer.evaluations += 1
                return inner.evaluate(device)

            def verdict_key(self, device: Mapping[str, Any], /) -> Hashable | None:
                return None if key is None else key(device)

        return _Counted()


def per_device(compile_selector: CompileSelector) -> CompileSelector:
    """The same selectors without ``verdict_key``: every device evaluated itself (the allocator
    before verdicts were shared by device shape)."""

    @functools.cache
    def compile_(expression: str) -> Selector:
        inner = compile_selector(expression)

        class _PerDevice:
            def evaluate(self, device: Mapping[str, Any], /) -> Any:
                return inner.evaluate(device)

        return _PerDevice()

    return compile_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1250, help="8 devices each")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=10, help="per deployment")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fake-cel", action="store_true", help="use the stand-ins even with CEL")
    parser.add_argument(
        "--per-device",
        action="store_true",
        help="hide the selectors' verdict_key: evaluate every device, not once per device shape",
    )
    args = parser.parse_args()

    rng = random.Random(42)
    fleet = build_fleet(args.nodes, rng)
    typed = [Node.model_validate(n) for n in fleet]
    devices = [(n["metadata"]["name"], d["name"]) for n in fleet for d in n["spec"]["devices"]]
    taken = rng.sample(devices, len(devices) // 10)
    claims, deployments = build_claims(args.deployments, args.replicas)
    classes = class_selectors(builtin_device_classes())
    compile_selector, prepare, source = selector_compiler(args.fake_cel)
    if args.per_device:
        compile_selector = per_device(compile_selector)
        source += ", every device evaluated itself (--per-device)"

    def run(nodes: Any, cache: SelectorCache | None = None) -> tuple[float, Result]:
        started = time.perf_counter()
        result = allocate(
            claims,
            fleet=nodes,
            classes=classes,
            compile_selector=compile_selector,
            taken=taken,
            prepare_device=prepare,
            cache=cache,
        )
        return time.perf_counter() - started, result

    def report(cache: SelectorCache | None) -> float:
        started = time.perf_counter()
        alternatives_report(
            deployments,
            fleet=fleet,
            classes=classes,
            compile_selector=compile_selector,
            taken=taken,
            prepare_device=prepare,
            cache=cache,
        )
        return time.perf_counter() - started

    times: dict[str, list[float]] = collections.defaultdict(list)
    result: Result = {}
    for _ in range(args.runs):
        seconds, result = run(fleet)
        times["allocate, cold (wire nodes)"].append(seconds)
        times["allocate, cold (typed Node models)"].append(run(typed)[0])
        times["alternatives_report, 100 deployments, cold"].append(report(None))
        cache = SelectorCache()
        run(fleet, cache)
        times["alternatives_report after allocate, same SelectorCache"].append(report(cache))
        times["allocate again, same SelectorCache (next reconcile)"].append(run(fleet, cache)[0])

    counting = Counting(compile_selector)
    allocate(
        claims,
        fleet=fleet,
        classes=classes,
        compile_selector=counting,
        taken=taken,
        prepare_device=prepare,
    )

    placed = [r for r in result.values() if isinstance(r, Allocation)]
    pending = {k: r for k, r in result.items() if isinstance(r, Unschedulable)}
    by_request = collections.Counter(r.request for r in placed)
    first_pending = min(pending) if pending else None
    out = {
        "selectors": source,
        "machine": f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}",
        "nodes": len(fleet),
        "devices": len(devices),
        "devices_taken_before": len(taken),
        "claims": len(claims),
        "seconds (min / median)": {
            name: f"{min(values):.3f} / {statistics.median(values):.3f}"
            for name, values in times.items()
        },
        "selector_evaluations_cold": counting.evaluations,
        "allocated": len(placed),
        "devices_allocated": sum(len(r.devices) for r in placed),
        "unschedulable": len(pending),
        "allocated_by_alternative": dict(sorted(by_request.items())),
        "example_pending": {first_pending: pending[first_pending].message} if first_pending else {},
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
