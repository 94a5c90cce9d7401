"""Portability: which vendors and engines each deployment could run on, and how concentrated the
fleet's allocated devices are by vendor.

Pure functions over the objects the Control API lists (typed, or the wire dicts): no I/O.

- A deployment's *paths* are its ``status.alternatives`` (every alternative, driver and product
  that satisfies its claim on this fleet, as its controller last computed them). The vendors it
  could run on are the vendors of those paths' drivers; the engines are the union of the engines
  the compatibility matrix allows on them, in preference order (``engines.ENGINES``). A pinned
  engine (not ``auto``) narrows the paths to those whose matrix entry allows it.
- What it *runs on* is the vendors of the devices its replicas hold (``spec.devices``).
- Flags: :data:`SINGLE_PATH` when every path is one vendor's (vendor lock-in, however many
  products), :data:`NO_PATH` when it claims accelerators and no path exists, :data:`NOT_OBSERVED`
  when its controller has not reported paths for the current generation yet (then ``no-path`` is
  not claimed). A deployment without an accelerator claim is reported, unflagged, as running
  anywhere: it needs no device.
- The fleet's vendor concentration is the Herfindahl-Hirschman Index of the allocated devices
  (each ``(node, device)`` once, whoever holds it) by vendor: ``Σ (100 · share)²`` on the
  0 to 10,000 scale the US DOJ and FTC use (shares in percent). 10,000 is one vendor; ``10,000 / n``
  is n vendors with equal shares. With no device allocated it is undefined (``None``).

A vendor is data: :data:`VENDORS` maps DRA driver names to vendor labels, and is the only place a
vendor is named; an unknown driver's vendor is its domain without the device-type label
(:func:`vendor_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aviator.api.modeldeployment import ExecutionPath, ModelDeployment
from aviator.api.replica import LABEL_DEPLOYMENT, Replica
from aviator.placement.engines import DRIVER_ALIASES, ENGINES

__all__ = [
    "HHI_MAX",
    "HHI_SOURCE",
    "HIGHLY_CONCENTRATED",
    "HIGHLY_CONCENTRATED_ABOVE",
    "MODERATELY_CONCENTRATED",
    "NOT_OBSERVED",
    "NO_PATH",
    "RUNS_ANYWHERE",
    "SINGLE_PATH",
    "UNCONCENTRATED",
    "UNCONCENTRATED_BELOW",
    "VENDORS",
    "DeploymentPortability",
    "FleetReport",
    "VendorShare",
    "concentration",
    "deployment_portability",
    "hhi",
    "report",
    "vendor_of",
]

VENDORS: Mapping[str, str] = {
    # The DRA drivers of aviator.placement.deviceclasses (upstream driver projects named there)
    # and of the engine matrix (aviator.placement.engines).
    "gpu.nvidia.com": "NVIDIA",
    "gpu.amd.com": "AMD",
    "gaudi.intel.com": "Intel",
    "gpu.intel.com": "Intel",  # intel/intel-resource-drivers-for-kubernetes (Data Center GPU Max, Arc)
    "tpu.google.com": "Google",
    "dra.cpu": "CPU",  # kubernetes-sigs/dra-driver-cpu: CPUs of any make, one label
}
"""DRA driver name → vendor label. Drivers not listed fall back to :func:`vendor_of`'s rule."""

SINGLE_PATH = "single-path"
"""Flag: every execution path of the deployment is one vendor's (vendor lock-in)."""
NO_PATH = "no-path"
"""Flag: the deployment claims accelerators and no execution path satisfies the claim."""
NOT_OBSERVED = "not-observed"
"""Flag: the controller has not reported the paths of the deployment's current generation."""
RUNS_ANYWHERE = "runs anywhere (no accelerator claim)"
"""How a deployment without ``spec.accelerators`` is described: it needs no device."""

HHI_MAX = 10_000
"""One vendor holds every allocated device."""

# Concentration bands of the US DOJ/FTC Horizontal Merger Guidelines (19 August 2010), §5.3:
# "Unconcentrated Markets: HHI below 1500; Moderately Concentrated Markets: HHI between 1500 and
# 2500; Highly Concentrated Markets: HHI above 2500". The 2023 Merger Guidelines (Guideline 1)
# lowered the bar: highly concentrated above 1,800, the level of the 1992 guidelines (which
# called 1,000 to 1,800 moderately concentrated). The 2010 bands are used here: a fleet has few
# accelerator vendors, so even five with equal shares (HHI 2,000) would be "highly concentrated"
# by the 2023 level, and the band would no longer tell a diversified fleet from a locked-in one.
UNCONCENTRATED_BELOW = 1_500.0
HIGHLY_CONCENTRATED_ABOVE = 2_500.0
UNCONCENTRATED = "unconcentrated"
MODERATELY_CONCENTRATED = "moderately concentrated"
HIGHLY_CONCENTRATED = "highly concentrated"
HHI_SOURCE = "US DOJ/FTC Horizontal Merger Guidelines (2010), section 5.3"
"""Where the concentration bands come from."""


def vendor_of(driver: str) -> str:
    """The vendor label of a DRA driver: :data:`VENDORS`, else the driver's domain without its
    first label when it has three or more (DRA drivers are named ``<device type>.<vendor
    domain>``: ``gpu.example.com`` → ``example.com``), else the driver name itself."""
    canonical = DRIVER_ALIASES.get(driver, driver)
    known = VENDORS.get(canonical)
    if known is not None:
        return known
    labels = canonical.split(".")
    return ".".join(labels[1:]) if len(labels) > 2 else canonical


def hhi(counts: Iterable[int]) -> float | None:
    """Herfindahl-Hirschman Index of these counts (devices per vendor): ``Σ (100 · share)²``,
    from 10,000 / n (n equal shares) to 10,000 (one). ``None`` when the counts sum to zero."""
    values = list(counts)
    if any(c < 0 for c in values):
        raise ValueError(f"counts must not be negative: {values}")
    total = sum(values)
    if total == 0:
        return None
    # An integer numerator and denominator: Python rounds their quotient correctly, so one
    # vendor gives exactly 10,000, and the result is never below the float nearest 10,000 / n.
    return HHI_MAX * sum(c * c for c in values) / (total * total)


def concentration(index: float | None) -> str | None:
    """The 2010 Horizontal Merger Guidelines band of an HHI (see :data:`HHI_SOURCE`)."""
    if index is None:
        return None
    if index < UNCONCENTRATED_BELOW:
        return UNCONCENTRATED
    if index <= HIGHLY_CONCENTRATED_ABOVE:
        return MODERATELY_CONCENTRATED
    return HIGHLY_CONCENTRATED


@dataclass(frozen=True, slots=True)
class DeploymentPortability:
    """Where one deployment could run, and where it runs."""

    namespace: str
    name: str
    claim: bool
    """Whether it claims accelerators; without a claim it runs anywhere."""
    engine: str
    """Its declared engine (``spec.engine``)."""
    paths: int
    """Execution paths it could take (its engine allowing)."""
    vendors: tuple[str, ...]
    """Vendors of those paths, most preferred first."""
    engines: tuple[str, ...]
    """Engines it could run on those paths, in preference order."""
    drivers: tuple[str, ...]
    """DRA drivers of those paths, most preferred first."""
    runs_on: tuple[str, ...]
    """Vendors of the devices its replicas hold now."""
    flags: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML form (camelCase keys)."""
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "claim": self.claim,
            "engine": self.engine,
            "paths": self.paths,
            "vendors": list(self.vendors),
            "engines": list(self.engines),
            "drivers": list(self.drivers),
            "runsOn": list(self.runs_on),
            "flags": list(self.flags),
        }
        if not self.claim:
            out["note"] = RUNS_ANYWHERE
        return out


@dataclass(frozen=True, slots=True)
class VendorShare:
    vendor: str
    devices: int
    share: float
    """Of all allocated devices, from 0 to 1."""


@dataclass(frozen=True, slots=True)
class FleetReport:
    deployments: tuple[DeploymentPortability, ...]
    """By namespace, then name."""
    by_vendor: tuple[VendorShare, ...]
    """Allocated devices per vendor, most first (then by name)."""
    allocated_devices: int
    hhi: float | None
    """Vendor concentration of the allocated devices; ``None`` when none is allocated."""

    @property
    def band(self) -> str | None:
        """The concentration band of :attr:`hhi` (:func:`concentration`)."""
        return concentration(self.hhi)

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML form (camelCase keys)."""
        return {
            "deployments": [d.to_dict() for d in self.deployments],
            "fleet": {
                "allocatedDevices": self.allocated_devices,
                "byVendor": [
                    {"vendor": v.vendor, "devices": v.devices, "share": v.share}
                    for v in self.by_vendor
                ],
                "hhi": self.hhi,
                "concentration": self.band,
                "thresholds": HHI_SOURCE,
            },
        }


def _ordered_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _engine_rank(engine: str) -> int:
    return ENGINES.index(engine) if engine in ENGINES else len(ENGINES)


def _usable(path: ExecutionPath, engine: str) -> bool:
    # A path reported without engines predates the field: nothing is known against it.
    if engine == "auto" or engine not in ENGINES or not path.engines:
        return True
    return engine in path.engines


def _observed(md: ModelDeployment) -> bool:
    observed = md.status.observed_generation
    generation = md.metadata.generation
    return observed is not None and (generation is None or observed >= generation)


def deployment_portability(
    md: ModelDeployment, held_drivers: Iterable[str] = ()
) -> DeploymentPortability:
    """One deployment's row; ``held_drivers`` are the drivers of the devices its replicas hold."""
    held = [vendor_of(d) for d in held_drivers]
    engine = md.spec.engine
    if md.spec.accelerators is None:
        return DeploymentPortability(
            namespace=md.namespace,
            name=md.name,
            claim=False,
            engine=engine,
            paths=0,
            vendors=(),
            engines=(engine,),
            drivers=(),
            runs_on=tuple(sorted(set(held))),
            flags=(),
        )
    paths = [p for p in md.status.alternatives if _usable(p, engine)]
    vendors = _ordered_unique(vendor_of(p.driver) for p in paths)
    if engine != "auto":
        engines: tuple[str, ...] = (engine,) if paths else ()
    else:
        union = _ordered_unique(e for p in paths for e in p.engines)
        engines = tuple(sorted(union, key=_engine_rank))  # stable: unknown ones keep their order
    runs_on = tuple(v for v in vendors if v in held) + tuple(sorted(set(held) - set(vendors)))
    flags: list[str] = []
    observed = _observed(md)
    if not observed:
        flags.append(NOT_OBSERVED)
    if len(vendors) == 1:
        flags.append(SINGLE_PATH)
    elif not vendors and observed:
        flags.append(NO_PATH)
    return DeploymentPortability(
        namespace=md.namespace,
        name=md.name,
        claim=True,
        engine=engine,
        paths=len(paths),
        vendors=vendors,
        engines=engines,
        drivers=_ordered_unique(p.driver for p in paths),
        runs_on=runs_on,
        flags=tuple(flags),
    )


def _typed_md(obj: ModelDeployment | Mapping[str, Any]) -> ModelDeployment:
    return obj if isinstance(obj, ModelDeployment) else ModelDeployment.model_validate(obj)


def _typed_replica(obj: Replica | Mapping[str, Any]) -> Replica:
    return obj if isinstance(obj, Replica) else Replica.model_validate(obj)


def report(
    deployments: Iterable[ModelDeployment | Mapping[str, Any]],
    replicas: Iterable[Replica | Mapping[str, Any]],
) -> FleetReport:
    """The portability report of these deployments and replicas (typed, or as listed from the
    API). A replica belongs to the deployment its controller ``ownerReference`` names by uid or,
    when it has no controller, the one its ``aviator.dev/model-deployment`` label names in its
    namespace. Every replica's devices count towards the fleet, owned or not."""
    mds = sorted((_typed_md(d) for d in deployments), key=lambda m: (m.namespace, m.name))
    by_uid = {m.metadata.uid: m for m in mds if m.metadata.uid}
    by_name = {(m.namespace, m.name): m for m in mds}
    held: dict[tuple[str, str], list[str]] = {}
    allocated: dict[tuple[str, str], str] = {}
    for replica in (_typed_replica(r) for r in replicas):
        for device in replica.spec.devices:
            allocated.setdefault((replica.spec.node, device.device), device.driver)
        controller = next((r for r in replica.metadata.owner_references if r.controller), None)
        if controller is not None:
            # A deployment re-created under the same name does not adopt the old one's replicas.
            owner = by_uid.get(controller.uid)
        else:
            label = replica.metadata.labels.get(LABEL_DEPLOYMENT)
            owner = by_name.get((replica.namespace, label)) if label else None
        if owner is not None:
            held.setdefault((owner.namespace, owner.name), []).extend(
                d.driver for d in replica.spec.devices
            )
    counts: dict[str, int] = {}
    for driver in allocated.values():
        vendor = vendor_of(driver)
        counts[vendor] = counts.get(vendor, 0) + 1
    total = sum(counts.values())
    shares = tuple(
        VendorShare(vendor=vendor, devices=n, share=n / total)
        for vendor, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    )
    return FleetReport(
        deployments=tuple(
            deployment_portability(m, held.get((m.namespace, m.name), ())) for m in mds
        ),
        by_vendor=shares,
        allocated_devices=total,
        hhi=hhi(counts.values()),
    )
