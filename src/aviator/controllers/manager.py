"""The manager: informers over the store, controllers over work queues, and the wiring between.

Events only enqueue keys (controller-runtime's ``EnqueueRequestForObject`` and
``EnqueueRequestForOwner``); reconcilers read state from the informer caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aviator.api import kinds
from aviator.cache import BY_OWNER, ObjectKey, Reflector, key_of, owner_uids
from aviator.controllers.modeldeployment import ModelDeploymentReconciler
from aviator.controllers.reconcile import Controller
from aviator.controllers.replica import ReplicaReconciler, Runtime
from aviator.settings import ControllerSettings
from aviator.store.protocol import EventType, Store

log = logging.getLogger("aviator.controllers")


class Manager:
    def __init__(self, *, store: Store, runtime: Runtime, settings: ControllerSettings) -> None:
        self.deployments = Reflector(
            source=store, kind=kinds.MODEL_DEPLOYMENT, on_event=self._on_deployment
        )
        self.replicas = Reflector(
            source=store,
            kind=kinds.REPLICA,
            on_event=self._on_replica,
            indexers={BY_OWNER: owner_uids},
        )
        self.deployment_controller: Controller[ObjectKey] = Controller(
            name="modeldeployment",
            reconciler=ModelDeploymentReconciler(
                store=store, deployments=self.deployments, replicas=self.replicas
            ),
            settings=settings,
        )
        self.replica_controller: Controller[ObjectKey] = Controller(
            name="replica",
            reconciler=ReplicaReconciler(store=store, replicas=self.replicas, runtime=runtime),
            settings=settings,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _on_deployment(self, _type: EventType, obj: dict[str, Any]) -> None:
        self.deployment_controller.queue.add(key_of(obj))

    def _on_replica(self, _type: EventType, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        self.replica_controller.queue.add(key)
        for ref in obj["metadata"].get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") == kinds.MODEL_DEPLOYMENT.kind:
                self.deployment_controller.queue.add((key[0], ref["name"]))

    def runtime_changed(self, namespace: str, name: str) -> None:
        """The runtime observed a change in a replica's process: look at it again."""
        self.replica_controller.queue.add((namespace, name))

    async def start(self) -> None:
        """Start informers, wait until their caches are complete, then start the controllers."""
        for reflector in (self.deployments, self.replicas):
            self._tasks.append(
                asyncio.create_task(reflector.run(), name=f"informer {reflector.kind.plural}")
            )
        await asyncio.gather(self.deployments.synced.wait(), self.replicas.synced.wait())
        for controller in (self.deployment_controller, self.replica_controller):
            self._tasks.append(
                asyncio.create_task(controller.run(), name=f"controller {controller.name}")
            )
        log.info("controllers started")

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
