"""List + watch into a local cache: the reflector both the controllers and the gateway use.

A ``Reflector`` lists a kind, then watches from the list's resourceVersion. When the watch ends
(``Gone``, a dropped connection, any error) it relists with exponential backoff and reconciles its
cache against the fresh list, emitting the ADDED/MODIFIED/DELETED events the consumer missed —
so consumers stay level-correct without ever seeing the gap. It works over anything with
``list``/``watch`` (the in-process ``Store`` or the HTTP ``Client``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from aviator.api import errors
from aviator.api.kinds import KindInfo
from aviator.api.watch import EventType, WatchEvent

ObjectKey = tuple[str, str]
"""(namespace, name); namespace is ``""`` for cluster-scoped kinds."""


def key_of(obj: dict[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


class ListWatch(Protocol):
    async def list(
        self, kind: KindInfo, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self, kind: KindInfo, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncIterator[WatchEvent]: ...


EventHandler = Callable[[EventType, dict[str, Any]], None]
IndexFunc = Callable[[dict[str, Any]], Iterable[str]]
"""Values under which an object is indexed (client-go's ``IndexFunc``)."""


def owner_uids(obj: dict[str, Any]) -> list[str]:
    """Index function: the uids of the object's controller owner references."""
    return [
        ref["uid"]
        for ref in obj["metadata"].get("ownerReferences") or ()
        if ref.get("controller") and ref.get("uid")
    ]


BY_OWNER = "owner"


class Reflector:
    """Mirror one kind (optionally one namespace) into ``cache`` and report every change."""

    def __init__(
        self,
        *,
        source: ListWatch,
        kind: KindInfo,
        on_event: EventHandler,
        namespace: str | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._source = source
        self._kind = kind
        self._namespace = namespace
        self._on_event = on_event
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._log = logger or logging.getLogger(f"aviator.cache.{kind.plural}")
        self.cache: dict[ObjectKey, dict[str, Any]] = {}
        """Read-only for consumers: the reflector keeps it and its indices in step."""
        self._indexers = dict(indexers or {})
        self._indices: dict[str, dict[str, set[ObjectKey]]] = {name: {} for name in self._indexers}
        self.synced = asyncio.Event()
        """Set after the first successful list: the cache is complete from then on."""
        self.resource_version = ""

    @property
    def kind(self) -> KindInfo:
        return self._kind

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self.cache.get(key)

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        """Cached objects whose ``index`` function yields ``value``, in no particular order."""
        return [self.cache[key] for key in self._indices[index].get(value, ())]

    def _put(self, key: ObjectKey, obj: dict[str, Any]) -> dict[str, Any] | None:
        old = self.cache.get(key)
        if old is not None:
            self._unindex(key, old)
        self.cache[key] = obj
        for name, func in self._indexers.items():
            for value in func(obj):
                self._indices[name].setdefault(value, set()).add(key)
        return old

    def _pop(self, key: ObjectKey) -> dict[str, Any] | None:
        old = self.cache.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    async def run(self) -> None:
        """List and watch until cancelled."""
        failures = 0
        while True:
            try:
                await self._relist()
                failures = 0
                await self._watch()
                # A watch that ends cleanly (server closed it) is resumed from the same version.
            except asyncio.CancelledError:
                raise
            except errors.Gone:
                self._log.info("watch of %s expired; relisting", self._kind.plural)
                self.resource_version = ""
            except Exception as exc:
                failures += 1
                delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** min(failures - 1, 16))
                self._log.warning(
                    "list/watch of %s failed (%s); retrying in %.2fs", self._kind.plural, exc, delay
                )
                self.resource_version = ""
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        if self.resource_version and self.synced.is_set():
            return  # resume the watch from where it ended
        items, rv = await self._source.list(self._kind, namespace=self._namespace)
        fresh = {key_of(item): item for item in items}
        for key in [k for k in self.cache if k not in fresh]:
            gone = self._pop(key)
            assert gone is not None
            self._emit("DELETED", gone)
        for key, item in fresh.items():
            old = self._put(key, item)
            if old is None:
                self._emit("ADDED", item)
            elif old["metadata"].get("resourceVersion") != item["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", item)
        self.resource_version = rv
        self.synced.set()

    async def _watch(self) -> None:
        async for event in self._source.watch(
            self._kind, namespace=self._namespace, resource_version=self.resource_version
        ):
            obj = event["object"]
            rv = obj.get("metadata", {}).get("resourceVersion")
            if event["type"] == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            key = key_of(obj)
            if event["type"] == "DELETED":
                self._pop(key)
            else:
                self._put(key, obj)
            if rv:
                self.resource_version = rv
            self._emit(event["type"], obj)

    def _emit(self, type_: EventType, obj: dict[str, Any]) -> None:
        try:
            self._on_event(type_, obj)
        except Exception:
            self._log.exception("event handler failed for %s %s", type_, key_of(obj))
