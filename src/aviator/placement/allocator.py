"""The allocator: which devices each replica gets, decided the way DRA's scheduler decides.

Pure: plain functions over plain data (the fleet, the device classes, the devices already taken,
the claims). It MUST NOT import a store, open a socket or start a process; it reads no clock.

Semantics (``resource.k8s.io/v1`` ResourceClaim, one request per replica):

- A replica gets **all** ``count`` devices of **one** alternative, on **one** node, or nothing.
  Alternatives (``firstAvailable``) are tried in order; an earlier one that fits always wins over
  a later one, whatever the strategy prefers.
- A device qualifies for an alternative when its node's region is allowed and its driver is not
  excluded (sovereignty), it matches every CEL selector of the alternative's DeviceClass and of
  the alternative itself, and it has every ``matchAttribute`` attribute of the claim. The devices
  of one replica share the value of each ``matchAttribute`` attribute.
- Unschedulable (cordoned) nodes get nothing new. A device is never given twice: neither one in
  ``taken`` nor one given to an earlier claim of the same call.
- Claims are placed one after the other in the order of their keys; each takes a node by its
  alternative's strategy: ``pack`` takes the node with the fewest free qualifying devices that
  still fits (best fit), ``spread`` prefers nodes outside ``spread_avoid`` (and outside the nodes
  given to claims of the same ``group`` earlier in the call), then the most free. Ties go to the
  node name, devices are taken in name order from the best-fitting ``matchAttribute`` group.
  The same inputs give the same result, whatever their order.

Release is implicit: a device is taken exactly while a Replica records it in ``spec.node`` /
``spec.devices`` (:func:`taken_devices`), like a DRA allocation result lives in its claim's
status. Deleting the Replica frees its devices; there is nothing to free here.

Cost: a selector is evaluated only for devices that survived the cheaper filters before it
(sovereignty, then the class's selectors, then the alternative's in order); one that is
``device.driver == '…'``, or starts with it and ``&&`` (as DeviceClass selectors do), is answered
without CEL for other drivers (and for all when that is all it says); no (device, selector
expression) pair is evaluated twice in a call — nor while the device is unchanged, with a
:class:`SelectorCache` kept across calls. A selector with a ``verdict_key`` (the CEL module's have
one) is evaluated once per distinct key instead of once per device: the key holds what the verdict
depends on — the driver, the attributes and capacities the expression names — and never the
device's name or node, so all the devices of one shape (product, memory, driver version; uuids and
bus ids differ) share one evaluation, and what remains per device is preparing it
(``selector_context``, ~10 µs in Python) and its key (~1.5 µs per selector). Selectors never see
node facts: region, driver exclusion and cordons are applied here, per device, before and after
them, so a verdict shared between devices on different nodes is exact, and so are the counts in
messages. The devices that qualify for an alternative are computed once per call (shared by every
claim with the same alternative, sovereignty and constraints), with free counts per node kept up to
date as devices are taken, so placing one claim costs a few set operations per alternative, not a
scan of the fleet. Messages of claims that do not fit are exact: each device is counted once, under
the first filter that excluded it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aviator.api.devices import DeviceClass, Node
from aviator.api.modeldeployment import AcceleratorClaim, DeviceSubRequest, Sovereignty
from aviator.api.replica import AllocatedDevice, Replica

__all__ = [
    "Allocation",
    "AlternativeCounts",
    "AlternativePath",
    "Claim",
    "CompileSelector",
    "DeviceRef",
    "PrepareDevice",
    "Selector",
    "SelectorCache",
    "Unschedulable",
    "Verdict",
    "VerdictKey",
    "allocate",
    "alternatives_report",
    "attribute_value",
    "class_selectors",
    "taken_devices",
]


class Verdict(Protocol):
    """What a selector says about one device; an evaluation error is ``matched=False`` plus text."""

    @property
    def matched(self) -> bool: ...

    @property
    def error(self) -> str | None: ...


class Selector(Protocol):
    """A compiled CEL device selector (``aviator.placement.cel.CompiledSelector`` fits).

    It may also have ``verdict_key(device) -> Hashable | None`` (:data:`VerdictKey`), called
    with the same (prepared) device as ``evaluate``: a promise that devices with equal keys get
    equal verdicts. The allocator then evaluates the selector once per distinct key and gives
    that verdict to the other devices with the key; a device whose key is None is evaluated
    itself. Without the method, every device is evaluated itself."""

    def evaluate(self, device: Mapping[str, Any], /) -> Verdict: ...


VerdictKey = Callable[[Mapping[str, Any]], Hashable | None]
"""A selector's optional ``verdict_key`` (see :class:`Selector`)."""


CompileSelector = Callable[[str], Selector]
"""Compiles one CEL expression; raises ``ValueError`` when it does not compile."""

PrepareDevice = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Converts a device once for evaluating many selectors against it (``cel.selector_context``);
raises ``ValueError`` for a device not in the DRA shape."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One thing to place: a replica (for :func:`allocate`) or a deployment (for the report)."""

    key: str
    """Stable and unique in a call, e.g. ``namespace/replica-name``; claims are placed in key order."""
    accelerators: AcceleratorClaim
    sovereignty: Sovereignty | None = None
    spread_avoid: frozenset[str] = frozenset()
    """Nodes to avoid under ``strategy: spread``: those the deployment's other replicas use."""
    group: str | None = None
    """Claims of one group (a deployment's replicas) also spread away from each other within
    the call; ``None`` for none."""


@dataclass(frozen=True, slots=True)
class DeviceRef:
    driver: str
    device: str
    """Device name on the allocation's node."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """A claim placed: all its devices, on one node, for one alternative."""

    node: str
    request: str
    """The alternative satisfied (its name, or its device class name when unnamed)."""
    devices: tuple[DeviceRef, ...]

    def allocated_devices(self) -> list[AllocatedDevice]:
        """The ``Replica.spec.devices`` entries (a DRA allocation result)."""
        return [
            AllocatedDevice(request=self.request, driver=d.driver, device=d.device)
            for d in self.devices
        ]


@dataclass(frozen=True, slots=True)
class AlternativeCounts:
    """Why one alternative did not fit: every device of the fleet counted once, under the first
    reason that excluded it (``reasons``, in a fixed order), or as ``available``."""

    request: str
    device_class: str
    count: int
    """Devices needed on one node."""
    total: int
    """Devices in the fleet: ``available + sum of reasons``."""
    available: int
    """Qualifying, free, on schedulable nodes."""
    most_on_one_node: int
    """The most available devices one node offers together (sharing the ``matchAttribute``
    values); below ``count``, or the alternative would have fitted."""
    reasons: tuple[tuple[str, int], ...]

    def describe(self, constraints: Sequence[str] = ()) -> str:
        what = f"{self.count} of class {self.device_class}"
        if self.count > 1:
            what += " on one node" + (f", same {', '.join(constraints)}" if constraints else "")
        head = (
            f"{self.available}/{self.total} devices available for alternative "
            f'"{self.request}" ({what})'
        )
        if self.available >= self.count:
            head += f", at most {self.most_on_one_node} on any one node"
        if not self.reasons:
            return head
        return head + ": " + ", ".join(f"{n} {reason}" for reason, n in self.reasons)


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """A claim no alternative fits now; ``message`` is ready for a Pending condition."""

    message: str
    counts: tuple[AlternativeCounts, ...]


@dataclass(frozen=True, slots=True)
class AlternativePath:
    """One execution path of a claim: an alternative on one driver and product."""

    request: str
    device_class: str
    driver: str
    product: str | None
    """The device's ``productName`` attribute in its driver's domain, when present."""
    count: int
    """Devices needed per replica."""
    devices: int
    """Qualifying devices of this product in the fleet (allocated or not)."""
    free: int
    """Of them, free and on schedulable nodes."""
    replicas: int
    """Replicas of the claim the fleet could host on this path if nothing were allocated."""
    free_replicas: int
    """Replicas it could host now."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """The attributes of one qualifying device (the first by node and name): what engines and
    profiles are judged on."""

    @property
    def fits(self) -> bool:
        return self.free_replicas > 0


# --- attributes ------------------------------------------------------------------------------


def attribute_value(device: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """The typed value (``("string", "H100")``) of a DRA attribute, or None when absent.

    ``domain/name`` looks the attribute up fully qualified, or unprefixed when the domain is the
    device's driver (unprefixed attributes belong to the driver's domain); a bare ``name`` looks
    in the driver's domain."""
    attributes = device.get("attributes") or {}
    driver = device.get("driver", "")
    domain, slash, short = name.partition("/")
    if slash:
        raw = attributes.get(name)
        if raw is None and domain == driver:
            raw = attributes.get(short)
    else:
        raw = attributes.get(name)
        if raw is None:
            raw = attributes.get(f"{driver}/{name}")
    if raw is None:
        return None
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((kind, value),) = raw.items()
        return (str(kind), value)
    kind = {bool: "bool", int: "int", str: "string"}.get(type(raw), type(raw).__name__)
    return (kind, raw)


def _product(device: Mapping[str, Any]) -> str | None:
    value = attribute_value(device, "productName")
    return None if value is None else str(value[1])


# --- inputs ----------------------------------------------------------------------------------


def taken_devices(replicas: Iterable[Replica | Mapping[str, Any]]) -> frozenset[tuple[str, str]]:
    """``(node, device)`` pairs held by these Replicas (typed or wire), whatever their phase."""
    out: set[tuple[str, str]] = set()
    for replica in replicas:
        if isinstance(replica, Replica):
            out.update((replica.spec.node, d.device) for d in replica.spec.devices)
        else:
            spec = replica.get("spec") or {}
            node = spec.get("node", "local")
            out.update((node, d["device"]) for d in spec.get("devices") or ())
    return frozenset(out)


def class_selectors(
    device_classes: Iterable[DeviceClass | Mapping[str, Any]],
) -> dict[str, tuple[str, ...]]:
    """Class name → its CEL expressions, from DeviceClass objects (typed or wire)."""
    out: dict[str, tuple[str, ...]] = {}
    for dc in device_classes:
        if isinstance(dc, DeviceClass):
            out[dc.name] = tuple(s.cel.expression for s in dc.spec.selectors)
        else:
            selectors = (dc.get("spec") or {}).get("selectors") or ()
            out[dc["metadata"]["name"]] = tuple(s["cel"]["expression"] for s in selectors)
    return out


@dataclass(slots=True)
class _Fleet:
    """Nodes sorted by name, devices sorted by (node, name); indices are positions."""

    node_names: list[str] = field(default_factory=list)
    node_regions: list[str] = field(default_factory=list)
    node_cordoned: list[bool] = field(default_factory=list)
    devices: list[Mapping[str, Any]] = field(default_factory=list)
    device_node: list[int] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    """(node, device) per device."""
    index: dict[tuple[str, str], int] = field(default_factory=dict)


def _index_fleet(nodes: Iterable[Node | Mapping[str, Any]]) -> _Fleet:
    rows: list[tuple[str, str, bool, list[Mapping[str, Any]]]] = []
    for node in nodes:
        if isinstance(node, Node):
            devices: list[Mapping[str, Any]] = [
                d.model_dump(mode="json", by_alias=True) for d in node.spec.devices
            ]
            rows.append((node.name, node.spec.region, node.spec.unschedulable, devices))
        else:
            spec = node.get("spec") or {}
            rows.append(
                (
                    node["metadata"]["name"],
                    spec.get("region", ""),
                    bool(spec.get("unschedulable", False)),
                    list(spec.get("devices") or ()),
                )
            )
    rows.sort(key=lambda row: row[0])
    fleet = _Fleet()
    for position, (name, region, cordoned, devices) in enumerate(rows):
        if fleet.node_names and fleet.node_names[-1] == name:
            raise ValueError(f"node {name!r} appears twice in the fleet")
        fleet.node_names.append(name)
        fleet.node_regions.append(region)
        fleet.node_cordoned.append(cordoned)
        for device in sorted(devices, key=lambda d: str(d["name"])):
            key = (name, str(device["name"]))
            if key in fleet.index:
                raise ValueError(f"device {key[1]!r} appears twice on node {name!r}")
            fleet.index[key] = len(fleet.devices)
            fleet.keys.append(key)
            fleet.devices.append(device)
            fleet.device_node.append(position)
    return fleet


# --- selectors -------------------------------------------------------------------------------

# `device.driver == 'x'` alone or as the first operand of a top-level `&&` chain: then a device of
# another driver cannot match (`false && anything` is false in CEL, errors included). Only applied
# when the rest holds no `||` and no ternary `?`, so the `&&` really is top-level.
_DRIVER_GUARD = re.compile(
    r"""^\s*device\.driver\s*==\s*(?:'(?P<s>[^'\\]*)'|"(?P<d>[^"\\]*)")\s*(?:&&(?P<rest>.+))?$""",
    re.DOTALL,
)
_TERNARY = re.compile(r"(?<![.\[])\?")


def _driver_guard(expression: str) -> tuple[str, bool] | None:
    """``(driver, whole)`` when the expression requires ``device.driver == driver``; ``whole``
    when that is all it says."""
    match = _DRIVER_GUARD.match(expression)
    if match is None:
        return None
    rest = match.group("rest")
    if rest is not None and ("||" in rest or _TERNARY.search(rest)):
        return None
    driver = match.group("s") if match.group("s") is not None else match.group("d")
    return (driver, rest is None)


_Outcome = tuple[bool, str | None]
"""A verdict as stored: (matched, error)."""
_HIT: _Outcome = (True, None)
_MAX_VERDICTS_PER_DEVICE = 1024
_MAX_SHARED_VERDICTS = 1 << 17
"""Verdicts by key a :class:`SelectorCache` keeps before starting over (~1 per device shape and
selector; as many as devices for a selector reading a per-device attribute like a uuid)."""

_Compiled = tuple[Selector | None, str | None, tuple[str, bool] | None, VerdictKey | None]
"""(selector, compile error, driver guard, its ``verdict_key``)."""


@dataclass(slots=True)
class _DeviceMemo:
    device: Mapping[str, Any]
    """The device the memo is about (a changed device gets a new memo)."""
    prepared: Mapping[str, Any] | str | None = None
    """Its prepared form, or why it could not be prepared."""
    verdicts: dict[str, _Outcome] = field(default_factory=dict)
    """Expression → verdict."""


class SelectorCache:
    """Selector verdicts and prepared devices, kept from one call to the next.

    Pass the same instance to successive :func:`allocate` and :func:`alternatives_report` calls
    (the placement controller keeps one): a device's verdicts are reused while the device is
    unchanged (the same mapping, or an equal one) and the compiler and preparer are the same
    functions. A device that changed or left the fleet is forgotten at the next call; verdicts
    by :data:`VerdictKey` are kept (they name no device), so a device that joins the fleet in a
    known shape is prepared but not evaluated. Without a cache, each call memoizes for itself.
    Not thread-safe."""

    def __init__(self) -> None:
        self._tools: tuple[object, object] | None = None
        self._compiled: dict[str, _Compiled] = {}
        self._devices: dict[tuple[str, str], _DeviceMemo] = {}
        self._shared: dict[str, dict[Hashable, _Outcome]] = {}
        """Expression → verdict key → verdict."""


class _Selectors:
    """Compiled expressions and verdicts per device for one call, over a :class:`SelectorCache`."""

    def __init__(
        self,
        compile_selector: CompileSelector,
        prepare: PrepareDevice | None,
        fleet: _Fleet,
        cache: SelectorCache | None,
    ) -> None:
        cache = SelectorCache() if cache is None else cache
        if cache._tools != (compile_selector, prepare):
            cache._tools = (compile_selector, prepare)
            cache._compiled = {}
            cache._devices = {}
            cache._shared = {}
        elif sum(len(verdicts) for verdicts in cache._shared.values()) > _MAX_SHARED_VERDICTS:
            cache._shared = {}
        self._compile = compile_selector
        self._prepare = prepare
        self._compiled = cache._compiled
        self._shared = cache._shared
        self._drivers = [str(device.get("driver", "")) for device in fleet.devices]
        previous = cache._devices
        self._memos: list[_DeviceMemo] = []
        current: dict[tuple[str, str], _DeviceMemo] = {}
        for key, device in zip(fleet.keys, fleet.devices, strict=True):
            memo = previous.get(key)
            if memo is None or (memo.device is not device and memo.device != device):
                memo = _DeviceMemo(device)
            elif len(memo.verdicts) > _MAX_VERDICTS_PER_DEVICE:
                memo.verdicts.clear()
            self._memos.append(memo)
            current[key] = memo
        cache._devices = current

    def driver(self, device: int) -> str:
        return self._drivers[device]

    def _entry(self, expression: str) -> _Compiled:
        entry = self._compiled.get(expression)
        if entry is None:
            try:
                selector = self._compile(expression)
            except ValueError as exc:
                entry = (None, f"does not compile: {_first_line(exc)}", None, None)
            else:
                keyer = getattr(selector, "verdict_key", None)
                entry = (
                    selector,
                    None,
                    _driver_guard(expression),
                    keyer if callable(keyer) else None,
                )
            self._compiled[expression] = entry
        return entry

    def split(self, expression: str, devices: list[int]) -> tuple[list[int], dict[str | None, int]]:
        """The devices that match, and how many fail per error (``None``: plainly no match)."""
        selector, compile_error, guard, keyer = self._entry(expression)
        if selector is None:
            return [], ({compile_error: len(devices)} if devices else {})
        survivors: list[int] = []
        failures: dict[str | None, int] = {}
        drivers, memos = self._drivers, self._memos
        shared = None if keyer is None else self._shared.setdefault(expression, {})
        for d in devices:
            if guard is not None:
                if drivers[d] != guard[0]:
                    failures[None] = failures.get(None, 0) + 1
                    continue
                if guard[1]:
                    survivors.append(d)
                    continue
            memo = memos[d]
            outcome = memo.verdicts.get(expression)
            if outcome is None:
                outcome = self._evaluate(selector, keyer, shared, memo)
                memo.verdicts[expression] = outcome
            if outcome[0]:
                survivors.append(d)
            else:
                failures[outcome[1]] = failures.get(outcome[1], 0) + 1
        return survivors, failures

    def _evaluate(
        self,
        selector: Selector,
        keyer: VerdictKey | None,
        shared: dict[Hashable, _Outcome] | None,
        memo: _DeviceMemo,
    ) -> _Outcome:
        prepared = memo.prepared
        if prepared is None:
            try:
                prepared = memo.device if self._prepare is None else self._prepare(memo.device)
            except ValueError as exc:
                prepared = f"device not in the DRA shape: {_first_line(exc)}"
            memo.prepared = prepared
        if isinstance(prepared, str):
            return (False, prepared)  # names the device: never shared
        key = None if keyer is None else keyer(prepared)
        if key is not None and shared is not None:
            outcome = shared.get(key)
            if outcome is not None:
                return outcome
        try:
            verdict = selector.evaluate(prepared)
        except ValueError as exc:  # a malformed device, when the selector converts it itself
            return (False, f"device not in the DRA shape: {_first_line(exc)}")
        outcome = _HIT if verdict.matched else (False, verdict.error)
        if key is not None and shared is not None:
            shared[key] = outcome
        return outcome


_ERRORS_SHOWN = 3
"""Distinct evaluation errors of one selector named in a message; the rest are summed."""


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return _clip(lines[0] if lines else type(exc).__name__)


# --- candidates: the devices that qualify for one alternative ---------------------------------

_CandidateKey = tuple[str, tuple[str, ...], frozenset[str], frozenset[str], tuple[str, ...]]


def _alternative_name(alternative: DeviceSubRequest) -> str:
    return alternative.name or alternative.device_class_name


class _Candidates:
    """Qualifying devices for one (alternative, sovereignty, constraints), and the free counts
    per node and ``matchAttribute`` group that placing claims keeps up to date."""

    def __init__(self) -> None:
        self.reasons: list[tuple[str, int]] = []
        """Static exclusions, in order (everything but allocation)."""
        self.eligible: list[int] = []
        """Qualifying devices on any node (cordoned too)."""
        self.group_of: dict[int, tuple[Any, ...]] = {}
        """Device → its ``matchAttribute`` values."""
        self.cordoned = 0
        """Qualifying devices on unschedulable nodes."""
        self.groups: dict[int, dict[tuple[Any, ...], list[int]]] = {}
        """Schedulable node → group → devices in name order (free or not)."""
        self.free: dict[int, dict[tuple[Any, ...], int]] = {}
        self.cap: dict[int, int] = {}
        """Node → the most free devices in one of its groups: what one replica may get there."""
        self.buckets: dict[int, set[int]] = {}
        """cap → nodes with that cap (only caps > 0)."""

    def set_cap(self, node: int) -> None:
        old = self.cap.get(node, 0)
        new = max(self.free[node].values(), default=0)
        if new == old:
            return
        if old:
            bucket = self.buckets[old]
            bucket.discard(node)
            if not bucket:
                del self.buckets[old]
        if new:
            self.buckets.setdefault(new, set()).add(node)
        self.cap[node] = new


class _Call:
    """The state of one :func:`allocate` or :func:`alternatives_report` call."""

    def __init__(
        self,
        *,
        fleet: _Fleet,
        classes: Mapping[str, Sequence[str]],
        compile_selector: CompileSelector,
        prepare_device: PrepareDevice | None,
        cache: SelectorCache | None,
        taken: Iterable[tuple[str, str]],
    ) -> None:
        self.fleet = fleet
        self.classes = classes
        self.selectors = _Selectors(compile_selector, prepare_device, fleet, cache)
        self.taken = bytearray(len(fleet.devices))
        for pair in taken:
            position = fleet.index.get(pair)
            if position is not None:
                self.taken[position] = 1
        self._candidates: dict[_CandidateKey, _Candidates] = {}
        self._products: dict[int, str | None] = {}
        self.path_sizes: dict[int, _PathSizes] = {}
        """For the report (nothing is taken meanwhile): id of a _Candidates → its path sizes."""

    def product(self, device: int) -> str | None:
        if device not in self._products:
            self._products[device] = _product(self.fleet.devices[device])
        return self._products[device]

    def candidates(
        self,
        alternative: DeviceSubRequest,
        sovereignty: Sovereignty | None,
        constraints: tuple[str, ...],
    ) -> _Candidates:
        regions = frozenset(sovereignty.allowed_regions) if sovereignty else frozenset()
        drivers = frozenset(sovereignty.excluded_drivers) if sovereignty else frozenset()
        key: _CandidateKey = (
            alternative.device_class_name,
            tuple(alternative.selectors),
            regions,
            drivers,
            constraints,
        )
        found = self._candidates.get(key)
        if found is None:
            found = self._build(key)
            self._candidates[key] = found
        return found

    def _build(self, key: _CandidateKey) -> _Candidates:
        class_name, expressions, regions, drivers, constraints = key
        fleet = self.fleet
        out = _Candidates()
        remaining: list[int] = list(range(len(fleet.devices)))

        def keep(survivors: list[int], reason: str) -> None:
            nonlocal remaining
            if len(survivors) != len(remaining):
                out.reasons.append((reason, len(remaining) - len(survivors)))
            remaining = survivors

        if regions:
            allowed = [fleet.node_regions[n] in regions for n in range(len(fleet.node_names))]
            keep([d for d in remaining if allowed[fleet.device_node[d]]], "excluded by region")
        if drivers:
            keep(
                [d for d in remaining if fleet.devices[d].get("driver") not in drivers],
                "excluded by driver",
            )
        class_expressions = self.classes.get(class_name)
        if class_expressions is None:
            keep([], f"not in device class {class_name} (no such DeviceClass)")
        else:
            in_class = remaining
            for expression in class_expressions:
                in_class, _ = self.selectors.split(expression, in_class)
            keep(in_class, f"not in device class {class_name}")
        for expression in expressions:
            survivors, failures = self.selectors.split(expression, remaining)
            shown = _clip(expression)
            if None in failures:
                out.reasons.append((f"not matching selector '{shown}'", failures.pop(None)))
            # Most frequent errors first; beyond a few, one line for the rest (error texts may
            # name device-specific values, and the message must stay readable).
            errors = sorted(
                ((e, n) for e, n in failures.items() if e is not None),
                key=lambda item: (-item[1], item[0]),
            )
            for error, n in errors[:_ERRORS_SHOWN]:
                out.reasons.append((f"failing selector '{shown}' ({_clip(error)})", n))
            if rest := sum(n for _, n in errors[_ERRORS_SHOWN:]):
                out.reasons.append(
                    (
                        f"failing selector '{shown}' ({len(errors) - _ERRORS_SHOWN} other errors)",
                        rest,
                    )
                )
            remaining = survivors
        values: dict[int, tuple[Any, ...]] = {}
        for attribute in constraints:
            survivors = []
            for d in remaining:
                value = attribute_value(fleet.devices[d], attribute)
                if value is not None:
                    values[d] = (*values.get(d, ()), value)
                    survivors.append(d)
            keep(survivors, f"missing attribute {attribute}")

        out.eligible = remaining
        for d in remaining:
            node = fleet.device_node[d]
            group = values[d] if constraints else ()
            out.group_of[d] = group
            if fleet.node_cordoned[node]:
                out.cordoned += 1
                continue
            out.groups.setdefault(node, {}).setdefault(group, []).append(d)
            free = out.free.setdefault(node, {})
            free[group] = free.get(group, 0) + (0 if self.taken[d] else 1)
        for node in out.free:
            out.set_cap(node)
        return out

    def take(self, device: int) -> None:
        self.taken[device] = 1
        node = self.fleet.device_node[device]
        if self.fleet.node_cordoned[node]:
            return  # counted by no candidates' free
        # One look-up per alternative built in this call: no more than building it cost.
        for candidates in self._candidates.values():
            group = candidates.group_of.get(device)
            if group is not None:
                candidates.free[node][group] -= 1
                candidates.set_cap(node)


# --- placing ---------------------------------------------------------------------------------


def _pick_node(candidates: _Candidates, count: int, strategy: str, avoid: set[int]) -> int | None:
    caps = [c for c in candidates.buckets if c >= count]
    if not caps:
        return None
    if strategy == "pack":
        return min(candidates.buckets[min(caps)])
    caps.sort(reverse=True)
    if avoid:
        for cap in caps:
            preferred = candidates.buckets[cap] - avoid
            if preferred:
                return min(preferred)
    return min(candidates.buckets[caps[0]])


def _pick_devices(call: _Call, candidates: _Candidates, node: int, count: int) -> list[int]:
    free = candidates.free[node]
    groups = candidates.groups[node]
    best: tuple[int, int] | None = None
    best_group: tuple[Any, ...] = ()
    for group, n in free.items():
        if n < count:
            continue
        first = next(d for d in groups[group] if not call.taken[d])
        if best is None or (n, first) < best:
            best, best_group = (n, first), group
    return [d for d in groups[best_group] if not call.taken[d]][:count]


def _counts(
    call: _Call, candidates: _Candidates, alternative: DeviceSubRequest
) -> AlternativeCounts:
    allocated = available = 0
    for node_groups in candidates.groups.values():
        for devices in node_groups.values():
            for d in devices:
                if call.taken[d]:
                    allocated += 1
                else:
                    available += 1
    reasons = list(candidates.reasons)
    if candidates.cordoned:
        reasons.append(("on unschedulable nodes", candidates.cordoned))
    if allocated:
        reasons.append(("already allocated", allocated))
    return AlternativeCounts(
        request=_alternative_name(alternative),
        device_class=alternative.device_class_name,
        count=alternative.count,
        total=len(call.fleet.devices),
        available=available,
        most_on_one_node=max(candidates.cap.values(), default=0),
        reasons=tuple(reasons),
    )


def allocate(
    claims: Iterable[Claim],
    *,
    fleet: Iterable[Node | Mapping[str, Any]],
    classes: Mapping[str, Sequence[str]],
    compile_selector: CompileSelector,
    taken: Iterable[tuple[str, str]] = (),
    prepare_device: PrepareDevice | None = None,
    cache: SelectorCache | None = None,
) -> dict[str, Allocation | Unschedulable]:
    """Place each claim (one replica's devices), in key order; results by claim key.

    ``fleet``: Nodes, typed or wire. ``classes``: DeviceClass name → its CEL expressions
    (:func:`class_selectors`). ``compile_selector``: compiles an expression (memoized here per
    call; a ``ValueError`` makes that selector fail every device, with the error in the message).
    ``taken``: ``(node, device)`` pairs already held (:func:`taken_devices`); unknown pairs are
    ignored. ``prepare_device``: converts a device once before its first evaluation (with the
    CEL module: ``cel.selector_context``, which makes each evaluation ~25x cheaper); without
    it, selectors get the wire device. ``cache``: verdicts kept across calls
    (:class:`SelectorCache`)."""
    ordered = sorted(claims, key=lambda c: c.key)
    for before, after in itertools.pairwise(ordered):
        if before.key == after.key:
            raise ValueError(f"claim key {after.key!r} appears twice")
    index = _index_fleet(fleet)
    call = _Call(
        fleet=index,
        classes=classes,
        compile_selector=compile_selector,
        prepare_device=prepare_device,
        cache=cache,
        taken=taken,
    )
    node_position = {name: n for n, name in enumerate(index.node_names)}
    group_nodes: dict[str, set[int]] = {}
    results: dict[str, Allocation | Unschedulable] = {}
    for claim in ordered:
        accelerators = claim.accelerators
        constraints = tuple(c.match_attribute for c in accelerators.constraints)
        avoid: set[int] = set()
        if accelerators.strategy == "spread":
            avoid = {node_position[n] for n in claim.spread_avoid if n in node_position}
            if claim.group is not None:
                avoid |= group_nodes.get(claim.group, set())
        placed: Allocation | None = None
        tried: list[tuple[_Candidates, DeviceSubRequest]] = []
        for alternative in accelerators.alternatives():
            candidates = call.candidates(alternative, claim.sovereignty, constraints)
            node = _pick_node(candidates, alternative.count, accelerators.strategy, avoid)
            if node is None:
                tried.append((candidates, alternative))
                continue
            devices = _pick_devices(call, candidates, node, alternative.count)
            for d in devices:
                call.take(d)
            placed = Allocation(
                node=index.node_names[node],
                request=_alternative_name(alternative),
                devices=tuple(
                    DeviceRef(
                        driver=str(index.devices[d]["driver"]), device=str(index.devices[d]["name"])
                    )
                    for d in devices
                ),
            )
            if claim.group is not None:
                group_nodes.setdefault(claim.group, set()).add(node)
            break
        if placed is not None:
            results[claim.key] = placed
            continue
        counts = tuple(_counts(call, c, alternative) for c, alternative in tried)
        message = "; ".join(c.describe(constraints) for c in counts)
        results[claim.key] = Unschedulable(message=message, counts=counts)
    return results


# --- the report of execution paths -----------------------------------------------------------


def alternatives_report(
    claims: Iterable[Claim],
    *,
    fleet: Iterable[Node | Mapping[str, Any]],
    classes: Mapping[str, Sequence[str]],
    compile_selector: CompileSelector,
    taken: Iterable[tuple[str, str]] = (),
    prepare_device: PrepareDevice | None = None,
    cache: SelectorCache | None = None,
) -> dict[str, tuple[AlternativePath, ...]]:
    """Every execution path of each claim (per deployment, say): each alternative on each
    (driver, productName) that could host at least one replica on an empty fleet, with what is
    free now. Paths follow the alternatives' order, then driver, then product.

    A path counts only devices of one product together (``matchAttribute`` groups too), so a
    replica the allocator could place across two products of one node is not counted."""
    index = _index_fleet(fleet)
    call = _Call(
        fleet=index,
        classes=classes,
        compile_selector=compile_selector,
        prepare_device=prepare_device,
        cache=cache,
        taken=taken,
    )
    out: dict[str, tuple[AlternativePath, ...]] = {}
    for claim in sorted(claims, key=lambda c: c.key):
        constraints = tuple(c.match_attribute for c in claim.accelerators.constraints)
        paths: list[AlternativePath] = []
        for alternative in claim.accelerators.alternatives():
            candidates = call.candidates(alternative, claim.sovereignty, constraints)
            paths.extend(_paths(call, candidates, alternative))
        out[claim.key] = tuple(paths)
    return out


_PathSizes = dict[tuple[str, str | None], tuple[int, list[tuple[int, int]]]]
"""(driver, product) → (first device, per (node, matchAttribute group): (devices, free))."""


def _path_sizes(call: _Call, candidates: _Candidates) -> _PathSizes:
    found = call.path_sizes.get(id(candidates))
    if found is not None:
        return found
    fleet = call.fleet
    sizes: dict[tuple[str, str | None], dict[tuple[int, tuple[Any, ...]], list[int]]] = {}
    first: dict[tuple[str, str | None], int] = {}
    for d in candidates.eligible:
        node = fleet.device_node[d]
        path = (call.selectors.driver(d), call.product(d))
        first[path] = min(d, first.get(path, d))
        slot = sizes.setdefault(path, {}).setdefault((node, candidates.group_of[d]), [0, 0])
        slot[0] += 1
        if not call.taken[d] and not fleet.node_cordoned[node]:
            slot[1] += 1
    found = {
        path: (first[path], [(n, f) for n, f in groups.values()])
        for path, groups in sorted(sizes.items(), key=lambda i: (i[0][0], i[0][1] or ""))
    }
    call.path_sizes[id(candidates)] = found
    return found


def _paths(
    call: _Call, candidates: _Candidates, alternative: DeviceSubRequest
) -> list[AlternativePath]:
    count = alternative.count
    out = []
    for (driver, product), (first, groups) in _path_sizes(call, candidates).items():
        replicas = sum(n // count for n, _ in groups)
        if not replicas:
            continue
        out.append(
            AlternativePath(
                request=_alternative_name(alternative),
                device_class=alternative.device_class_name,
                driver=driver,
                product=product,
                count=count,
                devices=sum(n for n, _ in groups),
                free=sum(f for _, f in groups),
                replicas=replicas,
                free_replicas=sum(f // count for _, f in groups),
                attributes=dict(call.fleet.devices[first].get("attributes") or {}),
            )
        )
    return out
