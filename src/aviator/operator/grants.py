"""The embedded plane's Grant expiry controller, run by the operator over the cluster.

An ``Active`` Grant past ``expiresAt`` must be written ``Expired`` in a cluster as on one machine.
Nothing here decides that: this module only composes the same parts the embedded manager
(``aviator.controllers.manager``) wires, over :class:`aviator.kube.store.KubeStore` instead of
SQLite: a :class:`aviator.cache.Reflector` lists and watches Grants, its events enqueue keys on a
:class:`aviator.controllers.reconcile.Controller`, and
:class:`aviator.controllers.grant.GrantReconciler` (with its pure ``expiry_step``) writes the
status. The controller does not know which home it runs in.

The operator runs it only while it leads (one writer per cluster); it MUST NOT close the
Kubernetes client it is given (the operator's, shared) and writes nothing but Grant status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aviator.api import kinds
from aviator.api.meta import now_utc
from aviator.api.watch import EventType
from aviator.cache import ObjectKey, Reflector, key_of
from aviator.controllers.grant import GrantReconciler
from aviator.controllers.reconcile import Controller
from aviator.kube.api import KubeApi
from aviator.kube.store import KubeStore
from aviator.settings import ControllerSettings

__all__ = ["GRANT_SETTINGS", "expire_grants"]

log = logging.getLogger("aviator.operator.grants")

GRANT_SETTINGS = ControllerSettings(workers=2)
"""A status write per expiring grant: two workers are plenty."""


async def _expire_in(
    *,
    kube: KubeApi,
    namespace: str | None,
    settings: ControllerSettings,
    clock: Callable[[], datetime],
) -> None:
    store = KubeStore(api=kube, namespace=namespace)
    controller: Controller[ObjectKey]

    def enqueue(_type: EventType, obj: dict[str, Any]) -> None:
        controller.queue.add(key_of(obj))

    grants = Reflector(source=store, kind=kinds.GRANT, namespace=namespace, on_event=enqueue)
    controller = Controller(
        name="grant",
        reconciler=GrantReconciler(store=store, grants=grants, clock=clock),
        settings=settings,
    )
    where = namespace or "every namespace"
    reflector = asyncio.create_task(grants.run(), name=f"informer grants ({where})")
    try:
        # As the embedded manager does: reconcile from a complete cache.
        await grants.synced.wait()
        log.info("grant expiry running in %s", where)
        await controller.run()
    finally:
        reflector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reflector


async def expire_grants(
    *,
    kube: KubeApi,
    namespaces: Sequence[str] = (),
    settings: ControllerSettings = GRANT_SETTINGS,
    clock: Callable[[], datetime] = now_utc,
) -> None:
    """Write ``Expired`` into every ``Active`` Grant of ``namespaces`` (all when empty) whose
    ``expiresAt`` has passed, until cancelled."""
    scopes: Sequence[str | None] = tuple(namespaces) or (None,)
    tasks = [
        asyncio.create_task(
            _expire_in(kube=kube, namespace=ns, settings=settings, clock=clock),
            name=f"grant expiry ({ns or 'every namespace'})",
        )
        for ns in scopes
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
