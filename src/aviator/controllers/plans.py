"""Pure planning for ModelDeployments: which Replicas should exist, and what status says.

No I/O here: functions take typed objects and ``now`` and return plans, so every rule is unit-
and property-tested without a store or a process.

Rollout: a template change (model, engine, args, env, engine options) produces a new template
hash and new replica names (``<deployment>-<hash>-<index>``, deterministic so a crash between
"create" and "record" can never produce a duplicate). Outdated replicas are removed only once the
current template has all desired replicas Ready (a surge rollout, never below availability), or
immediately when the deployment scales to zero.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from aviator.api.meta import (
    GROUP_VERSION,
    Condition,
    ObjectMeta,
    OwnerReference,
    find_condition,
    set_condition,
)
from aviator.api.modeldeployment import (
    CapacityPlan,
    ExecutionPath,
    ModelDeployment,
    ModelDeploymentStatus,
    ReplicaEndpoint,
    ReplicaPlacement,
)
from aviator.api.replica import (
    LABEL_DEPLOYMENT,
    LABEL_TEMPLATE_HASH,
    READY,
    RUNTIME_FINALIZER,
    SCHEDULED,
    Replica,
    ReplicaEngine,
    ReplicaSpec,
)

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_LIMITED = "ScalingLimited"


@dataclass(frozen=True, slots=True)
class Scale:
    """How many replicas a deployment should have now, and why."""

    desired: int
    """Replicas to run."""
    floor: int
    """``replicas.min`` raised by the SLO (within ``replicas.max``): Available needs this many."""
    capacity: CapacityPlan | None = None
    limited: str = ""
    """Why the count is held below what the SLO or the load asks for; empty when it is not."""
    managed: bool = False
    """An SLO or the autoscaler is in play (the ScalingLimited condition is reported)."""

    @classmethod
    def fixed(cls, md: ModelDeployment) -> Scale:
        return cls(desired=md.spec.replicas.min, floor=md.spec.replicas.min)


def resolve_engine(md: ModelDeployment) -> ReplicaEngine:
    """The engine replicas start with. ``auto`` stays ``auto`` for a deployment that claims
    accelerators (scheduling picks an engine that fits the device) and is the simulator
    otherwise (no device to run anything else on)."""
    engine = md.spec.engine
    if engine == "auto" and md.spec.accelerators is None:
        return "sim"
    return engine


def replica_template(md: ModelDeployment) -> ReplicaSpec:
    spec = md.spec
    claims = spec.accelerators is not None
    return ReplicaSpec(
        model=spec.model,
        engine=resolve_engine(md),
        engine_args=list(spec.engine_args),
        env=dict(spec.env),
        simulator=spec.simulator,
        external=spec.external,
        accelerators=spec.accelerators,
        sovereignty=spec.sovereignty,
        # With a claim the replica waits, unscheduled, until devices are allocated to it.
        node="" if claims else "local",
    )


def template_hash(template: ReplicaSpec) -> str:
    canonical = orjson.dumps(
        template.model_dump(mode="json", by_alias=True, exclude_none=True),
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:8]


def replica_name(md_name: str, hash_: str, index: int) -> str:
    return f"{md_name}-{hash_}-{index}"


def is_ready(replica: Replica) -> bool:
    cond = find_condition(replica.status.conditions, READY)
    return (
        cond is not None
        and cond.status == "True"
        and replica.status.endpoint is not None
        and replica.metadata.deletion_timestamp is None
    )


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    create: tuple[Replica, ...]
    delete: tuple[str, ...]
    """Names of replicas to delete."""
    template_hash: str
    desired: int


def plan_replicas(
    md: ModelDeployment, owned: list[Replica], *, desired: int | None = None
) -> ReplicaPlan:
    """Replicas to create and delete so that ``owned`` converges on ``desired`` replicas of
    ``md``'s template (default ``replicas.min``). Scaling down removes the highest indices."""
    template = replica_template(md)
    hash_ = template_hash(template)
    if desired is None:
        desired = md.spec.replicas.min
    live = [r for r in owned if r.metadata.deletion_timestamp is None]
    current = {r.name: r for r in live if r.spec.template_hash == hash_}
    wanted = [replica_name(md.name, hash_, i) for i in range(desired)]

    creates = tuple(
        new_replica(md, template=template, hash_=hash_, name=name)
        for name in wanted
        if name not in current
    )
    deletes = [name for name in current if name not in wanted]
    outdated = [r.name for r in live if r.spec.template_hash != hash_]
    current_ready = sum(1 for name in wanted if name in current and is_ready(current[name]))
    if outdated and (desired == 0 or current_ready >= desired):
        deletes.extend(outdated)
    return ReplicaPlan(
        create=creates, delete=tuple(sorted(deletes)), template_hash=hash_, desired=desired
    )


def new_replica(md: ModelDeployment, *, template: ReplicaSpec, hash_: str, name: str) -> Replica:
    spec = template.model_copy(update={"template_hash": hash_})
    return Replica(
        metadata=ObjectMeta(
            name=name,
            namespace=md.namespace,
            labels={**md.metadata.labels, LABEL_DEPLOYMENT: md.name, LABEL_TEMPLATE_HASH: hash_},
            finalizers=[RUNTIME_FINALIZER],
            owner_references=[
                OwnerReference(
                    api_version=GROUP_VERSION,
                    kind=md.kind,
                    name=md.name,
                    uid=md.metadata.uid or "",
                    controller=True,
                    block_owner_deletion=True,
                )
            ],
        ),
        spec=spec,
    )


def owned_by(md: ModelDeployment, replicas: list[dict[str, Any]]) -> list[Replica]:
    uid = md.metadata.uid
    out = []
    for raw in replicas:
        refs = raw["metadata"].get("ownerReferences") or ()
        if any(ref.get("uid") == uid and ref.get("controller") for ref in refs):
            out.append(Replica.from_raw(raw))
    return out


def deployment_status(
    md: ModelDeployment,
    owned: list[Replica],
    *,
    template_hash: str,
    now: datetime,
    alternatives: list[ExecutionPath] | None = None,
    scale: Scale | None = None,
) -> ModelDeploymentStatus:
    """The status ``md`` should show given its replicas as observed."""
    scale = scale or Scale.fixed(md)
    desired = scale.desired
    live = sorted((r for r in owned if r.metadata.deletion_timestamp is None), key=lambda r: r.name)
    ready = [r for r in live if is_ready(r)]
    updated = [r for r in live if r.spec.template_hash == template_hash]
    updated_ready = [r for r in updated if is_ready(r)]
    failing = [
        r for r in live if r.status.phase == "Failed" or (r.status.restarts > 0 and not is_ready(r))
    ]
    generation = md.metadata.generation
    conditions: list[Condition] = list(md.status.conditions)

    # Like a Deployment's, availability is about the minimum, not about an autoscaler's surge.
    available = len(ready) >= scale.floor
    conditions = set_condition(
        conditions,
        type=AVAILABLE,
        status="True" if available else "False",
        reason="MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
        message=f"{len(ready)}/{desired} replicas ready"
        + (f" (at least {scale.floor} needed)" if scale.floor != desired else ""),
        now=now,
        observed_generation=generation,
    )
    rollout_done = len(updated_ready) >= desired and len(live) == desired
    conditions = set_condition(
        conditions,
        type=PROGRESSING,
        status="True",
        reason="NewReplicasAvailable" if rollout_done else "ReplicasUpdating",
        message=(
            f"all {desired} replicas run the current template"
            if rollout_done
            else f"{len(updated_ready)}/{desired} current replicas ready, {len(live)} replicas exist"
        ),
        now=now,
        observed_generation=generation,
    )
    if md.spec.accelerators is not None:
        waiting = [r for r in live if not r.spec.node]
        if waiting:
            cond = find_condition(waiting[0].status.conditions, SCHEDULED)
            why = (
                cond.message
                if cond is not None and cond.status == "False"
                else "waiting for devices"
            )
            conditions = set_condition(
                conditions,
                type=SCHEDULED,
                status="False",
                reason="Unschedulable",
                message=f"{len(waiting)} replica(s) not placed: {why}",
                now=now,
                observed_generation=generation,
            )
        else:
            conditions = set_condition(
                conditions,
                type=SCHEDULED,
                status="True",
                reason="AllReplicasPlaced",
                message=f"{len(live)} replica(s) placed",
                now=now,
                observed_generation=generation,
            )
    if scale.managed:
        conditions = set_condition(
            conditions,
            type=SCALING_LIMITED,
            status="True" if scale.limited else "False",
            reason="TooFewReplicas" if scale.limited else "DesiredWithinRange",
            message=scale.limited or f"{desired} replica(s) desired",
            now=now,
            observed_generation=generation,
        )
    if failing:
        worst = failing[0]
        detail = worst.status.message or (
            worst.status.last_exit.reason if worst.status.last_exit else ""
        )
        conditions = set_condition(
            conditions,
            type=DEGRADED,
            status="True",
            reason="ReplicaFailing",
            message=f"replica {worst.name} is {worst.status.phase.lower()} after {worst.status.restarts} "
            f"restart(s){': ' + detail if detail else ''}",
            now=now,
            observed_generation=generation,
        )
    else:
        conditions = set_condition(
            conditions,
            type=DEGRADED,
            status="False",
            reason="AsExpected",
            message="",
            now=now,
            observed_generation=generation,
        )
    return ModelDeploymentStatus(
        observed_generation=generation,
        conditions=conditions,
        desired_replicas=desired,
        capacity=scale.capacity,
        replicas=len(live),
        ready_replicas=len(ready),
        updated_replicas=len(updated),
        endpoints=[ReplicaEndpoint(replica=r.name, url=r.status.endpoint or "") for r in ready],
        placement=[
            ReplicaPlacement(
                replica=r.name,
                node=r.spec.node,
                devices=[d.device for d in r.spec.devices],
                engine=r.spec.engine,
            )
            for r in live
            if r.spec.accelerators is not None and r.spec.node
        ],
        alternatives=list(alternatives or []),
    )
