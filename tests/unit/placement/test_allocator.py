"""The allocator, against fake selectors and a reference model written the slow, obvious way.

The fake selectors are Python predicates named by CEL-like text; the reference model below
(``qualifies``, ``first_reason``, ``node_groups``) re-derives from the same predicates what the
allocator must decide, so the properties compare the fast path with a brute-force one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.api.devices import Node
from aviator.api.modeldeployment import (
    AcceleratorClaim,
    DeviceConstraint,
    DeviceSubRequest,
    Sovereignty,
)
from aviator.api.replica import Replica
from aviator.placement.allocator import (
    Allocation,
    AlternativeCounts,
    Claim,
    DeviceRef,
    SelectorCache,
    Unschedulable,
    allocate,
    alternatives_report,
    attribute_value,
    class_selectors,
    taken_devices,
)

# --- fake selectors --------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeVerdict:
    matched: bool
    error: str | None = None


@dataclass(frozen=True)
class FakeSelector:
    predicate: Callable[[Mapping[str, Any]], FakeVerdict]

    def evaluate(self, device: Mapping[str, Any], /) -> FakeVerdict:
        return self.predicate(device)


GI = 1024**3


def memory(device: Mapping[str, Any]) -> int | None:
    raw = device.get("capacity", {}).get("memory")
    if raw is None:
        return None
    text = raw["value"]
    assert text.endswith("Gi"), text
    return int(text[:-2]) * GI


def product(device: Mapping[str, Any]) -> str | None:
    raw = device.get("attributes", {}).get("productName")
    return None if raw is None else str(raw["string"])


def driver_is(name: str) -> Callable[[Mapping[str, Any]], FakeVerdict]:
    return lambda d: FakeVerdict(d["driver"] == name)


def memory_at_least(gib: int) -> Callable[[Mapping[str, Any]], FakeVerdict]:
    def check(device: Mapping[str, Any]) -> FakeVerdict:
        found = memory(device)
        if found is None:
            return FakeVerdict(False, "no such key: memory")
        return FakeVerdict(found >= gib * GI)

    return check


def product_starts(prefix: str) -> Callable[[Mapping[str, Any]], FakeVerdict]:
    def check(device: Mapping[str, Any]) -> FakeVerdict:
        found = product(device)
        if found is None:
            return FakeVerdict(False, "no such key: productName")
        return FakeVerdict(found.startswith(prefix))

    return check


def c_with_memory(device: Mapping[str, Any]) -> FakeVerdict:
    # Like CEL's `device.driver == 'c.example.com' && <memory check>`: false for another driver.
    if device["driver"] != "c.example.com":
        return FakeVerdict(False)
    return memory_at_least(16)(device)


MEM_80 = "device.capacity['gpu'].memory.compareTo(quantity('80Gi')) >= 0"
MEM_40 = "device.capacity['gpu'].memory.compareTo(quantity('40Gi')) >= 0"
PREDICATES: dict[str, Callable[[Mapping[str, Any]], FakeVerdict]] = {
    "true": lambda d: FakeVerdict(True),
    "device.driver == 'a.example.com'": driver_is("a.example.com"),
    "device.driver == 'b.example.com'": driver_is("b.example.com"),
    "device.driver == 'c.example.com' && memory >= 16Gi": c_with_memory,
    "device.driver != 'c.example.com'": lambda d: FakeVerdict(d["driver"] != "c.example.com"),
    MEM_80: memory_at_least(80),
    MEM_40: memory_at_least(40),
    "productName.startsWith('X')": product_starts("X"),
    "productName.startsWith('X1')": product_starts("X1"),
}
BROKEN = "device.attributes[["
"""Does not compile: every device fails it, with the compile error in the message."""

CLASSES: dict[str, tuple[str, ...]] = {
    "A": ("device.driver == 'a.example.com'",),
    "B": ("device.driver == 'b.example.com'",),
    "C": ("device.driver == 'c.example.com' && memory >= 16Gi",),
    "AB": ("device.driver != 'c.example.com'", "true"),
    "ANY": ("true",),
}


def fake_compile(expression: str) -> FakeSelector:
    if expression not in PREDICATES:
        raise ValueError(f"syntax error in {expression!r}")
    return FakeSelector(PREDICATES[expression])


# --- the reference model ---------------------------------------------------------------------

ROOT = "resource.kubernetes.io/pcieRoot"


def ref_attribute(device: Mapping[str, Any], name: str) -> Any:
    raw = device.get("attributes", {}).get(name)
    return None if raw is None else next(iter(raw.values()))


def matches(expression: str, device: Mapping[str, Any]) -> bool:
    return expression in PREDICATES and PREDICATES[expression](device).matched


def first_reason(
    node: Mapping[str, Any],
    device: Mapping[str, Any],
    alternative: DeviceSubRequest,
    claim: Claim,
    used: set[tuple[str, str]],
) -> str:
    """The category of the first reason that excludes the device, or ``available``."""
    sovereignty = claim.sovereignty or Sovereignty()
    spec = node["spec"]
    if sovereignty.allowed_regions and spec["region"] not in sovereignty.allowed_regions:
        return "region"
    if device["driver"] in sovereignty.excluded_drivers:
        return "driver"
    class_expressions = CLASSES.get(alternative.device_class_name)
    if class_expressions is None or not all(matches(e, device) for e in class_expressions):
        return "class"
    if not all(matches(e, device) for e in alternative.selectors):
        return "selector"
    for constraint in claim.accelerators.constraints:
        if ref_attribute(device, constraint.match_attribute) is None:
            return "attribute"
    if spec.get("unschedulable"):
        return "cordoned"
    if (node["metadata"]["name"], device["name"]) in used:
        return "allocated"
    return "available"


def node_groups(
    fleet: Sequence[Mapping[str, Any]],
    alternative: DeviceSubRequest,
    claim: Claim,
    used: set[tuple[str, str]],
) -> dict[str, dict[tuple[Any, ...], list[str]]]:
    """Node → matchAttribute values → free qualifying device names (sorted), brute force."""
    out: dict[str, dict[tuple[Any, ...], list[str]]] = {}
    for node in fleet:
        for device in node["spec"]["devices"]:
            if first_reason(node, device, alternative, claim, used) != "available":
                continue
            values = tuple(
                ref_attribute(device, c.match_attribute) for c in claim.accelerators.constraints
            )
            groups = out.setdefault(node["metadata"]["name"], {})
            groups.setdefault(values, []).append(device["name"])
    for groups in out.values():
        for names in groups.values():
            names.sort()
    return out


def caps(groups: dict[str, dict[tuple[Any, ...], list[str]]], count: int) -> dict[str, int]:
    """Nodes that fit ``count`` devices → the most free devices one group there offers."""
    out = {}
    for node, by_value in groups.items():
        cap = max(len(names) for names in by_value.values())
        if cap >= count:
            out[node] = cap
    return out


def category(reason: str) -> str:
    for prefix, name in (
        ("excluded by region", "region"),
        ("excluded by driver", "driver"),
        ("not in device class", "class"),
        ("not matching selector", "selector"),
        ("failing selector", "selector"),
        ("missing attribute", "attribute"),
        ("on unschedulable nodes", "cordoned"),
        ("already allocated", "allocated"),
    ):
        if reason.startswith(prefix):
            return name
    raise AssertionError(f"unknown reason {reason!r}")


# --- strategies ------------------------------------------------------------------------------
#
# Hypothesis spends ~0.1 ms per draw, so each record (a node's traits, a device, an alternative,
# a claim's options) is ONE integer draw decoded into its fields; strategies are module constants.

DRIVERS = ("a.example.com", "b.example.com", "c.example.com")
NODE_NAMES = tuple(f"node-{c}" for c in "abcdef")
SAME = "same"
"""A device field like its node's: nodes are mostly homogeneous, as real ones are."""
NO = (False,) * 7
"""Padding that makes a ``True`` after it rare. The first choice of each field is the common
one: hypothesis favours small integers, and shrinks towards them."""

Fields = tuple[tuple[Any, ...], ...]


def decode(number: int, fields: Fields) -> tuple[Any, ...]:
    out = []
    for choices in fields:
        number, pick = divmod(number, len(choices))
        out.append(choices[pick])
    return tuple(out)


def record(fields: Fields) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.integers(0, math.prod(len(f) for f in fields) - 1).map(lambda n: decode(n, fields))


NODE_FIELDS: Fields = (
    ("eu", "us"),  # region
    DRIVERS,  # most devices' driver
    ("X1", "X2", "Y1"),  # most devices' productName
    (16, 48, 80, 192),  # most devices' memory, GiB
    (*NO, True),  # unschedulable
)
DEVICE_FIELDS: Fields = (
    (SAME, SAME, SAME, *DRIVERS),
    (SAME, SAME, SAME, None, "X1", "X2", "Y1"),  # productName
    (None, "pci0", "pci1", "pci0"),  # pcieRoot
    (SAME, SAME, SAME, None, 16, 48, 80, 192),  # memory, GiB
    (False, False, False, False, True),  # already taken
)
DENSE_DEVICE_FIELDS: Fields = ((SAME,), (SAME,), ("pci0", "pci1"), (SAME,), (*NO, True))
"""Homogeneous nodes, where replicas of several devices fit and compete."""

SELECTOR_SETS = (
    (),
    (),
    (MEM_40,),
    (MEM_80,),
    ("productName.startsWith('X')",),
    ("productName.startsWith('X1')",),
    (MEM_40, "productName.startsWith('X')"),
)
ALTERNATIVE_FIELDS: Fields = (
    (*CLASSES, "ANY", "AB", "GHOST"),
    SELECTOR_SETS,
    (*NO, *NO, True),  # add a selector that does not compile
    (1, 1, 2, 2, 3),  # count
)
DENSE_ALTERNATIVE_FIELDS: Fields = (
    ("ANY", "AB", "A", "B", "C"),
    ((), (MEM_40,)),
    (False,),
    (2, 3, 4),
)
SOVEREIGNTIES: tuple[Sovereignty | None, ...] = (
    None,
    None,
    None,
    *(
        Sovereignty(allowed_regions=regions, excluded_drivers=drivers)
        for regions in ([], ["eu"], ["us"])
        for drivers in ([], *([d] for d in DRIVERS))
    ),
)
SPREAD_AVOID = tuple(
    frozenset(n for i, n in enumerate(NODE_NAMES) if mask >> i & 1) for mask in range(64)
)
CONSTRAINTS: tuple[tuple[str, ...], ...] = (
    (),
    (),
    (ROOT,),
    ("productName",),
    (ROOT, "productName"),
)
CLAIM_FIELDS: Fields = (
    CONSTRAINTS,
    ("pack", "spread"),
    SOVEREIGNTIES,
    SPREAD_AVOID,
    ("g1", None, "g2"),  # group
)
DENSE_CLAIM_FIELDS: Fields = (
    ((), (ROOT,)),
    ("pack", "spread"),
    (None,),
    SPREAD_AVOID,
    ("g1", None),
)


def build_device(index: int, row: tuple[Any, ...], traits: tuple[Any, ...]) -> dict[str, Any]:
    _, driver, product_name, memory_gib, _ = traits
    driver = driver if row[0] == SAME else row[0]
    product_name = product_name if row[1] == SAME else row[1]
    root = row[2]
    memory_gib = memory_gib if row[3] == SAME else row[3]
    attributes: dict[str, Any] = {}
    if product_name is not None:
        attributes["productName"] = {"string": product_name}
    if root is not None:
        attributes[ROOT] = {"string": root}
    capacity = {} if memory_gib is None else {"memory": {"value": f"{memory_gib}Gi"}}
    return {
        "name": f"dev-{index}",
        "driver": driver,
        "attributes": attributes,
        "capacity": capacity,
    }


def build_claim(index: int, row: tuple[list[tuple[Any, ...]], tuple[Any, ...]]) -> Claim:
    alternatives, (constraints, strategy, sovereignty, avoid, group) = row
    accelerators = AcceleratorClaim(
        first_available=[
            DeviceSubRequest(
                name=f"alt-{i}",
                device_class_name=cls,
                selectors=[*selectors, BROKEN] if broken else list(selectors),
                count=count,
            )
            for i, (cls, selectors, broken, count) in enumerate(alternatives)
        ],
        constraints=[DeviceConstraint(match_attribute=c) for c in constraints],
        strategy=strategy,
    )
    return Claim(
        key=f"ns/replica-{index}",
        accelerators=accelerators,
        sovereignty=sovereignty,
        spread_avoid=avoid,
        group=group,
    )


@dataclass
class Scenario:
    fleet: list[dict[str, Any]]
    claims: list[Claim]
    taken: list[tuple[str, str]]

    def run(self) -> dict[str, Allocation | Unschedulable]:
        return allocate(
            self.claims,
            fleet=self.fleet,
            classes=CLASSES,
            compile_selector=fake_compile,
            taken=self.taken,
        )


def build_scenario(row: Any) -> Scenario:
    names, nodes, claims_, unknown = row
    fleet: list[dict[str, Any]] = []
    taken: list[tuple[str, str]] = [("node-zzz", "dev-0")] if unknown else []
    for name, (traits, rows) in zip(names, nodes, strict=False):
        devs = [build_device(i, r, traits) for i, r in enumerate(rows)]
        taken.extend((name, d["name"]) for d, r in zip(devs, rows, strict=True) if r[4])
        fleet.append(
            {
                "metadata": {"name": name},
                "spec": {"region": traits[0], "unschedulable": traits[4], "devices": devs},
            }
        )
    return Scenario(fleet, [build_claim(i, c) for i, c in enumerate(claims_)], taken)


def scenarios_of(device_fields: Fields, alternative_fields: Fields, claim_fields: Fields) -> Any:
    node = st.tuples(record(NODE_FIELDS), st.lists(record(device_fields), min_size=1, max_size=8))
    claim = st.tuples(
        st.lists(record(alternative_fields), min_size=1, max_size=3), record(claim_fields)
    )
    return st.tuples(
        st.lists(st.sampled_from(NODE_NAMES), unique=True, min_size=1, max_size=5),
        st.lists(node, min_size=5, max_size=5),
        st.lists(claim, min_size=1, max_size=6),
        st.booleans(),  # also pass a pair that names no device
    ).map(build_scenario)


scenarios = st.one_of(
    scenarios_of(DEVICE_FIELDS, ALTERNATIVE_FIELDS, CLAIM_FIELDS),
    scenarios_of(DENSE_DEVICE_FIELDS, DENSE_ALTERNATIVE_FIELDS, DENSE_CLAIM_FIELDS),
)


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def alternative_named(claim: Claim, request: str) -> DeviceSubRequest:
    [alternative] = [a for a in claim.accelerators.alternatives() if a.name == request]
    return alternative


def replay(
    scenario: Scenario, results: Mapping[str, Allocation | Unschedulable]
) -> list[tuple[Claim, set[tuple[str, str]], Allocation | Unschedulable]]:
    """Each claim in key order with the devices held when its turn came."""
    used = set(scenario.taken)
    out = []
    for claim in sorted(scenario.claims, key=lambda c: c.key):
        result = results[claim.key]
        out.append((claim, set(used), result))
        if isinstance(result, Allocation):
            used |= {(result.node, d.device) for d in result.devices}
    return out


# --- properties ------------------------------------------------------------------------------


@PROPERTY
@given(scenarios)
def test_never_gives_a_device_twice(scenario: Scenario) -> None:
    given_out = [
        (r.node, d.device)
        for r in scenario.run().values()
        if isinstance(r, Allocation)
        for d in r.devices
    ]
    assert len(given_out) == len(set(given_out))
    assert not set(given_out) & set(scenario.taken)


@PROPERTY
@given(scenarios)
def test_all_or_nothing_on_one_node_and_every_device_qualifies(scenario: Scenario) -> None:
    nodes = {n["metadata"]["name"]: n for n in scenario.fleet}
    results = scenario.run()
    assert set(results) == {c.key for c in scenario.claims}
    for claim, used, result in replay(scenario, results):
        if not isinstance(result, Allocation):
            continue
        alternative = alternative_named(claim, result.request)
        assert len(result.devices) == alternative.count
        node = nodes[result.node]
        by_name = {d["name"]: d for d in node["spec"]["devices"]}
        for ref in result.devices:
            device = by_name[ref.device]
            assert ref.driver == device["driver"]
            assert first_reason(node, device, alternative, claim, used) == "available"
        for constraint in claim.accelerators.constraints:
            values = {
                ref_attribute(by_name[r.device], constraint.match_attribute) for r in result.devices
            }
            assert len(values) == 1 and None not in values


@PROPERTY
@given(scenarios)
def test_earlier_alternatives_win_and_nothing_placeable_is_left_pending(scenario: Scenario) -> None:
    results = scenario.run()
    for claim, used, result in replay(scenario, results):
        fits = [
            bool(caps(node_groups(scenario.fleet, a, claim, used), a.count))
            for a in claim.accelerators.alternatives()
        ]
        if isinstance(result, Unschedulable):
            assert not any(fits), result.message
        else:
            chosen = [a.name for a in claim.accelerators.alternatives()].index(result.request)
            assert fits.index(True) == chosen


@PROPERTY
@given(scenarios)
def test_pack_takes_the_best_fit_and_spread_the_emptiest_node_not_avoided(
    scenario: Scenario,
) -> None:
    results = scenario.run()
    group_nodes: dict[str, set[str]] = {}
    for claim, used, result in replay(scenario, results):
        if not isinstance(result, Allocation):
            continue
        alternative = alternative_named(claim, result.request)
        groups = node_groups(scenario.fleet, alternative, claim, used)
        fitting = caps(groups, alternative.count)
        if claim.accelerators.strategy == "pack":
            expected = min(fitting, key=lambda n: (fitting[n], n))
        else:
            avoid = claim.spread_avoid | group_nodes.get(claim.group or "", set())
            preferred = {n: c for n, c in fitting.items() if n not in avoid} or fitting
            expected = min(preferred, key=lambda n: (-preferred[n], n))
        assert result.node == expected
        # Inside the node: the smallest matchAttribute group that fits, devices in name order.
        candidates = [
            names for names in groups[expected].values() if len(names) >= alternative.count
        ]
        best = min(candidates, key=lambda names: (len(names), names[0]))
        assert [d.device for d in result.devices] == best[: alternative.count]
        if claim.group is not None:
            group_nodes.setdefault(claim.group, set()).add(result.node)


@PROPERTY
@given(scenarios, st.randoms(use_true_random=False))
def test_same_result_whatever_the_input_order(scenario: Scenario, rng: random.Random) -> None:
    expected = list(scenario.run().items())
    fleet = [
        {
            **n,
            "spec": {
                **n["spec"],
                "devices": rng.sample(n["spec"]["devices"], len(n["spec"]["devices"])),
            },
        }
        for n in rng.sample(scenario.fleet, len(scenario.fleet))
    ]
    shuffled = Scenario(
        fleet,
        rng.sample(scenario.claims, len(scenario.claims)),
        rng.sample(scenario.taken, len(scenario.taken)),
    )
    assert list(shuffled.run().items()) == expected


@PROPERTY
@given(scenarios)
def test_unschedulable_counts_every_device_once_under_its_first_reason(scenario: Scenario) -> None:
    total = sum(len(n["spec"]["devices"]) for n in scenario.fleet)
    results = scenario.run()
    for claim, used, result in replay(scenario, results):
        if not isinstance(result, Unschedulable):
            continue
        alternatives = claim.accelerators.alternatives()
        assert [c.request for c in result.counts] == [a.name for a in alternatives]
        for counts, alternative in zip(result.counts, alternatives, strict=True):
            assert counts.total == total
            assert counts.available + sum(n for _, n in counts.reasons) == total
            assert all(n > 0 for _, n in counts.reasons)
            assert counts.most_on_one_node < counts.count
            got: dict[str, int] = {}
            for reason, n in counts.reasons:
                got[category(reason)] = got.get(category(reason), 0) + n
            expected: dict[str, int] = {}
            for node in scenario.fleet:
                for device in node["spec"]["devices"]:
                    why = first_reason(node, device, alternative, claim, used)
                    expected[why] = expected.get(why, 0) + 1
            assert got == {k: v for k, v in expected.items() if k != "available"}
            assert counts.available == expected.get("available", 0)
            # The reasons come in a fixed order.
            order = ["region", "driver", "class", "selector", "attribute", "cordoned", "allocated"]
            seen = [order.index(category(r)) for r, _ in counts.reasons]
            assert seen == sorted(seen)
            constraints = [c.match_attribute for c in claim.accelerators.constraints]
            assert counts.describe(constraints) in result.message


# What each fake selector's verdict depends on (``verdict_key``): a device with no memory or no
# productName gets None for those that read it, so it is evaluated itself.
KEYS: dict[str, Callable[[Mapping[str, Any]], Hashable | None]] = {
    "true": lambda d: (),
    "device.driver == 'a.example.com'": lambda d: d["driver"],
    "device.driver == 'b.example.com'": lambda d: d["driver"],
    "device.driver == 'c.example.com' && memory >= 16Gi": lambda d: (d["driver"], memory(d)),
    "device.driver != 'c.example.com'": lambda d: d["driver"],
    MEM_80: memory,
    MEM_40: memory,
    "productName.startsWith('X')": product,
    "productName.startsWith('X1')": product,
}


@dataclass(frozen=True)
class KeyedSelector(FakeSelector):
    key: Callable[[Mapping[str, Any]], Hashable | None]

    def verdict_key(self, device: Mapping[str, Any], /) -> Hashable | None:
        return self.key(device)


@PROPERTY
@given(scenarios)
def test_verdicts_shared_by_key_change_nothing_and_each_key_is_evaluated_once(
    scenario: Scenario,
) -> None:
    evaluated: list[tuple[str, Hashable]] = []

    def compile_(expression: str) -> KeyedSelector:
        predicate, key = fake_compile(expression).predicate, KEYS[expression]

        def counted(device: Mapping[str, Any]) -> FakeVerdict:
            found = key(device)
            evaluated.append((expression, ("device", id(device)) if found is None else found))
            return predicate(device)

        return KeyedSelector(counted, key)

    def run(compile_selector: Callable[[str], FakeSelector]) -> Any:
        placed = allocate(
            scenario.claims,
            fleet=scenario.fleet,
            classes=CLASSES,
            compile_selector=compile_selector,
            taken=scenario.taken,
        )
        assert len(evaluated) == len(set(evaluated))  # once per key (or device without one)
        evaluated.clear()
        report = alternatives_report(
            scenario.claims,
            fleet=scenario.fleet,
            classes=CLASSES,
            compile_selector=compile_selector,
            taken=scenario.taken,
        )
        assert len(evaluated) == len(set(evaluated))
        return placed, report

    assert run(compile_) == run(fake_compile)


# --- readable examples -----------------------------------------------------------------------


def gpu(
    name: str, driver: str, product_name: str, memory_gib: int, root: str = "pci0"
) -> dict[str, Any]:
    return {
        "name": name,
        "driver": driver,
        "attributes": {"productName": {"string": product_name}, ROOT: {"string": root}},
        "capacity": {"memory": {"value": f"{memory_gib}Gi"}},
    }


def node(name: str, region: str, *devs: dict[str, Any], cordoned: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"region": region, "unschedulable": cordoned, "devices": list(devs)},
    }


NVIDIA, AMD, GAUDI = "gpu.nvidia.com", "gpu.amd.com", "gaudi.intel.com"
MIXED = [
    node(
        "h100-eu",
        "eu-west",
        *(gpu(f"gpu-{i}", NVIDIA, "NVIDIA H100 80GB HBM3", 80) for i in range(2)),
    ),
    node("l40s-eu", "eu-west", *(gpu(f"gpu-{i}", NVIDIA, "NVIDIA L40S", 48) for i in range(4))),
    node(
        "mi300x-us",
        "us-east",
        *(gpu(f"gpu-{i}", AMD, "AMD Instinct MI300X", 192) for i in range(2)),
    ),
    node("gaudi-eu", "eu-west", *(gpu(f"hpu-{i}", GAUDI, "Intel Gaudi 3", 128) for i in range(2))),
]
EXAMPLE_CLASSES = {
    "gpu.nvidia.com": ("device.driver == 'gpu.nvidia.com'",),
    "gpu.amd.com": ("device.driver == 'gpu.amd.com'",),
    "gaudi.intel.com": ("device.driver == 'gaudi.intel.com'",),
}
EXAMPLE_PREDICATES = {
    "device.driver == 'gpu.nvidia.com'": driver_is(NVIDIA),
    "device.driver == 'gpu.amd.com'": driver_is(AMD),
    "device.driver == 'gaudi.intel.com'": driver_is(GAUDI),
    MEM_80: memory_at_least(80),
}


def example_compile(expression: str) -> FakeSelector:
    return FakeSelector(EXAMPLE_PREDICATES[expression])


def big_memory(count: int = 1) -> AcceleratorClaim:
    return AcceleratorClaim(
        first_available=[
            DeviceSubRequest(
                name=f"{cls.split('.')[1]}", device_class_name=cls, selectors=[MEM_80], count=count
            )
            for cls in (NVIDIA, AMD, GAUDI)
        ]
    )


def place(
    *claims_: Claim,
    fleet: Sequence[Mapping[str, Any]] = MIXED,
    taken: Sequence[tuple[str, str]] = (),
) -> dict[str, Allocation | Unschedulable]:
    return allocate(
        claims_, fleet=fleet, classes=EXAMPLE_CLASSES, compile_selector=example_compile, taken=taken
    )


def test_80_gib_lands_on_h100_or_mi300x_never_on_l40s() -> None:
    results = place(*(Claim(f"ns/r{i}", big_memory()) for i in range(6)))
    nodes = [r.node for r in results.values() if isinstance(r, Allocation)]
    assert nodes == ["h100-eu", "h100-eu", "mi300x-us", "mi300x-us", "gaudi-eu", "gaudi-eu"]
    assert results["ns/r0"] == Allocation(
        node="h100-eu",
        request="nvidia",
        devices=(DeviceRef(driver=NVIDIA, device="gpu-0"),),
    )


def test_with_nvidia_excluded_it_lands_on_amd_or_gaudi() -> None:
    sovereignty = Sovereignty(excluded_drivers=[NVIDIA])
    results = place(*(Claim(f"ns/r{i}", big_memory(), sovereignty) for i in range(4)))
    assert {r.node for r in results.values() if isinstance(r, Allocation)} == {
        "mi300x-us",
        "gaudi-eu",
    }
    assert all(
        isinstance(r, Allocation) and r.request in ("amd", "intel") for r in results.values()
    )


def test_an_impossible_claim_says_precisely_why() -> None:
    sovereignty = Sovereignty(allowed_regions=["eu-west"])
    claim = AcceleratorClaim(
        first_available=[
            DeviceSubRequest(name="h100", device_class_name=NVIDIA, selectors=[MEM_80], count=2),
            DeviceSubRequest(name="instinct", device_class_name=AMD),
        ],
        constraints=[DeviceConstraint(match_attribute=ROOT)],
    )
    [result] = place(Claim("ns/r0", claim, sovereignty), taken=[("h100-eu", "gpu-1")]).values()
    assert isinstance(result, Unschedulable)
    assert result.message == (
        '1/10 devices available for alternative "h100" (2 of class gpu.nvidia.com on one node, '
        "same resource.kubernetes.io/pcieRoot): 2 excluded by region, 2 not in device class "
        "gpu.nvidia.com, 4 not matching selector "
        "'device.capacity['gpu'].memory.compareTo(quantity('80Gi')) >= 0', 1 already allocated; "
        '0/10 devices available for alternative "instinct" (1 of class gpu.amd.com): '
        "2 excluded by region, 8 not in device class gpu.amd.com"
    )
    assert result.counts[0] == AlternativeCounts(
        request="h100",
        device_class=NVIDIA,
        count=2,
        total=10,
        available=1,
        most_on_one_node=1,
        reasons=(
            ("excluded by region", 2),
            ("not in device class gpu.nvidia.com", 2),
            (f"not matching selector '{MEM_80}'", 4),
            ("already allocated", 1),
        ),
    )


def test_missing_attributes_broken_selectors_and_unknown_classes_are_named() -> None:
    fleet = [node("n1", "eu", gpu("gpu-0", NVIDIA, "H", 80), {"name": "gpu-1", "driver": NVIDIA})]
    claim = AcceleratorClaim(
        first_available=[
            DeviceSubRequest(name="big", device_class_name=NVIDIA, selectors=[MEM_80], count=2),
            DeviceSubRequest(name="odd", device_class_name=NVIDIA, selectors=["nope("]),
            DeviceSubRequest(name="tpu", device_class_name="tpu.google.com"),
        ],
    )

    def compile_(expression: str) -> FakeSelector:
        if expression == "nope(":
            raise ValueError("Syntax error: unexpected end of input")
        return example_compile(expression)

    [result] = allocate(
        [Claim("ns/r", claim)], fleet=fleet, classes=EXAMPLE_CLASSES, compile_selector=compile_
    ).values()
    assert isinstance(result, Unschedulable)
    big, odd, tpu = result.message.split("; ")
    assert big.endswith(f"1 failing selector '{MEM_80}' (no such key: memory)")
    assert odd.endswith(
        "2 failing selector 'nope(' (does not compile: Syntax error: unexpected end of input)"
    )
    assert tpu.endswith("2 not in device class tpu.google.com (no such DeviceClass)")
    constrained = AcceleratorClaim(
        device_class_name=NVIDIA,
        count=2,
        constraints=[DeviceConstraint(match_attribute="gpu.nvidia.com/productName")],
    )
    [result] = place(Claim("ns/r", constrained), fleet=fleet).values()
    assert isinstance(result, Unschedulable)
    assert result.message.endswith(": 1 missing attribute gpu.nvidia.com/productName")


def test_an_unschedulable_node_keeps_what_it_has_and_gets_nothing_new() -> None:
    fleet = [node("n1", "eu", gpu("gpu-0", AMD, "MI300X", 192), cordoned=True)]
    [result] = place(Claim("ns/r", AcceleratorClaim(device_class_name=AMD)), fleet=fleet).values()
    assert isinstance(result, Unschedulable)
    assert result.message.endswith(": 1 on unschedulable nodes")


def test_pack_fills_the_fullest_node_spread_keeps_replicas_apart() -> None:
    fleet = [
        node("n1", "eu", *(gpu(f"gpu-{i}", AMD, "MI300X", 192) for i in range(4))),
        node("n2", "eu", *(gpu(f"gpu-{i}", AMD, "MI300X", 192) for i in range(4))),
        node("n3", "eu", *(gpu(f"gpu-{i}", AMD, "MI300X", 192) for i in range(4))),
    ]
    taken = [("n2", "gpu-0")]
    pack = AcceleratorClaim(device_class_name=AMD, strategy="pack")
    results = place(*(Claim(f"ns/p{i}", pack) for i in range(4)), fleet=fleet, taken=taken)
    assert [r.node for r in results.values() if isinstance(r, Allocation)] == ["n2"] * 3 + ["n1"]

    spread = AcceleratorClaim(device_class_name=AMD, strategy="spread")
    results = place(
        *(
            Claim(f"ns/s{i}", spread, spread_avoid=frozenset({"n1"}), group="chat")
            for i in range(3)
        ),
        fleet=fleet,
        taken=taken,
    )
    # n1 is avoided (a replica runs there) while other nodes remain; n3 has the most free.
    assert [r.node for r in results.values() if isinstance(r, Allocation)] == ["n3", "n2", "n1"]


def test_match_attribute_keeps_a_replica_on_one_pcie_root() -> None:
    fleet = [
        node(
            "n1",
            "eu",
            gpu("gpu-0", NVIDIA, "H100", 80, root="pci0"),
            gpu("gpu-1", NVIDIA, "H100", 80, root="pci1"),
            gpu("gpu-2", NVIDIA, "H100", 80, root="pci1"),
            gpu("gpu-3", NVIDIA, "H100", 80, root="pci0"),
            gpu("gpu-4", NVIDIA, "H100", 80, root="pci0"),
            gpu("gpu-5", NVIDIA, "H100", 80, root="pci2"),
        )
    ]
    claim = AcceleratorClaim(
        device_class_name=NVIDIA, count=2, constraints=[DeviceConstraint(match_attribute=ROOT)]
    )
    results = place(Claim("ns/a", claim), Claim("ns/b", claim), Claim("ns/c", claim), fleet=fleet)
    placed = [
        tuple(d.device for d in r.devices) for r in results.values() if isinstance(r, Allocation)
    ]
    # Best fit inside the node: the 2-device pci1 group first, then two of pci0.
    assert placed == [("gpu-1", "gpu-2"), ("gpu-0", "gpu-3")]
    assert isinstance(results["ns/c"], Unschedulable)
    assert "2/6 devices available" in results["ns/c"].message
    assert "at most 1 on any one node" in results["ns/c"].message


def test_typed_nodes_replicas_and_device_classes_are_accepted() -> None:
    from aviator.api.devices import DeviceClass

    nodes = [Node.model_validate(n) for n in MIXED]
    replicas = [
        Replica.model_validate(
            {
                "metadata": {"name": "old", "namespace": "ns"},
                "spec": {
                    "model": {"name": "m"},
                    "engine": "sim",
                    "node": "h100-eu",
                    "devices": [{"request": "nvidia", "driver": NVIDIA, "device": "gpu-0"}],
                },
            }
        )
    ]
    taken = taken_devices(
        [*replicas, {"spec": {"node": "h100-eu", "devices": [{"device": "gpu-1"}]}}]
    )
    assert taken == {("h100-eu", "gpu-0"), ("h100-eu", "gpu-1")}
    classes = class_selectors(
        [
            DeviceClass.model_validate(
                {
                    "metadata": {"name": AMD},
                    "spec": {
                        "selectors": [{"cel": {"expression": "device.driver == 'gpu.amd.com'"}}]
                    },
                }
            ),
            {
                "metadata": {"name": NVIDIA},
                "spec": {
                    "selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]
                },
            },
        ]
    )
    assert classes == {
        AMD: ("device.driver == 'gpu.amd.com'",),
        NVIDIA: ("device.driver == 'gpu.nvidia.com'",),
    }
    claim = AcceleratorClaim(
        first_available=[
            DeviceSubRequest(device_class_name=NVIDIA, selectors=[MEM_80]),
            DeviceSubRequest(device_class_name=AMD),
        ]
    )
    [result] = allocate(
        [Claim("ns/r", claim)],
        fleet=nodes,
        classes=classes,
        compile_selector=example_compile,
        taken=taken,
    ).values()
    assert isinstance(result, Allocation)
    assert result.request == AMD  # an unnamed alternative is named after its class
    assert [d.model_dump() for d in result.allocated_devices()] == [
        {"request": AMD, "driver": AMD, "device": "gpu-0"}
    ]


def test_attribute_names_resolve_in_the_drivers_domain() -> None:
    device = {
        "driver": NVIDIA,
        "attributes": {"productName": {"string": "H100"}, ROOT: {"string": "pci0"}, "index": 3},
    }
    assert attribute_value(device, "productName") == ("string", "H100")
    assert attribute_value(device, "gpu.nvidia.com/productName") == ("string", "H100")
    assert attribute_value(device, "gpu.amd.com/productName") is None
    assert attribute_value(device, ROOT) == ("string", "pci0")
    assert attribute_value(device, "index") == ("int", 3)


def test_each_selector_is_evaluated_once_per_device_and_driver_guards_skip_other_drivers() -> None:
    calls: list[tuple[str, str]] = []

    def compile_(expression: str) -> FakeSelector:
        predicate = EXAMPLE_PREDICATES[expression]

        def counted(device: Mapping[str, Any]) -> FakeVerdict:
            calls.append((expression, str(id(device))))
            return predicate(device)

        return FakeSelector(counted)

    claims_ = [Claim(f"ns/r{i}", big_memory()) for i in range(6)]
    allocate(claims_, fleet=MIXED, classes=EXAMPLE_CLASSES, compile_selector=compile_)
    assert len(calls) == len(set(calls))
    # The class selectors `device.driver == '…'` are never evaluated (the guard answers them).
    assert not [c for c in calls if c[0].startswith("device.driver")]


def test_the_report_lists_every_path_and_whether_it_fits_now() -> None:
    claim = Claim(
        "ns/chat", big_memory(count=2), Sovereignty(allowed_regions=["eu-west", "us-east"])
    )
    report = alternatives_report(
        [claim],
        fleet=MIXED,
        classes=EXAMPLE_CLASSES,
        compile_selector=example_compile,
        taken=[("mi300x-us", "gpu-0")],
    )
    rows = [
        (p.request, p.driver, p.product, p.devices, p.free, p.replicas, p.free_replicas, p.fits)
        for p in report["ns/chat"]
    ]
    assert rows == [
        ("nvidia", NVIDIA, "NVIDIA H100 80GB HBM3", 2, 2, 1, 1, True),
        ("amd", AMD, "AMD Instinct MI300X", 2, 1, 1, 0, False),
        ("intel", GAUDI, "Intel Gaudi 3", 2, 2, 1, 1, True),
    ]


def test_duplicate_keys_and_nodes_are_refused() -> None:
    claim = Claim("ns/r", big_memory())
    with pytest.raises(ValueError, match="appears twice"):
        place(claim, replace(claim))
    with pytest.raises(ValueError, match="node 'h100-eu' appears twice"):
        place(claim, fleet=[MIXED[0], MIXED[0]])


def test_a_selector_cache_reuses_verdicts_until_a_device_changes() -> None:
    evaluated: list[str] = []

    def compile_(expression: str) -> FakeSelector:
        predicate = EXAMPLE_PREDICATES[expression]

        def counted(device: Mapping[str, Any]) -> FakeVerdict:
            evaluated.append(device["name"])
            return predicate(device)

        return FakeSelector(counted)

    cache = SelectorCache()
    claims_ = [Claim("ns/r", big_memory())]

    def run(fleet: Sequence[Mapping[str, Any]]) -> dict[str, Allocation | Unschedulable]:
        return allocate(
            claims_, fleet=fleet, classes=EXAMPLE_CLASSES, compile_selector=compile_, cache=cache
        )

    first = run(MIXED)
    assert len(evaluated) == 6  # MEM_80 on the NVIDIA devices (the class selectors need no CEL)
    assert run(MIXED) == first
    assert len(evaluated) == 6
    l40s = MIXED[1]["spec"]["devices"][0]
    changed = {**l40s, "capacity": {"memory": {"value": "96Gi"}}}
    fleet = [MIXED[0], node("l40s-eu", "eu-west", changed), *MIXED[2:]]
    run(fleet)
    assert evaluated[6:] == ["gpu-0"]  # only the changed device; the others left the fleet


# --- with the real CEL selectors -------------------------------------------------------------

CEL_80GI = {
    NVIDIA: "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0",
    AMD: "device.capacity['gpu.amd.com'].memory.compareTo(quantity('80Gi')) >= 0",
    GAUDI: "device.capacity['gaudi.intel.com'].memory.compareTo(quantity('80Gi')) >= 0",
}


def admitted(fleet: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fleet as the store holds it (NVIDIA devices get the `type: gpu` their class wants)."""
    out = []
    for raw in fleet:
        body = {**raw, "spec": {**raw["spec"], "devices": []}}
        for device in raw["spec"]["devices"]:
            attributes = dict(device.get("attributes", {}))
            if device["driver"] == NVIDIA:
                attributes["type"] = {"string": "gpu"}
            body["spec"]["devices"].append({**device, "attributes": attributes})
        out.append(Node.model_validate(body).to_raw())
    return out


def cel_claim(*, count: int = 1) -> AcceleratorClaim:
    return AcceleratorClaim(
        first_available=[
            DeviceSubRequest(
                name=cls, device_class_name=cls, selectors=[CEL_80GI[cls]], count=count
            )
            for cls in (NVIDIA, AMD, GAUDI)
        ]
    )


@pytest.mark.parametrize("prepared", [False, True])
def test_real_cel_80_gib_lands_on_h100_mi300x_or_gaudi_never_on_l40s(prepared: bool) -> None:
    from aviator.placement import cel
    from aviator.placement.deviceclasses import builtin_device_classes

    results = allocate(
        [Claim(f"ns/r{i}", cel_claim()) for i in range(7)],
        fleet=admitted(MIXED),
        classes=class_selectors(builtin_device_classes()),
        compile_selector=cel.compile_selector,
        prepare_device=cel.selector_context if prepared else None,
    )
    placed = [(r.node, r.request) for r in results.values() if isinstance(r, Allocation)]
    assert placed == [
        ("h100-eu", NVIDIA),
        ("h100-eu", NVIDIA),
        ("mi300x-us", AMD),
        ("mi300x-us", AMD),
        ("gaudi-eu", GAUDI),
        ("gaudi-eu", GAUDI),
    ]
    pending = results["ns/r6"]
    assert isinstance(pending, Unschedulable)
    assert pending.message.startswith(
        '0/10 devices available for alternative "gpu.nvidia.com" (1 of class gpu.nvidia.com): '
        "4 not in device class gpu.nvidia.com, 4 not matching selector "
        f"'{CEL_80GI[NVIDIA]}', 2 already allocated; "
    )


def test_real_cel_sovereignty_and_missing_attributes_are_reported() -> None:
    from aviator.placement import cel
    from aviator.placement.deviceclasses import builtin_device_classes

    classes = class_selectors(builtin_device_classes())
    fleet = admitted(MIXED)
    results = allocate(
        [Claim(f"ns/r{i}", cel_claim(), Sovereignty(excluded_drivers=[NVIDIA])) for i in range(2)],
        fleet=fleet,
        classes=classes,
        compile_selector=cel.compile_selector,
        prepare_device=cel.selector_context,
    )
    assert [r.request for r in results.values() if isinstance(r, Allocation)] == [AMD, AMD]

    by_arch = AcceleratorClaim(
        device_class_name=NVIDIA,
        selectors=["device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"],
    )
    [result] = allocate(
        [Claim("ns/x", by_arch)],
        fleet=fleet,
        classes=classes,
        compile_selector=cel.compile_selector,
        prepare_device=cel.selector_context,
    ).values()
    assert isinstance(result, Unschedulable)
    assert result.message == (
        '0/10 devices available for alternative "gpu.nvidia.com" (1 of class gpu.nvidia.com): '
        "4 not in device class gpu.nvidia.com, 6 failing selector "
        "'device.attributes['gpu.nvidia.com'].architecture == 'Hopper'' "
        "(missing attribute gpu.nvidia.com/architecture)"
    )

    [result] = allocate(
        [Claim("ns/y", AcceleratorClaim(device_class_name=AMD, selectors=["device.nope"]))],
        fleet=fleet,
        classes=classes,
        compile_selector=cel.compile_selector,
    ).values()
    assert isinstance(result, Unschedulable)
    assert (
        "8 not in device class gpu.amd.com, 2 failing selector 'device.nope' (does not compile: "
        in (result.message)
    )


def test_many_distinct_selector_errors_are_summarized() -> None:
    fleet = [node("n1", "eu", *({"name": f"gpu-{i}", "driver": NVIDIA} for i in range(6)))]

    def compile_(expression: str) -> FakeSelector:
        if expression == "picky":
            return FakeSelector(lambda d: FakeVerdict(False, f"bad value on {d['name']}"))
        return example_compile(expression)

    claim = AcceleratorClaim(device_class_name=NVIDIA, selectors=["picky"])
    [result] = allocate(
        [Claim("ns/r", claim)], fleet=fleet, classes=EXAMPLE_CLASSES, compile_selector=compile_
    ).values()
    assert isinstance(result, Unschedulable)
    assert result.message.endswith(
        ": 1 failing selector 'picky' (bad value on gpu-0), 1 failing selector 'picky' "
        "(bad value on gpu-1), 1 failing selector 'picky' (bad value on gpu-2), "
        "3 failing selector 'picky' (3 other errors)"
    )
