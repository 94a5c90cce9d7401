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
from aviator.controllers.grant import GrantReconciler
from aviator.controllers.load import LoadReader
from aviator.controllers.modeldeployment import ModelDeploymentReconciler
from aviator.controllers.reconcile import Controller
from aviator.controllers.replica import ReplicaReconciler, Runtime
from aviator.controllers.scheduling import Scheduler, installed_engines
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
        self.nodes = Reflector(source=store, kind=kinds.NODE, on_event=self._on_fleet)
        self.device_classes = Reflector(
            source=store, kind=kinds.DEVICE_CLASS, on_event=self._on_fleet
        )
        self.grants = Reflector(source=store, kind=kinds.GRANT, on_event=self._on_grant)
        self.scheduler = Scheduler(
            nodes=self.nodes,
            device_classes=self.device_classes,
            replicas=self.replicas,
            local_engines=installed_engines(),
        )
        self.load = LoadReader()
        self.deployment_controller: Controller[ObjectKey] = Controller(
            name="modeldeployment",
            reconciler=ModelDeploymentReconciler(
                store=store,
                deployments=self.deployments,
                replicas=self.replicas,
                scheduler=self.scheduler,
                load=self.load,
            ),
            settings=settings,
        )
        self.replica_controller: Controller[ObjectKey] = Controller(
            name="replica",
            reconciler=ReplicaReconciler(
                store=store, replicas=self.replicas, runtime=runtime, scheduler=self.scheduler
            ),
            settings=settings,
        )
        self.grant_controller: Controller[ObjectKey] = Controller(
            name="grant",
            reconciler=GrantReconciler(store=store, grants=self.grants),
            settings=settings,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _on_grant(self, _type: EventType, obj: dict[str, Any]) -> None:
        self.grant_controller.queue.add(key_of(obj))

    def _on_deployment(self, _type: EventType, obj: dict[str, Any]) -> None:
        self.deployment_controller.queue.add(key_of(obj))

    def _on_replica(self, _type: EventType, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        self.replica_controller.queue.add(key)
        for ref in obj["metadata"].get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") == kinds.MODEL_DEPLOYMENT.kind:
                self.deployment_controller.queue.add((key[0], ref["name"]))

    def _on_fleet(self, _type: EventType, _obj: dict[str, Any]) -> None:
        # The fleet changed: replicas waiting for devices may fit now, and every deployment's
        # alternatives may read differently.
        for key, raw in self.replicas.cache.items():
            spec = raw.get("spec") or {}
            if spec.get("accelerators") and not spec.get("node"):
                self.replica_controller.queue.add(key)
        for key, raw in self.deployments.cache.items():
            if (raw.get("spec") or {}).get("accelerators"):
                self.deployment_controller.queue.add(key)

    def runtime_changed(self, namespace: str, name: str) -> None:
        """The runtime observed a change in a replica's process: look at it again."""
        self.replica_controller.queue.add((namespace, name))

    async def start(self) -> None:
        """Start informers, wait until their caches are complete, then start the controllers."""
        reflectors = (self.nodes, self.device_classes, self.deployments, self.replicas, self.grants)
        for reflector in reflectors:
            self._tasks.append(
                asyncio.create_task(reflector.run(), name=f"informer {reflector.kind.plural}")
            )
        await asyncio.gather(*(r.synced.wait() for r in reflectors))
        for controller in (
            self.deployment_controller,
            self.replica_controller,
            self.grant_controller,
        ):
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
        await self.load.aclose()
