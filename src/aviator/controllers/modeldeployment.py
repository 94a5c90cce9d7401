"""The ModelDeployment controller: owned Replicas to match ``spec``, and a true ``status``."""

from __future__ import annotations

import logging

from aviator.api import errors, kinds
from aviator.api.meta import now_utc
from aviator.api.modeldeployment import ModelDeployment
from aviator.cache import BY_OWNER, ObjectKey, Reflector
from aviator.controllers import plans
from aviator.controllers.reconcile import Result
from aviator.controllers.scheduling import Scheduler
from aviator.store.protocol import Store

log = logging.getLogger("aviator.controllers.modeldeployment")


class ModelDeploymentReconciler:
    def __init__(
        self, *, store: Store, deployments: Reflector, replicas: Reflector, scheduler: Scheduler
    ) -> None:
        """``replicas`` must be indexed ``BY_OWNER`` (``cache.owner_uids``)."""
        self._store = store
        self._deployments = deployments
        self._replicas = replicas
        self._scheduler = scheduler

    async def reconcile(self, key: ObjectKey) -> Result:
        raw = self._deployments.get(key)
        if raw is None:
            return Result()  # deleted: the store's ownerReference cascade removes the replicas
        md = ModelDeployment.from_raw(raw)
        if md.metadata.deletion_timestamp is not None:
            return Result()
        namespace = md.namespace
        owned = plans.owned_by(md, self._replicas.by_index(BY_OWNER, md.metadata.uid or ""))
        plan = plans.plan_replicas(md, owned)

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
            alternatives=self._scheduler.alternatives(md),
            now=now_utc(),
        )
        if status != md.status:
            updated = md.model_copy(update={"status": status})
            await self._store.replace_status(kinds.MODEL_DEPLOYMENT, updated.to_raw())
        return Result()
