"""The operator's reconcile, as a thin shell: read the cluster, ask :mod:`aviator.operator.plan`,
write what it decided.

One ModelDeployment's reconcile is level-triggered and idempotent: whatever the trigger (the CR
was created or changed, the operator restarted, a resync timer), it reads the current state,
server-side applies every rendered object with the operator's field manager (creating one that
does not exist yet), deletes the objects this ModelDeployment owns that are no longer rendered,
and writes ``status`` when it changed. :meth:`Reconciler.refresh_status` is the status half
alone, for changes of the Deployment and of the EndpointSlices. :meth:`Reconciler.cleanup`
deletes everything rendered for a ModelDeployment that is going away: the garbage collector
would (ownerReferences) in a real cluster, but the finalizer makes it explicit and ordered.

The InferencePool is optional: a cluster without the Gateway API Inference Extension CRDs does
not serve its type. With ``inference_pool="auto"`` (the default) such a cluster gets everything
else (Deployment, Service, HPA, PDB), a note, and an ``InferencePool`` condition saying why no
pool exists; ``"on"`` makes the missing type an error (retried), ``"off"`` never applies a pool
(and prunes one applied before). Listing a type the cluster does not serve, to prune or clean
up, finds nothing, so a ModelDeployment is always deleted (its finalizer removed).

It MUST NOT decide anything itself (all decisions are in ``plan``), and never logs object
bodies.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aviator.api import errors
from aviator.api.meta import now_utc
from aviator.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from aviator.controllers import plans as controller_plans
from aviator.k8s.render import RenderError, RenderOptions
from aviator.operator import plan
from aviator.operator.objects import NotServed, ObjectApi
from aviator.operator.resources import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    INFERENCE_POOLS,
    MANAGED,
    MODEL_DEPLOYMENTS,
    ObjectRef,
    ResourceType,
    ref_of,
)
from aviator.placement import allocator

__all__ = ["Outcome", "PoolMode", "Reconciler", "SpecRejected", "status_patch"]

log = logging.getLogger("aviator.operator")

_RESOURCE_SLICES = ResourceType("resource.k8s.io/v1", "ResourceSlice", "resourceslices", False)
_DEVICE_CLASSES = ResourceType("resource.k8s.io/v1", "DeviceClass", "deviceclasses", False)
_RESOURCE_CLAIMS = ResourceType("resource.k8s.io/v1", "ResourceClaim", "resourceclaims")
_SERVICE_NAME = "kubernetes.io/service-name"

PoolMode = Literal["auto", "on", "off"]
"""Whether to apply the InferencePool: when the cluster serves its type, always, or never."""


class SpecRejected(ValueError):
    """The CR's spec is one the plane refuses (admission or rendering); retrying cannot help
    until the spec changes. The message names the field."""


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: list[ObjectRef]
    pruned: list[ObjectRef]
    status: ModelDeploymentStatus
    notes: list[str]


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status ``old`` into ``new``: fields ``new`` no longer has are
    set to null (a merge patch keeps what it does not mention)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update(new)
    return patch


def _status_raw(md: ModelDeployment, status: ModelDeploymentStatus) -> dict[str, Any]:
    raw = md.model_copy(update={"status": status}).to_raw()
    out = raw.get("status") or {}
    return dict(out)


class Reconciler:
    def __init__(
        self,
        *,
        api: ObjectApi,
        field_manager: str,
        render_options: RenderOptions,
        inference_pool: PoolMode = "auto",
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._api = api
        self._pool_mode = inference_pool
        self._field_manager = field_manager
        self._options = render_options
        self._clock = clock
        # Weak: a lock lives while some call holds it, so deleted objects leave nothing behind.
        self._status_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # --- reading -------------------------------------------------------------------------------

    async def _paths(
        self, md: ModelDeployment
    ) -> tuple[list[allocator.AlternativePath], dict[tuple[str, str | None], int]]:
        """The claim's execution paths in the cluster's fleet, and this deployment's placed
        replicas per (driver, product); nothing to read without a claim."""
        if md.spec.accelerators is None:
            return [], {}
        cluster = plan.fleet(
            resource_slices=await self._api.list(_RESOURCE_SLICES, namespace=None),
            device_classes=await self._api.list(_DEVICE_CLASSES, namespace=None),
            resource_claims=await self._api.list(_RESOURCE_CLAIMS, namespace=md.namespace),
            deployment=md.name,
        )
        return plan.execution_paths(md, cluster), dict(cluster.ours)

    async def _scale(
        self, md: ModelDeployment, deployment: Mapping[str, Any] | None
    ) -> tuple[controller_plans.Scale, list[allocator.AlternativePath]]:
        # Only an SLO over a claim needs the fleet: the ResourceSlices are read for that alone.
        needs_fleet = md.spec.slo is not None and md.spec.accelerators is not None
        paths, placed = await self._paths(md) if needs_fleet else ([], {})
        current = ((deployment or {}).get("spec") or {}).get("replicas")
        live = ((deployment or {}).get("status") or {}).get("replicas")
        capacity = plan.capacity_plan(
            md, paths=paths, placed=placed, live=live if isinstance(live, int) else 0
        )
        the_scale = plan.scale(
            md, plan=capacity, current=current if isinstance(current, int) else None
        )
        return the_scale, paths

    def _deployment_ref(self, md: ModelDeployment) -> ObjectRef:
        return ObjectRef(DEPLOYMENTS.api_version, DEPLOYMENTS.kind, md.namespace, md.name)

    async def _slices(self, md: ModelDeployment) -> list[dict[str, Any]]:
        return await self._api.list(
            ENDPOINT_SLICES, namespace=md.namespace, labels={_SERVICE_NAME: md.name}
        )

    # --- writing -------------------------------------------------------------------------------

    async def _apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply; a new object is created first (some API servers, and emulators,
        answer an apply to a missing object with 404)."""
        try:
            return await self._api.apply(obj, field_manager=self._field_manager)
        except errors.NotFound:
            pass
        try:
            return await self._api.create(obj)
        except errors.AlreadyExists:
            pass
        # Created meanwhile (a concurrent reconcile): apply over it.
        return await self._api.apply(obj, field_manager=self._field_manager)

    async def _list_owned(
        self, rtype: ResourceType, *, md_name: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        """This ModelDeployment's objects of ``rtype``; none when the cluster does not serve it."""
        try:
            return await self._api.list(
                rtype, namespace=namespace, labels=plan.owned_labels(md_name)
            )
        except NotServed:
            return []

    async def _apply_pool(self, obj: Mapping[str, Any]) -> bool:
        """Apply the InferencePool as ``inference_pool`` says; False when it was skipped because
        the cluster does not serve its type (``"auto"``)."""
        try:
            await self._apply(obj)
        except NotServed:
            if self._pool_mode == "on":
                raise
            return False
        return True

    async def _write_status(
        self, md: ModelDeployment, current: ModelDeploymentStatus, new: ModelDeploymentStatus
    ) -> None:
        old_raw, new_raw = _status_raw(md, current), _status_raw(md, new)
        if old_raw == new_raw:
            return
        ref = ObjectRef(
            MODEL_DEPLOYMENTS.api_version, MODEL_DEPLOYMENTS.kind, md.namespace, md.name
        )
        await self._api.patch_status(
            ref, status_patch(old_raw, new_raw), field_manager=self._field_manager
        )

    async def _reject(
        self, body: Mapping[str, Any], current: ModelDeploymentStatus, reason: str, message: str
    ) -> SpecRejected:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        new = plan.invalid_status(
            current,
            reason=reason,
            message=message,
            generation=generation if isinstance(generation, int) else None,
            now=self._clock(),
        )
        ref = ref_of(body)
        if new != current:
            raw = new.model_dump(mode="json", by_alias=True, exclude_none=True)
            await self._api.patch_status(ref, raw, field_manager=self._field_manager)
        return SpecRejected(message)

    # --- the three entry points ----------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """Make the cluster match the CR ``body``; raises :class:`SpecRejected` for a spec the
        plane refuses (after saying so in status) and an ``aviator.api.errors.ApiError`` for API
        failures."""
        current = plan.observed_status(body)
        try:
            md = plan.admit(body)
        except (errors.Invalid, errors.BadRequest) as exc:
            raise await self._reject(body, current, "InvalidSpec", str(exc)) from None
        deployment = await self._api.get(self._deployment_ref(md))
        the_scale, _ = await self._scale(md, deployment)
        try:
            rendered = plan.desired(md, the_scale=the_scale, options=self._options)
        except RenderError as exc:
            raise await self._reject(body, current, "CannotRender", str(exc)) from None
        wanted = [
            o
            for o in rendered.objects
            if self._pool_mode != "off" or ref_of(o).type != INFERENCE_POOLS
        ]
        applied: list[ObjectRef] = []
        notes = list(rendered.notes)
        pool: plan.PoolOutcome = "off" if self._pool_mode == "off" else "applied"
        for obj in wanted:
            ref = ref_of(obj)
            if ref.type == INFERENCE_POOLS:
                if not await self._apply_pool(obj):
                    pool = "not-served"
                    notes.append(str(NotServed(INFERENCE_POOLS)) + ": no InferencePool applied")
                    log.info("%s/%s: %s", md.namespace, md.name, notes[-1])
                    continue
            else:
                await self._apply(obj)
            applied.append(ref)
        # Names are fixed by the ModelDeployment's name, so what can be stale is an object of a
        # kind no longer rendered (an HPA once autoscaling is off, a claim template once the
        # claim is gone): only those kinds are listed.
        rendered_kinds = {(o["apiVersion"], o["kind"]) for o in wanted}
        observed: list[dict[str, Any]] = []
        for rtype in MANAGED:
            if (rtype.api_version, rtype.kind) in rendered_kinds:
                continue
            observed.extend(await self._list_owned(rtype, md_name=md.name, namespace=md.namespace))
        pruned = plan.stale(
            namespace=md.namespace,
            name=md.name,
            uid=md.metadata.uid,
            keep=applied,
            observed=observed,
        )
        for ref in pruned:
            if await self._api.delete(ref):
                log.info("pruned %s (no longer rendered for %s/%s)", ref, md.namespace, md.name)
        # Status last, from fresh reads and under the per-object lock, so a status computed from
        # an older Deployment never overwrites one a Deployment event has just refreshed.
        status = await self.refresh_status(md.namespace or "", md.name, pool=pool)
        return Outcome(applied=applied, pruned=pruned, status=status or current, notes=notes)

    async def refresh_status(
        self, namespace: str, name: str, *, pool: plan.PoolOutcome | None = None
    ) -> ModelDeploymentStatus | None:
        """Rewrite the status of ``namespace/name`` from its Deployment and EndpointSlices (and
        what a reconcile did with the InferencePool, ``pool``); None when it is gone, going, or
        not admissible (its reconcile reports that). Calls for one object run one at a time, each
        from what it reads inside."""
        lock = self._status_locks.get((namespace, name))
        if lock is None:
            lock = self._status_locks[(namespace, name)] = asyncio.Lock()
        async with lock:
            ref = ObjectRef(MODEL_DEPLOYMENTS.api_version, MODEL_DEPLOYMENTS.kind, namespace, name)
            body = await self._api.get(ref)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            current = plan.observed_status(body)
            try:
                md = plan.admit(body)
            except (errors.Invalid, errors.BadRequest):
                return None
            deployment = await self._api.get(self._deployment_ref(md))
            the_scale, paths = await self._scale(md, deployment)
            new = plan.status(
                md,
                current=current,
                the_scale=the_scale,
                deployment=deployment,
                slices=await self._slices(md) if deployment is not None else [],
                paths=paths,
                pool=pool,
                now=self._clock(),
            )
            await self._write_status(md, current, new)
            return new

    async def cleanup(self, body: Mapping[str, Any]) -> list[ObjectRef]:
        """Delete everything rendered for the CR ``body`` (it is being deleted), in reverse
        apply order. Works from labels alone, so a CR whose spec no longer admits is cleaned
        up too."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), str(meta.get("name", ""))
        observed: list[dict[str, Any]] = []
        for rtype in MANAGED:
            observed.extend(await self._list_owned(rtype, md_name=name, namespace=namespace))
        doomed = plan.stale(
            namespace=namespace, name=name, uid=meta.get("uid"), keep=(), observed=observed
        )
        for ref in doomed:
            await self._api.delete(ref)
        log.info("deleted %d object(s) of %s/%s", len(doomed), namespace, name)
        return doomed
