"""Capacity planning: how many replicas, on which execution paths, a service-level objective needs.

Pure: plain functions over plain data (the SLO, the claim's execution paths with what is placed on
and free for each, the device profiles). It MUST NOT read a clock or do I/O.

The plan walks the paths in the claim's order of preference, as the allocator does: each path
takes as many replicas as it can host (those already placed on it plus those that fit now) until
their throughput, from :func:`aviator.placement.profiles.max_throughput_rps` at the SLO's request
shape and TTFT bound, covers the target. A path whose device has no profile, or whose replica
cannot meet the TTFT bound even idle, gets nothing. When the fleet runs out first, the plan is
*unattainable*: the rest is counted at the most preferred useful path's rate, so the replicas
asked for stay Pending and say why, rather than the deployment silently under-serving.

A deployment without a claim runs the simulator on the plane's machine with fixed latencies, so
one replica sustains ``slots / (ttft + (output - 1) * itl)`` requests/s while
``ttft <= bound`` (Little's law with 90 % of ``max_num_seqs`` busy, the same headroom the profile
model keeps), nothing otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aviator.api.modeldeployment import (
    CapacityPlan,
    PathReplicas,
    ServiceLevelObjective,
    SimulatorOptions,
)
from aviator.placement import profiles

__all__ = [
    "PathCapacity",
    "PathPlan",
    "Plan",
    "plan_replicas",
    "replica_rps",
    "simulator_replica_rps",
]

_SLOT_HEADROOM = 0.9
_MIN_RATE = 1e-3
"""Requests/s below which a replica is no use (one request every quarter of an hour)."""


@dataclass(frozen=True, slots=True)
class PathCapacity:
    """One execution path as the planner sees it."""

    request: str
    driver: str
    product: str | None
    count: int
    """Devices per replica (the tensor-parallel degree)."""
    placed: int
    """Replicas of this deployment already on this path."""
    fits_now: int
    """Further replicas the fleet can host on it now."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """A qualifying device's attributes: how its profile is found."""


@dataclass(frozen=True, slots=True)
class PathPlan:
    request: str
    driver: str
    product: str | None
    replica_rps: float
    replicas: int


@dataclass(frozen=True, slots=True)
class Plan:
    replicas: int
    attainable: bool
    paths: tuple[PathPlan, ...]
    message: str


def replica_rps(
    slo: ServiceLevelObjective, model_class: profiles.ModelClass, path: PathCapacity
) -> float:
    """Requests/s one replica on ``path`` sustains within the SLO's TTFT bound (0.0 if none)."""
    profile = profiles.profile_for_device(path.driver, path.attributes)
    if profile is None:
        return 0.0
    try:
        return profiles.max_throughput_rps(
            profile,
            model_class,
            prompt_tokens=slo.prompt_tokens,
            output_tokens=slo.output_tokens,
            ttft_p90_budget_s=slo.ttft_p90_ms / 1000,
            tensor_parallel=path.count,
        )
    except ValueError:
        # The model does not fit this many devices of this product (or the degree is invalid).
        return 0.0


def simulator_replica_rps(slo: ServiceLevelObjective, options: SimulatorOptions) -> float:
    """Requests/s one simulator replica with fixed ``options`` sustains within the TTFT bound."""
    if options.ttft_ms > slo.ttft_p90_ms:
        return 0.0
    seconds = (options.ttft_ms + (slo.output_tokens - 1) * options.itl_ms) / 1000
    slots = max(1.0, _SLOT_HEADROOM * options.max_num_seqs)
    return math.inf if seconds <= 0 else slots / seconds


def plan_replicas(
    slo: ServiceLevelObjective,
    *,
    paths: Sequence[PathCapacity],
    rates: Mapping[int, float],
) -> Plan:
    """Replicas per path for ``slo``; ``rates[i]`` is one replica's requests/s on ``paths[i]``
    (from :func:`replica_rps`, or :func:`simulator_replica_rps` for a claim-less deployment)."""
    target = slo.requests_per_second
    remaining = target
    planned: list[PathPlan] = []
    for i, path in enumerate(paths):
        rate = rates.get(i, 0.0)
        rate = rate if rate >= _MIN_RATE else 0.0
        hosts = path.placed + path.fits_now
        take = 0
        if rate > 0 and remaining > 0 and hosts > 0:
            take = min(hosts, _replicas_for(remaining, rate))
            remaining -= take * rate
        planned.append(PathPlan(path.request, path.driver, path.product, rate, take))
    total = sum(p.replicas for p in planned)
    if remaining <= 1e-9:
        return Plan(
            replicas=total,
            attainable=True,
            paths=tuple(planned),
            message=f"{total} replica(s) serve {_rps(target)} req/s within "
            f"TTFT p90 {slo.ttft_p90_ms:g} ms",
        )
    useful = next((i for i, p in enumerate(planned) if p.replica_rps > 0), None)
    if useful is None:
        return Plan(
            replicas=total,
            attainable=False,
            paths=tuple(planned),
            message=f"no execution path meets TTFT p90 {slo.ttft_p90_ms:g} ms for "
            f"{slo.prompt_tokens}-token prompts"
            + ("" if paths else " (the claim has no execution path)"),
        )
    # The fleet is too small: ask for the rest on the most preferred useful path; those replicas
    # stay Pending with the scheduler's reason.
    extra = _replicas_for(remaining, planned[useful].replica_rps)
    first = planned[useful]
    planned[useful] = PathPlan(
        first.request, first.driver, first.product, first.replica_rps, first.replicas + extra
    )
    served = target - remaining
    return Plan(
        replicas=total + extra,
        attainable=False,
        paths=tuple(planned),
        message=f"the fleet hosts replicas for {_rps(served)} of {_rps(target)} req/s; "
        f"{extra} more replica(s) wait for devices",
    )


def plan_status(plan: Plan) -> CapacityPlan:
    """``plan`` as a ModelDeployment's ``status.capacity`` (rates rounded for display); the one
    spelling both homes write."""
    return CapacityPlan(
        replicas=plan.replicas,
        attainable=plan.attainable,
        message=plan.message,
        paths=[
            PathReplicas(
                request=p.request,
                driver=p.driver,
                product=p.product,
                replica_rps=round(p.replica_rps, 3),
                replicas=p.replicas,
            )
            for p in plan.paths
        ],
    )


def _replicas_for(rate_needed: float, replica_rate: float) -> int:
    if math.isinf(replica_rate):
        return 1
    # A hair of tolerance so 10.0 / (10.0 / 3) is 3 replicas, not 4.
    return max(1, math.ceil(rate_needed / replica_rate - 1e-9))


def _rps(value: float) -> str:
    return f"{value:.3g}"
