"""The operator's decisions, as plain functions over plain data: the core both homes share.

For one ModelDeployment CR as read from the cluster, these functions decide

- what the object *is*: :func:`admit` runs the plane's own admission (defaults and validation,
  ``aviator.api.admission``) on the CR;
- how many replicas: :func:`capacity_plan` and :func:`scale` are the embedded
  ModelDeployment controller's SLO planning (``aviator.placement.capacity`` over the claim's
  execution paths from ``aviator.placement.allocator``), with the cluster's ResourceSlices and
  ResourceClaims as the fleet (:func:`fleet`); the load-driven part is the
  HorizontalPodAutoscaler's in a cluster, so the Deployment's live count is taken as is;
- what to apply (:func:`desired`, which is ``aviator.k8s.render``) and what to prune
  (:func:`stale`): objects this ModelDeployment owns that the renderer no longer produces;
- what status to write (:func:`status`): readyReplicas from the Deployment, endpoints from the
  Service's EndpointSlices, and the conditions the embedded controller reports.

Pure: no cluster, no clock (``now`` is an argument), no I/O. The shells in
``aviator.operator.reconciler`` read the cluster, call these and write the results.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from aviator.api import admission, kinds
from aviator.api.meta import Condition, find_condition, set_condition
from aviator.api.modeldeployment import (
    CapacityPlan,
    ModelDeployment,
    ModelDeploymentStatus,
    ReplicaEndpoint,
    SimulatorOptions,
    Sovereignty,
)
from aviator.api.replica import LABEL_DEPLOYMENT
from aviator.controllers import plans
from aviator.controllers.scheduling import execution_paths_status, model_class_for
from aviator.k8s.render import Rendered, RenderOptions, render
from aviator.operator.resources import INFERENCE_POOLS, MANAGED, ObjectRef, ref_of
from aviator.placement import allocator, capacity, engines
from aviator.placement.cel import compile_selector, selector_context

__all__ = [
    "INFERENCE_POOL",
    "MANAGED_BY",
    "Fleet",
    "PoolOutcome",
    "admit",
    "autoscaled",
    "capacity_plan",
    "desired",
    "endpoints",
    "execution_paths",
    "fleet",
    "invalid_status",
    "observed_status",
    "owned_labels",
    "retry_delay",
    "scale",
    "stale",
    "status",
]

MANAGED_BY = "aviator"
"""``app.kubernetes.io/managed-by`` on everything the renderer produces."""

INFERENCE_POOL = "InferencePool"
"""The condition saying whether the InferencePool exists: shown once it could not be created."""

PoolOutcome = Literal["applied", "not-served", "off"]
"""What the last reconcile did with the InferencePool: applied it, skipped it because the cluster
does not serve its type, or left it out because ``--inference-pool off``."""

_KNOWN_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "creationTimestamp",
    "deletionTimestamp",
    "finalizers",
    "ownerReferences",
)
"""The metadata aviator's model knows; the API server adds more (``managedFields``...)."""


# --- what the object is ------------------------------------------------------------------------


def admit(body: Mapping[str, Any]) -> ModelDeployment:
    """The CR after the plane's admission (defaults applied); ``aviator.api.errors.Invalid``
    (with field paths) when the spec is one the plane would have refused."""
    meta = body.get("metadata") or {}
    projected = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KNOWN_METADATA if meta.get(k) is not None},
        "spec": body.get("spec"),
    }
    raw = admission.admit(projected, kind=kinds.MODEL_DEPLOYMENT, namespace=meta.get("namespace"))
    return ModelDeployment.from_raw(raw)


def observed_status(body: Mapping[str, Any]) -> ModelDeploymentStatus:
    """The status the CR carries now; empty when it is missing or not aviator's."""
    try:
        return ModelDeploymentStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ModelDeploymentStatus()


# --- the fleet ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fleet:
    """The cluster's devices as the allocator sees them (aviator Node dicts, one per node)."""

    nodes: tuple[dict[str, Any], ...] = ()
    classes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """DeviceClass name to its CEL selectors."""
    taken: frozenset[tuple[str, str]] = frozenset()
    """(node, device) allocated to any ResourceClaim."""
    ours: Mapping[tuple[str, str | None], int] = field(default_factory=dict)
    """Replicas of *this* deployment holding devices, by (driver, productName)."""


def _device_key(driver: str, pool: str, device: str) -> str:
    # Device names are unique per pool, not per node: two drivers may both have "gpu-0".
    return f"{driver}/{pool}/{device}"


def fleet(
    *,
    resource_slices: Iterable[Mapping[str, Any]],
    device_classes: Iterable[Mapping[str, Any]],
    resource_claims: Iterable[Mapping[str, Any]] = (),
    deployment: str | None = None,
) -> Fleet:
    """The fleet from ``resource.k8s.io/v1`` objects.

    Only node-local devices count (a slice with ``nodeName``), and of each pool only the newest
    generation, as the scheduler does. ``deployment`` names the ModelDeployment whose claims
    (labelled by the renderer) are counted as already placed."""
    newest: dict[tuple[str, str], int] = {}
    for s in resource_slices:
        spec = s.get("spec") or {}
        pool = spec.get("pool") or {}
        key = (str(spec.get("driver", "")), str(pool.get("name", "")))
        newest[key] = max(newest.get(key, 0), int(pool.get("generation") or 0))
    devices: dict[str, list[dict[str, Any]]] = {}
    node_of: dict[tuple[str, str], str] = {}
    products: dict[tuple[str, str], str | None] = {}
    for s in resource_slices:
        spec = s.get("spec") or {}
        node = str(spec.get("nodeName") or "")
        driver = str(spec.get("driver", ""))
        pool = spec.get("pool") or {}
        pool_name = str(pool.get("name", ""))
        if not node or int(pool.get("generation") or 0) < newest[(driver, pool_name)]:
            continue
        node_of[(driver, pool_name)] = node
        for d in spec.get("devices") or ():
            device_name = _device_key(driver, pool_name, str(d.get("name", "")))
            device: dict[str, Any] = {
                "name": device_name,
                "driver": driver,
                "attributes": dict(d.get("attributes") or {}),
                "capacity": {
                    k: {"value": str((v or {}).get("value", ""))}
                    for k, v in (d.get("capacity") or {}).items()
                },
            }
            devices.setdefault(node, []).append(device)
            value = allocator.attribute_value(device, "productName")
            products[(node, device_name)] = None if value is None else str(value[1])
    taken: set[tuple[str, str]] = set()
    ours: Counter[tuple[str, str | None]] = Counter()
    for claim in resource_claims:
        results = (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get(
            "results"
        ) or ()
        labels = (claim.get("metadata") or {}).get("labels") or {}
        mine = deployment is not None and labels.get(LABEL_DEPLOYMENT) == deployment
        first: tuple[str, str | None] | None = None
        for r in results:
            driver, pool_name = str(r.get("driver", "")), str(r.get("pool", ""))
            held_on = node_of.get((driver, pool_name))
            if held_on is None:
                continue
            name = _device_key(driver, pool_name, str(r.get("device", "")))
            taken.add((held_on, name))
            if first is None:
                first = (driver, products.get((held_on, name)))
        if mine and first is not None:
            ours[first] += 1
    return Fleet(
        nodes=tuple(
            {"metadata": {"name": node}, "spec": {"devices": devs}}
            for node, devs in sorted(devices.items())
        ),
        classes=allocator.class_selectors(device_classes),
        taken=frozenset(taken),
        ours=ours,
    )


def _engine_sovereignty(md: ModelDeployment, nodes: Sequence[Mapping[str, Any]]) -> Sovereignty:
    """The claim's sovereignty as the embedded scheduler applies it to a pinned engine: drivers
    the engine cannot run on are excluded. ``allowedRegions`` is left to the Pods' node
    affinity in a cluster (the operator does not read Nodes)."""
    base = md.spec.sovereignty or Sovereignty()
    excluded = set(base.excluded_drivers)
    if md.spec.engine not in ("auto", "sim", "external"):
        drivers = {d.get("driver", "") for n in nodes for d in n["spec"]["devices"]}
        excluded |= {d for d in drivers if d and engines.support_for(md.spec.engine, d) is None}
    return Sovereignty(excluded_drivers=sorted(excluded))


def execution_paths(md: ModelDeployment, cluster: Fleet) -> list[allocator.AlternativePath]:
    """Every execution path of ``md``'s claim in ``cluster``, with what fits now."""
    if md.spec.accelerators is None:
        return []
    key = f"{md.namespace}/{md.name}"
    claim = allocator.Claim(
        key=key,
        accelerators=md.spec.accelerators,
        sovereignty=_engine_sovereignty(md, cluster.nodes),
    )
    report = allocator.alternatives_report(
        [claim],
        fleet=list(cluster.nodes),
        classes=dict(cluster.classes),
        compile_selector=compile_selector,
        taken=cluster.taken,
        prepare_device=selector_context,
    )
    return list(report[key])


# --- how many ----------------------------------------------------------------------------------


def capacity_plan(
    md: ModelDeployment,
    *,
    paths: Sequence[allocator.AlternativePath],
    placed: Mapping[tuple[str, str | None], int],
    live: int,
) -> CapacityPlan | None:
    """How ``spec.slo`` translates into replicas; None without an SLO. The same inputs the
    embedded controller builds (``aviator.controllers.modeldeployment``): one local path at the
    simulator's rate without a claim; otherwise each execution path at its profile's rate.
    ``placed`` counts this deployment's replicas by (driver, productName); ``live`` all of them."""
    slo = md.spec.slo
    if slo is None:
        return None
    if md.spec.accelerators is None:
        options = md.spec.simulator or SimulatorOptions()
        simulated = plans.resolve_engine(md) == "sim"
        inputs = [
            capacity.PathCapacity(
                request="local",
                driver="",
                product=None,
                count=0,
                placed=live,
                fits_now=md.spec.replicas.max or md.spec.replicas.min,
            )
        ]
        rates = {0: capacity.simulator_replica_rps(slo, options) if simulated else 0.0}
    else:
        model_class = model_class_for(md.spec.model.name)
        remaining = Counter(placed)
        inputs = []
        for p in paths:
            # A replica counts on the first path of its (driver, product), the claim's preference.
            here = remaining.pop((p.driver, p.product), 0)
            inputs.append(
                capacity.PathCapacity(
                    request=p.request,
                    driver=p.driver,
                    product=p.product,
                    count=p.count,
                    placed=here,
                    fits_now=p.free_replicas,
                    attributes=p.attributes,
                )
            )
        rates = {i: capacity.replica_rps(slo, model_class, path) for i, path in enumerate(inputs)}
    return capacity.plan_status(capacity.plan_replicas(slo, paths=inputs, rates=rates))


def autoscaled(md: ModelDeployment) -> bool:
    return md.spec.autoscaling is not None and (md.spec.replicas.max or 0) > md.spec.replicas.min


def scale(
    md: ModelDeployment, *, plan: CapacityPlan | None, current: int | None = None
) -> plans.Scale:
    """How many replicas, as the embedded controller decides it: ``replicas.min`` raised by the
    SLO's plan, within ``replicas.max``. With autoscaling the HorizontalPodAutoscaler moves the
    count between that floor and the maximum; ``current`` is the Deployment's count it set."""
    low, high = md.spec.replicas.min, md.spec.replicas.max or md.spec.replicas.min
    needed = max(low, plan.replicas if plan else 0)
    floor = min(needed, high)
    limits: list[str] = []
    if plan is not None and not plan.attainable:
        limits.append(plan.message)
    if needed > high:
        limits.append(f"the SLO needs {needed} replicas; replicas.max is {high}")
    desired = floor
    if autoscaled(md) and current is not None:
        desired = min(max(current, floor), high)
    return plans.Scale(
        desired=desired,
        floor=floor,
        capacity=plan,
        limited="; ".join(limits),
        managed=plan is not None or autoscaled(md),
    )


# --- what to apply and prune -------------------------------------------------------------------


def owned_labels(md_name: str) -> dict[str, str]:
    """The labels that select what the renderer made for one ModelDeployment."""
    return {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_DEPLOYMENT: md_name}


def desired(md: ModelDeployment, *, the_scale: plans.Scale, options: RenderOptions) -> Rendered:
    """The objects to apply: the renderer's, with the planned replica count. With a
    HorizontalPodAutoscaler the count is the HPA's, so the plan's floor (``replicas.min``
    raised by the SLO) becomes its ``minReplicas``, as the embedded autoscaler never goes below
    that floor either."""
    rendered = render(md, options=replace(options, desired_replicas=the_scale.desired))
    for obj in rendered.objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            spec = obj["spec"]
            spec["minReplicas"] = min(
                max(spec["minReplicas"], the_scale.floor), spec["maxReplicas"]
            )
    return rendered


def _owned_by(obj: Mapping[str, Any], *, name: str, uid: str | None) -> bool:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in owned_labels(name).items()):
        return False
    controller = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
    if controller is None:
        return True  # labelled ours and owned by nobody else
    return (
        controller.get("kind") == "ModelDeployment"
        and controller.get("name") == name
        and (not uid or controller.get("uid") == uid)
    )


def stale(
    *,
    namespace: str | None,
    name: str,
    uid: str | None,
    keep: Iterable[ObjectRef],
    observed: Iterable[Mapping[str, Any]],
) -> list[ObjectRef]:
    """Objects the ModelDeployment ``namespace/name`` owns that are not in ``keep``, in deletion
    order (reverse apply order).

    Owned means: the renderer's labels for it and no controller other than it (by ``uid`` when
    both sides know one), so an object labelled by hand under another owner survives."""
    wanted = set(keep)
    order = {(t.api_version, t.kind): i for i, t in enumerate(MANAGED)}
    out = {
        ref
        for obj in observed
        if (ref := ref_of(obj)) not in wanted
        and (ref.api_version, ref.kind) in order
        and ref.namespace == namespace
        and _owned_by(obj, name=name, uid=uid)
    }
    return sorted(out, key=lambda r: (-order[(r.api_version, r.kind)], r.name))


# --- status ------------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _url(address: str, port: int) -> str:
    try:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        host = address  # an FQDN endpoint
    return f"http://{host}:{port}"


def endpoints(
    slices: Iterable[Mapping[str, Any]], *, port_name: str = "http"
) -> list[ReplicaEndpoint]:
    """Ready endpoints of the Service's EndpointSlices, one per Pod, sorted by Pod name.

    ``ready`` unset counts as ready (the API's guidance for an unknown state); a terminating
    endpoint is not ready."""
    found: dict[str, ReplicaEndpoint] = {}
    for s in slices:
        port = next(
            (p.get("port") for p in s.get("ports") or () if p.get("name", "") == port_name), None
        )
        if not isinstance(port, int):
            continue
        for e in s.get("endpoints") or ():
            conditions = e.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            addresses = e.get("addresses") or ()
            if not addresses:
                continue
            target = e.get("targetRef") or {}
            replica = str(target.get("name") or addresses[0])
            found.setdefault(
                replica, ReplicaEndpoint(replica=replica, url=_url(addresses[0], port))
            )
    return [found[k] for k in sorted(found)]


def _deployment_condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (deployment.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def status(
    md: ModelDeployment,
    *,
    current: ModelDeploymentStatus,
    the_scale: plans.Scale,
    deployment: Mapping[str, Any] | None,
    slices: Iterable[Mapping[str, Any]],
    paths: Sequence[allocator.AlternativePath] = (),
    pool: PoolOutcome | None = None,
    now: datetime,
) -> ModelDeploymentStatus:
    """The status ``md`` should show: replica counts from its Deployment, endpoints from its
    EndpointSlices, and the embedded controller's conditions (``Available``: at least the floor
    Ready; ``Progressing``: rollout state; ``Degraded``: Pods failing; ``ScalingLimited`` with an
    SLO or autoscaling). ``lastTransitionTime`` moves only when a condition's status changes.

    ``pool`` is what the reconcile did with the InferencePool (None: not known here, as on a
    Deployment event, so the ``InferencePool`` condition stays as it is)."""
    desired_count = the_scale.desired
    dep_status = (deployment or {}).get("status") or {}
    replicas = _int(dep_status.get("replicas"))
    ready = _int(dep_status.get("readyReplicas"))
    updated = _int(dep_status.get("updatedReplicas"))
    generation = md.metadata.generation
    conditions: list[Condition] = list(current.conditions)

    available = ready >= the_scale.floor
    conditions = set_condition(
        conditions,
        type=plans.AVAILABLE,
        status="True" if available else "False",
        reason="MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
        message=f"{ready}/{desired_count} replicas ready"
        + (f" (at least {the_scale.floor} needed)" if the_scale.floor != desired_count else ""),
        now=now,
        observed_generation=generation,
    )
    if deployment is None:
        progressing = ("True", "ReplicasUpdating", "the Deployment is being created")
    else:
        observed = _int(dep_status.get("observedGeneration"))
        dep_generation = _int((deployment.get("metadata") or {}).get("generation"))
        deadline = _deployment_condition(deployment, "Progressing")
        if deadline is not None and deadline.get("reason") == "ProgressDeadlineExceeded":
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                str(deadline.get("message") or "the rollout made no progress"),
            )
        elif (
            observed >= dep_generation
            and updated >= desired_count
            and replicas == desired_count
            and ready >= desired_count
        ):
            progressing = (
                "True",
                "NewReplicasAvailable",
                f"all {desired_count} replicas run the current template",
            )
        else:
            progressing = (
                "True",
                "ReplicasUpdating",
                f"{min(updated, ready)}/{desired_count} current replicas ready, "
                f"{replicas} replicas exist",
            )
    conditions = set_condition(
        conditions,
        type=plans.PROGRESSING,
        status=progressing[0],  # type: ignore[arg-type]
        reason=progressing[1],
        message=progressing[2],
        now=now,
        observed_generation=generation,
    )
    if the_scale.managed:
        conditions = set_condition(
            conditions,
            type=plans.SCALING_LIMITED,
            status="True" if the_scale.limited else "False",
            reason="TooFewReplicas" if the_scale.limited else "DesiredWithinRange",
            message=the_scale.limited or f"{desired_count} replica(s) desired",
            now=now,
            observed_generation=generation,
        )
    failure = None if deployment is None else _deployment_condition(deployment, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        conditions = set_condition(
            conditions,
            type=plans.DEGRADED,
            status="True",
            reason="ReplicaFailing",
            message=str(failure.get("message") or failure.get("reason") or ""),
            now=now,
            observed_generation=generation,
        )
    else:
        conditions = set_condition(
            conditions,
            type=plans.DEGRADED,
            status="False",
            reason="AsExpected",
            message="",
            now=now,
            observed_generation=generation,
        )
    if pool is not None:
        conditions = _pool_condition(conditions, pool=pool, now=now, generation=generation)
    return ModelDeploymentStatus(
        observed_generation=generation,
        conditions=conditions,
        desired_replicas=desired_count,
        capacity=the_scale.capacity,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=updated,
        endpoints=endpoints(slices),
        alternatives=execution_paths_status(list(paths)),
    )


def _pool_condition(
    conditions: list[Condition], *, pool: PoolOutcome, now: datetime, generation: int | None
) -> list[Condition]:
    """``InferencePool`` False while the cluster does not serve the kind, True once a pool that
    was missing is created; absent otherwise (nothing to say) and with ``--inference-pool off``
    (nothing to expect)."""
    if pool == "off" or (pool == "applied" and find_condition(conditions, INFERENCE_POOL) is None):
        return [c for c in conditions if c.type != INFERENCE_POOL]
    not_served = pool == "not-served"
    return set_condition(
        conditions,
        type=INFERENCE_POOL,
        status="False" if not_served else "True",
        reason="NotServed" if not_served else "Applied",
        message=(
            f"no InferencePool was created: the cluster does not serve "
            f"{INFERENCE_POOLS.api_version} {INFERENCE_POOLS.plural} (install the Gateway API "
            "Inference Extension CRDs); the Deployment, Service, HPA and PDB are applied"
            if not_served
            else "the InferencePool is applied"
        ),
        now=now,
        observed_generation=generation,
    )


def invalid_status(
    current: ModelDeploymentStatus,
    *,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> ModelDeploymentStatus:
    """The status of a CR the operator cannot act on (admission or rendering refused it): the
    rest of the status stays as it was, ``Progressing`` says why nothing changes."""
    conditions = set_condition(
        list(current.conditions),
        type=plans.PROGRESSING,
        status="False",
        reason=reason,
        message=message,
        now=now,
        observed_generation=generation,
    )
    if find_condition(conditions, plans.AVAILABLE) is None:
        conditions = set_condition(
            conditions,
            type=plans.AVAILABLE,
            status="False",
            reason=reason,
            message="nothing is deployed for this spec",
            now=now,
            observed_generation=generation,
        )
    return current.model_copy(update={"conditions": conditions, "observed_generation": generation})


def retry_delay(retry: int, *, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential backoff for a failed reconcile: 1, 2, 4, ... seconds, at most ``cap_s``."""
    return float(min(cap_s, base_s * 2 ** min(max(retry, 0), 16)))
