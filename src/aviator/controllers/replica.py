"""The Replica controller: keep an engine running for each Replica, and mirror what it observes.

The runtime owns processes; this controller tells it what should run (``ensure``/``stop``), turns
the runtime's observations into ``status``, and holds the ``aviator.dev/runtime`` finalizer so a
Replica object never disappears while its process still runs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from aviator.api import kinds
from aviator.api.meta import find_condition, now_utc, set_condition
from aviator.api.replica import (
    READY,
    RUNTIME_FINALIZER,
    SCHEDULED,
    LastExit,
    Replica,
    ReplicaStatus,
)
from aviator.cache import ObjectKey, Reflector
from aviator.controllers.reconcile import Result
from aviator.controllers.scheduling import Scheduler, binding_patch
from aviator.placement.allocator import Unschedulable
from aviator.runtime.state import ProcessState
from aviator.store.protocol import Store

log = logging.getLogger("aviator.controllers.replica")


class Runtime(Protocol):
    async def ensure(self, replica: Replica) -> ProcessState: ...

    async def stop(self, namespace: str, name: str) -> None: ...


def replica_status(replica: Replica, state: ProcessState, *, now: datetime) -> ReplicaStatus:
    """Pure: the status a replica should show for what the runtime observed."""
    if state.ready:
        reason, message = "ProbeSucceeded", "engine answers its readiness probe"
    elif state.phase == "Failed":
        reason, message = "EngineFailed", state.message or "engine process exited"
    elif state.phase == "Starting":
        reason, message = "Starting", state.message or "waiting for the engine's readiness probe"
    else:
        reason, message = "NotReady", state.message or f"engine is {state.phase.lower()}"
    conditions = set_condition(
        list(replica.status.conditions),
        type=READY,
        status="True" if state.ready else "False",
        reason=reason,
        message=message,
        now=now,
        observed_generation=replica.metadata.generation,
    )
    last_exit = None
    if state.last_exit is not None:
        last_exit = LastExit(
            code=state.last_exit.code,
            signal=state.last_exit.signal,
            reason=state.last_exit.reason,
            finished_at=state.last_exit.finished_at,
        )
    return ReplicaStatus(
        observed_generation=replica.metadata.generation,
        conditions=conditions,
        phase=state.phase,
        endpoint=state.endpoint,
        pid=state.pid,
        port=state.port,
        restarts=state.restarts,
        started_at=state.started_at,
        last_exit=last_exit,
        message=state.message,
    )


SCHEDULE_RETRY_S = 10.0
"""An unschedulable replica is tried again this often (and whenever a Node changes)."""


class ReplicaReconciler:
    def __init__(
        self, *, store: Store, replicas: Reflector, runtime: Runtime, scheduler: Scheduler
    ) -> None:
        self._store = store
        self._replicas = replicas
        self._runtime = runtime
        self._scheduler = scheduler

    async def reconcile(self, key: ObjectKey) -> Result:
        namespace, name = key
        raw = self._replicas.get(key)
        if raw is None:
            await self._runtime.stop(namespace, name)
            return Result()
        replica = Replica.from_raw(raw)
        finalizers = replica.metadata.finalizers
        if replica.metadata.deletion_timestamp is not None:
            await self._runtime.stop(namespace, name)
            if RUNTIME_FINALIZER in finalizers:
                remaining = [f for f in finalizers if f != RUNTIME_FINALIZER]
                updated = replica.model_copy(
                    update={
                        "metadata": replica.metadata.model_copy(update={"finalizers": remaining})
                    }
                )
                await self._store.replace(kinds.REPLICA, updated.to_raw())
                log.info("stopped replica %s/%s", namespace, name)
            return Result()
        if RUNTIME_FINALIZER not in finalizers:
            updated = replica.model_copy(
                update={
                    "metadata": replica.metadata.model_copy(
                        update={"finalizers": [*finalizers, RUNTIME_FINALIZER]}
                    )
                }
            )
            await self._store.replace(kinds.REPLICA, updated.to_raw())
            return Result()  # our own write comes back as an event and continues from here
        if replica.spec.accelerators is not None and not replica.spec.node:
            return await self._schedule(replica)

        state = await self._runtime.ensure(replica)
        status = replica_status(replica, state, now=now_utc())
        if replica.spec.accelerators is not None:
            status.conditions = set_condition(
                status.conditions,
                type=SCHEDULED,
                status="True",
                reason="Scheduled",
                message=f"{len(replica.spec.devices)} device(s) on node {replica.spec.node}",
                now=now_utc(),
                observed_generation=replica.metadata.generation,
            )
        if status != replica.status:
            ready_before = find_condition(replica.status.conditions, READY)
            await self._store.replace_status(
                kinds.REPLICA, replica.model_copy(update={"status": status}).to_raw()
            )
            if ready_before is None or ready_before.status != ("True" if state.ready else "False"):
                log.info(
                    "replica %s/%s is %s",
                    namespace,
                    name,
                    "ready" if state.ready else state.phase.lower(),
                )
        return Result()

    async def _schedule(self, replica: Replica) -> Result:
        decision = await self._scheduler.schedule(replica)
        if isinstance(decision, Unschedulable):
            status = replica.status.model_copy(deep=True)
            status.phase = "Pending"
            status.message = decision.message
            status.conditions = set_condition(
                status.conditions,
                type=SCHEDULED,
                status="False",
                reason="Unschedulable",
                message=decision.message,
                now=now_utc(),
                observed_generation=replica.metadata.generation,
            )
            if status != replica.status:
                await self._store.replace_status(
                    kinds.REPLICA, replica.model_copy(update={"status": status}).to_raw()
                )
                log.info(
                    "replica %s/%s cannot be placed: %s",
                    replica.namespace,
                    replica.name,
                    decision.message,
                )
            return Result(requeue_after=SCHEDULE_RETRY_S)
        raw = replica.to_raw()
        raw["spec"].update(binding_patch(decision))
        try:
            await self._store.replace(kinds.REPLICA, raw)
        except Exception:
            self._scheduler.forget(replica)
            raise
        log.info(
            "replica %s/%s placed on %s (%s), engine %s",
            replica.namespace,
            replica.name,
            decision.node,
            ", ".join(d["device"] for d in decision.devices),
            decision.engine,
        )
        return Result()
