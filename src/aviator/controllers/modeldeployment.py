"""The ModelDeployment controller: owned Replicas to match ``spec``, and a true ``status``.

How many replicas: ``spec.replicas.min``, raised by the SLO's capacity plan
(``aviator.placement.capacity``) and by the autoscaler (``aviator.controllers.scaling``, on load
read from the replicas' ``/metrics``), never above ``spec.replicas.max``. The autoscaler's
recommendation history lives here, in memory, like the HorizontalPodAutoscaler's: after a restart
it starts again from ``status.desiredReplicas``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aviator.api import errors, kinds
from aviator.api.meta import now_utc
from aviator.api.modeldeployment import (
    CapacityPlan,
    ModelDeployment,
    ServiceLevelObjective,
    SimulatorOptions,
)
from aviator.api.replica import Replica
from aviator.cache import BY_OWNER, ObjectKey, Reflector
from aviator.controllers import plans, scaling
from aviator.controllers.load import LoadReader
from aviator.controllers.reconcile import Result
from aviator.controllers.scheduling import Scheduler, execution_paths_status, model_class_for
from aviator.placement import allocator, capacity, profiles
from aviator.store.protocol import Store

log = logging.getLogger("aviator.controllers.modeldeployment")

_RateKey = tuple[str, str, str, str, str | None, int]


class ModelDeploymentReconciler:
    def __init__(
        self,
        *,
        store: Store,
        deployments: Reflector,
        replicas: Reflector,
        scheduler: Scheduler,
        load: LoadReader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``replicas`` must be indexed ``BY_OWNER`` (``cache.owner_uids``)."""
        self._store = store
        self._deployments = deployments
        self._replicas = replicas
        self._scheduler = scheduler
        self._load = load
        self._clock = clock
        self._history: dict[ObjectKey, list[scaling.Recommendation]] = {}
        # One replica's throughput per (SLO, model, path): the profile model takes milliseconds.
        self._rates: dict[_RateKey, float] = {}

    async def reconcile(self, key: ObjectKey) -> Result:
        raw = self._deployments.get(key)
        if raw is None:
            self._history.pop(key, None)
            return Result()  # deleted: the store's ownerReference cascade removes the replicas
        md = ModelDeployment.from_raw(raw)
        if md.metadata.deletion_timestamp is not None:
            return Result()
        namespace = md.namespace
        owned = plans.owned_by(md, self._replicas.by_index(BY_OWNER, md.metadata.uid or ""))
        paths = self._scheduler.execution_paths(md)
        scale = await self._scale(key, md, owned, paths)
        plan = plans.plan_replicas(md, owned, desired=scale.desired)

        for replica in plan.create:
            try:
                await self._store.create(kinds.REPLICA, replica.to_raw())
                log.info("created replica %s/%s", namespace, replica.name)
            except errors.AlreadyExists:
                pass  # created by an earlier attempt whose event has not reached the cache yet
        for name in plan.delete:
            try:
                await self._store.delete(kinds.REPLICA, namespace, name)
                log.info("deleting replica %s/%s", namespace, name)
            except errors.NotFound:
                pass

        status = plans.deployment_status(
            md,
            owned,
            template_hash=plan.template_hash,
            alternatives=execution_paths_status(paths),
            scale=scale,
            now=now_utc(),
        )
        if status != md.status:
            updated = md.model_copy(update={"status": status})
            await self._store.replace_status(kinds.MODEL_DEPLOYMENT, updated.to_raw())
        policy = md.spec.autoscaling
        if policy is not None and _autoscaled(md):
            return Result(requeue_after=policy.sync_period_seconds)
        return Result()

    # --- how many --------------------------------------------------------------------------

    async def _scale(
        self,
        key: ObjectKey,
        md: ModelDeployment,
        owned: list[Replica],
        paths: list[allocator.AlternativePath],
    ) -> plans.Scale:
        low, high = md.spec.replicas.min, md.spec.replicas.max or md.spec.replicas.min
        live = [r for r in owned if r.metadata.deletion_timestamp is None]
        plan = None if md.spec.slo is None else self._capacity(md.spec.slo, md, live, paths)
        needed = max(low, plan.replicas if plan else 0)
        floor = min(needed, high)
        limits: list[str] = []
        if plan is not None and not plan.attainable:
            limits.append(plan.message)
        if needed > high:
            limits.append(f"the SLO needs {needed} replicas; replicas.max is {high}")

        desired = floor
        policy = md.spec.autoscaling
        if policy is not None and _autoscaled(md):
            previous = md.status.desired_replicas
            current = scaling.bound(
                previous if previous is not None else floor, floor=floor, ceiling=high
            )
            endpoints = [r.status.endpoint for r in live if plans.is_ready(r) and r.status.endpoint]
            loads = await self._load.read(endpoints)
            recommended = scaling.recommend(current, list(loads.values()), policy=policy)
            desired = current
            if recommended is not None:
                now = self._clock()
                history = self._history.get(key, [])
                history.append(
                    scaling.Recommendation(
                        at=now, replicas=scaling.bound(recommended, floor=floor, ceiling=high)
                    )
                )
                self._history[key] = history = scaling.prune(history, now=now, policy=policy)
                desired = scaling.stabilize(history, now=now, current=current, policy=policy)
                if recommended > high:
                    limits.append(f"load asks for {recommended} replicas; replicas.max is {high}")
            desired = scaling.bound(desired, floor=floor, ceiling=high)
            if desired != current:
                log.info(
                    "scaling %s/%s from %d to %d replicas (load of %d replica(s))",
                    md.namespace, md.name, current, desired, len(loads),
                )  # fmt: skip
        return plans.Scale(
            desired=desired,
            floor=floor,
            capacity=plan,
            limited="; ".join(limits),
            managed=plan is not None or _autoscaled(md),
        )

    def _capacity(
        self,
        slo: ServiceLevelObjective,
        md: ModelDeployment,
        live: list[Replica],
        paths: list[allocator.AlternativePath],
    ) -> CapacityPlan:
        if md.spec.accelerators is None:
            # No claim: the replicas run here, with the simulator's fixed latencies when they
            # are simulated, and nothing is known of a real engine without a device profile.
            options = md.spec.simulator or SimulatorOptions()
            simulated = plans.resolve_engine(md) == "sim"
            inputs = [
                capacity.PathCapacity(
                    request="local", driver="", product=None, count=0, placed=len(live),
                    fits_now=md.spec.replicas.max or md.spec.replicas.min,
                )
            ]  # fmt: skip
            rates = {0: capacity.simulator_replica_rps(slo, options) if simulated else 0.0}
        else:
            placed = self._scheduler.placed_paths(live)
            model_class = model_class_for(md.spec.model.name)
            inputs = [
                capacity.PathCapacity(
                    request=p.request,
                    driver=p.driver,
                    product=p.product,
                    count=p.count,
                    placed=placed[(p.request, p.driver, p.product)],
                    fits_now=p.free_replicas,
                    attributes=p.attributes,
                )
                for p in paths
            ]
            rates = {i: self._rate(slo, model_class, path) for i, path in enumerate(inputs)}
        return capacity.plan_status(capacity.plan_replicas(slo, paths=inputs, rates=rates))

    def _rate(
        self,
        slo: ServiceLevelObjective,
        model_class: profiles.ModelClass,
        path: capacity.PathCapacity,
    ) -> float:
        key: _RateKey = (
            slo.model_dump_json(),
            model_class.name,
            path.request,
            path.driver,
            path.product,
            path.count,
        )
        if key not in self._rates:
            if len(self._rates) > 4096:
                self._rates.clear()
            self._rates[key] = capacity.replica_rps(slo, model_class, path)
        return self._rates[key]


def _autoscaled(md: ModelDeployment) -> bool:
    return (md.spec.replicas.max or 0) > md.spec.replicas.min and md.spec.autoscaling is not None
