"""The ``Store`` protocol both homes implement (SQLite here; the Kubernetes API later)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from aviator.api.kinds import KindInfo
from aviator.api.labels import Selector
from aviator.api.watch import EventType, WatchEvent

__all__ = ["EventType", "Store", "WatchEvent"]


class Store(Protocol):
    """Objects are plain JSON-shaped dicts in wire form (camelCase), already admitted.

    ``namespace`` is ``None`` for cluster-scoped kinds; for ``list``/``watch`` ``None`` on a
    namespaced kind means all namespaces. Every method raises ``aviator.api.errors`` exceptions.
    """

    async def get(self, kind: KindInfo, namespace: str | None, name: str) -> dict[str, Any]:
        """The object, or ``NotFound``."""
        ...

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None, selector: Selector | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Matching objects sorted by namespace/name, and the store's resourceVersion at that moment."""
        ...

    async def create(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        """Insert; sets uid, resourceVersion, generation 1, creationTimestamp. ``AlreadyExists``
        if the name is taken (also while the old object is still terminating)."""
        ...

    async def replace(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace metadata (user-settable parts) and spec; status is kept as stored.

        If ``obj.metadata.resourceVersion`` is set and differs from the stored one: ``Conflict``.
        Generation is bumped only when spec changes. uid, creationTimestamp and
        deletionTimestamp are server-owned and kept. If the object is terminating and the new
        finalizer list is empty, the object is removed (and a DELETED event emitted)."""
        ...

    async def replace_status(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace only ``status`` (same resourceVersion precondition); never bumps generation."""
        ...

    async def delete(
        self,
        kind: KindInfo,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """With finalizers: set deletionTimestamp (once) and return the terminating object.
        Without: remove it, cascade to dependents (ownerReferences by uid), and return its last
        state. ``NotFound`` if absent; ``Conflict`` if ``resource_version`` is stale."""
        ...

    def watch(
        self,
        kind: KindInfo,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        selector: Selector | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version``; with ``None`` or ``"0"``, first a synthetic ADDED
        for every current object. ``Gone`` when the version is older than the retained history
        or when this watcher fell too far behind (the caller relists)."""
        ...

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion committed."""
        ...

    async def close(self) -> None: ...
