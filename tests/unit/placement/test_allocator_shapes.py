"""The allocator with the real CEL selectors, which evaluates each selector once per device shape.

Devices of one shape (same driver, and the same values of what a selector reads) share one
evaluation (``CompiledSelector.verdict_key``). What must not change: the result. Node facts —
region, cordon, what is already taken — are applied per device outside CEL, a selector reading
what differs between devices is evaluated per value, a device CEL cannot take gets its own error,
and the counts in Pending messages stay exact. Each test compares with the same selectors
stripped of ``verdict_key`` (every device evaluated itself) besides checking its own facts.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.api.devices import Node
from aviator.api.modeldeployment import (
    AcceleratorClaim,
    DeviceConstraint,
    DeviceSubRequest,
    Sovereignty,
)
from aviator.placement import cel
from aviator.placement.allocator import (
    Allocation,
    Claim,
    DeviceRef,
    SelectorCache,
    Unschedulable,
    Verdict,
    allocate,
    alternatives_report,
    class_selectors,
)
from aviator.placement.deviceclasses import builtin_device_classes

NVIDIA, AMD = "gpu.nvidia.com", "gpu.amd.com"
ROOT = "resource.kubernetes.io/pcieRoot"
CLASSES = class_selectors(builtin_device_classes())
NVIDIA_CLASS = CLASSES[NVIDIA][0]
MEM_80 = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0"

Result = dict[str, Allocation | Unschedulable]


class Counting:
    """``cel.compile_selector`` counting evaluations per expression; ``keyed=False`` hides
    ``verdict_key`` (every device evaluated itself)."""

    def __init__(self, *, keyed: bool = True) -> None:
        self.keyed = keyed
        self.evaluations: collections.Counter[str] = collections.Counter()
        self._selectors: dict[str, Any] = {}

    def __call__(self, expression: str) -> Any:
        if expression not in self._selectors:
            self._selectors[expression] = self._wrap(expression, cel.compile_selector(expression))
        return self._selectors[expression]

    def _wrap(self, expression: str, inner: cel.CompiledSelector) -> Any:
        evaluations = self.evaluations

        class Plain:
            def evaluate(self, device: Mapping[str, Any], /) -> Verdict:
                evaluations[expression] += 1
                return inner.evaluate(device)

        class Keyed(Plain):
            def verdict_key(self, device: Mapping[str, Any], /) -> Hashable | None:
                return inner.verdict_key(device)

        return Keyed() if self.keyed else Plain()


def gpu(
    name: str,
    *,
    uuid: str,
    product: str = "NVIDIA H100 80GB HBM3",
    memory: str = "80Gi",
    driver: str = NVIDIA,
    **extra: Any,
) -> dict[str, Any]:
    index = int(name.rsplit("-", 1)[-1])
    attributes: dict[str, Any] = {
        "type": "gpu",
        "productName": product,
        "uuid": uuid,
        "index": index,
        ROOT: f"pci{index // 4}",
        "driverVersion": {"version": "570.86.15"},
    }
    attributes.update(extra)
    return {
        "name": name,
        "driver": driver,
        "attributes": attributes,
        "capacity": {"memory": memory},
    }


def ref(name: str) -> DeviceRef:
    return DeviceRef(driver=NVIDIA, device=name)


def node(
    name: str, region: str, *devices: Mapping[str, Any], unschedulable: bool = False
) -> dict[str, Any]:
    body = {
        "metadata": {"name": name},
        "spec": {"region": region, "unschedulable": unschedulable, "devices": list(devices)},
    }
    return Node.model_validate(body).to_raw()


def claim(
    key: str,
    *selectors: str,
    count: int = 1,
    device_class: str = NVIDIA,
    sovereignty: Sovereignty | None = None,
) -> Claim:
    return Claim(
        key,
        AcceleratorClaim(device_class_name=device_class, selectors=list(selectors), count=count),
        sovereignty,
    )


def run(
    claims: Sequence[Claim],
    fleet: Sequence[Mapping[str, Any]],
    compile_selector: Counting,
    *,
    cache: SelectorCache | None = None,
) -> Result:
    return allocate(
        claims,
        fleet=fleet,
        classes=CLASSES,
        compile_selector=compile_selector,
        prepare_device=cel.selector_context,
        cache=cache,
    )


def both(claims: Sequence[Claim], fleet: Sequence[Mapping[str, Any]]) -> tuple[Result, Counting]:
    """The result with verdicts shared by shape, checked against every device evaluated itself."""
    keyed, plain = Counting(), Counting(keyed=False)
    result = run(claims, fleet, keyed)
    assert result == run(claims, fleet, plain)
    return result, keyed


def test_each_selector_is_evaluated_once_per_device_shape() -> None:
    fleet = [
        node(
            f"h100-{n}",
            "eu-west" if n % 2 else "us-east",
            *(gpu(f"gpu-{i}", uuid=f"GPU-h{n}{i}") for i in range(4)),
        )
        for n in range(4)
    ] + [
        node(
            f"l40s-{n}",
            "eu-west",
            *(
                gpu(f"gpu-{i}", uuid=f"GPU-l{n}{i}", product="NVIDIA L40S", memory="48Gi")
                for i in range(4)
            ),
        )
        for n in range(2)
    ]
    claims = [claim(f"ns/r{i}", MEM_80, count=2) for i in range(9)]
    result, counting = both(claims, fleet)
    placed = [r for r in result.values() if isinstance(r, Allocation)]
    assert len(placed) == 8
    assert {r.node for r in placed} == {f"h100-{n}" for n in range(4)}
    # 24 devices, one shape for the class selector (type == 'gpu'), two memory sizes.
    assert counting.evaluations == {NVIDIA_CLASS: 1, MEM_80: 2}
    pending = result["ns/r8"]
    assert isinstance(pending, Unschedulable)
    assert pending.message == (
        '0/24 devices available for alternative "gpu.nvidia.com" (2 of class gpu.nvidia.com '
        f"on one node): 8 not matching selector '{MEM_80}', 16 already allocated"
    )


def test_one_shape_on_three_nodes_follows_each_nodes_region_and_cordon() -> None:
    same = gpu("gpu-0", uuid="GPU-same")  # the very same device (name and uuid too) everywhere
    fleet = [
        node("eu-a", "eu-west", same),
        node("eu-b", "eu-west", same, unschedulable=True),
        node("us-a", "us-east", same),
    ]
    eu = Sovereignty(allowed_regions=["eu-west"])
    no_nvidia = Sovereignty(excluded_drivers=[NVIDIA])
    claims = [
        claim("ns/r1", MEM_80, sovereignty=eu),
        claim("ns/r2", MEM_80, sovereignty=eu),
        claim("ns/r3", MEM_80),
        claim("ns/r4", MEM_80, sovereignty=no_nvidia),
        claim("ns/r5", MEM_80),
    ]
    result, counting = both(claims, fleet)
    assert [(k, r.node) for k, r in result.items() if isinstance(r, Allocation)] == [
        ("ns/r1", "eu-a"),
        ("ns/r3", "us-a"),
    ]
    head = '0/3 devices available for alternative "gpu.nvidia.com" (1 of class gpu.nvidia.com): '
    assert [(k, r.message) for k, r in result.items() if isinstance(r, Unschedulable)] == [
        ("ns/r2", head + "1 excluded by region, 1 on unschedulable nodes, 1 already allocated"),
        ("ns/r4", head + "3 excluded by driver"),
        ("ns/r5", head + "1 on unschedulable nodes, 2 already allocated"),
    ]
    assert counting.evaluations == {NVIDIA_CLASS: 1, MEM_80: 1}


def test_a_selector_reading_what_differs_is_evaluated_per_value() -> None:
    fleet = [
        node(
            "n1",
            "eu-west",
            gpu("gpu-0", uuid="GPU-a", memory="40Gi"),
            gpu("gpu-1", uuid="GPU-b", memory="80Gi"),
            gpu("gpu-2", uuid="GPU-c", memory="96Gi"),
            gpu("gpu-3", uuid="GPU-d", memory="80Gi"),
        ),
        node("n2", "us-east", gpu("gpu-0", uuid="GPU-e", memory="80Gi")),
    ]
    by_uuid = "device.attributes['gpu.nvidia.com'].uuid == 'GPU-d'"
    whole = "size(device.attributes['gpu.nvidia.com']) > 0 && device.capacity[device.driver]"
    whole += ".memory.isGreaterThan(quantity('90Gi'))"  # reads a whole domain: no key
    claims = [claim("ns/a", by_uuid), claim("ns/b", whole), claim("ns/c", MEM_80, count=2)]
    result, counting = both(claims, fleet)
    assert result["ns/a"] == Allocation("n1", NVIDIA, (ref("gpu-3"),))
    assert result["ns/b"] == Allocation("n1", NVIDIA, (ref("gpu-2"),))
    # gpu-1 is the only 80 GiB left on n1, gpu-0 of n2 is alone: no node has two.
    pending = result["ns/c"]
    assert isinstance(pending, Unschedulable)
    assert pending.message.endswith(
        f'2/5 devices available for alternative "gpu.nvidia.com" (2 of class gpu.nvidia.com '
        f"on one node), at most 1 on any one node: 1 not matching selector '{MEM_80}', "
        "2 already allocated"
    )
    assert counting.evaluations == {NVIDIA_CLASS: 1, by_uuid: 5, whole: 5, MEM_80: 3}


def test_two_selectors_reading_one_value_keep_their_own_verdicts() -> None:
    fleet = [
        node(
            "n1",
            "eu-west",
            gpu("gpu-0", uuid="GPU-a", memory="80Gi"),
            gpu("gpu-1", uuid="GPU-b", memory="96Gi"),
        )
    ]
    mem_96 = MEM_80.replace("80Gi", "96Gi")
    result, counting = both([claim("ns/a", mem_96), claim("ns/b", MEM_80)], fleet)
    assert result == {
        "ns/a": Allocation("n1", NVIDIA, (ref("gpu-1"),)),
        "ns/b": Allocation("n1", NVIDIA, (ref("gpu-0"),)),
    }
    assert counting.evaluations == {NVIDIA_CLASS: 1, mem_96: 2, MEM_80: 2}


def test_counts_stay_exact_with_shared_verdicts_errors_and_devices_cel_cannot_take() -> None:
    hopper = {"architecture": "Hopper"}
    ampere = {"architecture": "Ampere"}
    fleet = [
        node(
            "n1",
            "eu-west",
            *(gpu(f"gpu-{i}", uuid=f"GPU-1{i}", **hopper) for i in range(3)),
            gpu("gpu-3", uuid="GPU-13"),  # no architecture
        ),
        node(
            "n2",
            "eu-west",
            *(gpu(f"gpu-{i}", uuid=f"GPU-2{i}", **ampere) for i in range(2)),
            gpu("gpu-2", uuid="GPU-22"),
        ),
    ]
    blackwell = "device.attributes['gpu.nvidia.com'].architecture == 'Blackwell'"
    result, counting = both([claim("ns/r", blackwell)], fleet)
    [pending] = result.values()
    assert isinstance(pending, Unschedulable)
    assert pending.message == (
        '0/7 devices available for alternative "gpu.nvidia.com" (1 of class gpu.nvidia.com): '
        f"5 not matching selector '{blackwell}', 2 failing selector '{blackwell}' "
        "(missing attribute gpu.nvidia.com/architecture)"
    )
    assert counting.evaluations == {NVIDIA_CLASS: 1, blackwell: 3}

    # Devices the CEL module cannot take (not admitted: a stored fleet never has them) are
    # excluded each with its own error, naming it; the others still share their verdicts.
    amd = [gpu(f"gpu-{i}", uuid=f"GPU-a{i}", driver=AMD) for i in range(4)]
    broken = [
        {**amd[2], "attributes": {**amd[2]["attributes"], "index": {"int": "two"}}},
        {**amd[3], "attributes": {**amd[3]["attributes"], "index": {"float": 3.0}}},
    ]
    wire = node("a1", "eu-west", *amd[:2])
    wire["spec"]["devices"] += broken
    amd_memory = "device.capacity['gpu.amd.com'].memory.compareTo(quantity('96Gi')) >= 0"
    result, counting = both([claim("ns/r", amd_memory, device_class=AMD)], [wire])
    [pending] = result.values()
    assert isinstance(pending, Unschedulable)
    assert pending.message.startswith(
        '0/4 devices available for alternative "gpu.amd.com" (1 of class gpu.amd.com): '
        f"2 not matching selector '{amd_memory}', 1 failing selector '{amd_memory}' "
        "(device not in the DRA shape: device 'gpu-2': attribute 'index' must be one of "
    )
    [(_, errors)] = [(c.request, c.reasons[1:]) for c in pending.counts]
    assert [(reason.split("DRA shape: ")[1][:16], n) for reason, n in errors] == [
        ("device 'gpu-2': ", 1),
        ("device 'gpu-3': ", 1),
    ]
    assert counting.evaluations == {amd_memory: 1}


def test_a_device_joining_in_a_known_shape_is_prepared_but_not_evaluated() -> None:
    counting, cache = Counting(), SelectorCache()
    first = node("n1", "eu-west", *(gpu(f"gpu-{i}", uuid=f"GPU-1{i}") for i in range(2)))
    claims = [claim("ns/r", MEM_80, count=2)]
    assert run(claims, [first], counting, cache=cache)["ns/r"] == Allocation(
        "n1", NVIDIA, (ref("gpu-0"), ref("gpu-1"))
    )
    assert counting.evaluations == {NVIDIA_CLASS: 1, MEM_80: 1}

    joined = node("n0", "eu-west", *(gpu(f"gpu-{i}", uuid=f"GPU-0{i}") for i in range(2)))
    smaller = node(
        "n2", "eu-west", *(gpu(f"gpu-{i}", uuid=f"GPU-2{i}", memory="40Gi") for i in range(2))
    )
    result = run(claims, [first, joined, smaller], counting, cache=cache)
    assert result["ns/r"] == Allocation("n0", NVIDIA, (ref("gpu-0"), ref("gpu-1")))
    # n0 is of a known shape; only n2's memory is new.
    assert counting.evaluations == {NVIDIA_CLASS: 1, MEM_80: 2}


# --- the property: sharing verdicts changes nothing ------------------------------------------

SHAPES = (
    # (driver, productName, memory, extra attributes)
    (NVIDIA, "NVIDIA H100 80GB HBM3", "80Gi", {"architecture": "Hopper"}),
    (NVIDIA, "NVIDIA H100 80GB HBM3", "81920Mi", {"architecture": "Hopper"}),
    (NVIDIA, "NVIDIA A100-SXM4-40GB", "40Gi", {"architecture": "Ampere"}),
    (NVIDIA, "NVIDIA L40S", "48Gi", {}),
    (NVIDIA, "NVIDIA L40S", "48Gi", {"type": "vgpu"}),
    (AMD, "AMD Instinct MI300X", "192Gi", {}),
    (AMD, "AMD Instinct MI210", "64Gi", {"partitionProfile": "spx_nps1"}),
)
SELECTORS = (
    MEM_80,
    "device.capacity[device.driver].memory.compareTo(quantity('64Gi')) >= 0",
    "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'",
    "device.attributes[device.driver].productName.lowerAscii().contains('mi')",
    "device.attributes['gpu.nvidia.com'].uuid.endsWith('1')",
    "device.attributes[device.driver].index % 2 == 0",
    "size(device.attributes[device.driver]) > 6",
    "'architecture' in device.attributes['gpu.nvidia.com']",
)

nodes_strategy = st.lists(
    st.tuples(
        st.sampled_from(("eu-west", "us-east")),
        st.sampled_from((False, False, False, True)),  # cordoned
        st.lists(st.integers(0, len(SHAPES) - 1), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=5,
)
alternative_strategy = st.tuples(
    st.sampled_from((NVIDIA, AMD)),
    st.lists(st.sampled_from(SELECTORS), max_size=2),
    st.integers(1, 3),
)
claims_strategy = st.lists(
    st.tuples(
        st.lists(alternative_strategy, min_size=1, max_size=2),
        st.sampled_from(((), (ROOT,), ("productName",))),
        st.sampled_from(("pack", "spread")),
        st.sampled_from(
            (None, Sovereignty(allowed_regions=["eu-west"]), Sovereignty(excluded_drivers=[AMD]))
        ),
    ),
    min_size=1,
    max_size=6,
)


def build_fleet(rows: list[tuple[str, bool, list[int]]]) -> list[dict[str, Any]]:
    fleet = []
    for n, (region, cordoned, shapes) in enumerate(rows):
        devices = []
        for i, shape in enumerate(shapes):
            driver, product, memory, extra = SHAPES[shape]
            devices.append(
                gpu(
                    f"gpu-{i}",
                    uuid=f"GPU-{n}{i}",
                    product=product,
                    memory=memory,
                    driver=driver,
                    **extra,
                )
            )
        fleet.append(node(f"node-{n}", region, *devices, unschedulable=cordoned))
    return fleet


def build_claims(rows: list[Any]) -> list[Claim]:
    out = []
    for k, (alternatives, constraints, strategy, sovereignty) in enumerate(rows):
        accelerators = AcceleratorClaim(
            first_available=[
                DeviceSubRequest(
                    name=f"alt-{i}", device_class_name=cls, selectors=selectors, count=count
                )
                for i, (cls, selectors, count) in enumerate(alternatives)
            ],
            constraints=[DeviceConstraint(match_attribute=c) for c in constraints],
            strategy=strategy,
        )
        out.append(Claim(f"ns/r{k}", accelerators, sovereignty, group="g"))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes_strategy, claims_strategy)
def test_sharing_verdicts_by_shape_changes_no_result(
    node_rows: list[tuple[str, bool, list[int]]], claim_rows: list[Any]
) -> None:
    fleet, claims = build_fleet(node_rows), build_claims(claim_rows)
    keyed, plain = Counting(), Counting(keyed=False)
    shared = run(claims, fleet, keyed)
    assert shared == run(claims, fleet, plain)
    assert sum(keyed.evaluations.values()) <= sum(plain.evaluations.values())

    def report(compile_selector: Callable[[str], Any]) -> Any:
        return alternatives_report(
            claims,
            fleet=fleet,
            classes=CLASSES,
            compile_selector=compile_selector,
            prepare_device=cel.selector_context,
        )

    assert report(Counting()) == report(Counting(keyed=False))
