"""``SqliteStore``: the embedded home's ``Store``, one SQLite file in WAL mode.

Threading: every sqlite3 call runs on one thread, the store's single-worker executor, so the
event loop never blocks on disk and writes are serialized without locks. A write job commits,
then (still on that thread) schedules ``WatchHub.publish`` on the loop with
``call_soon_threadsafe``; jobs run one after another, so watchers see changes in commit order,
and before the writer's own ``await`` returns.

Durability (see ``store.schema``): a write is acknowledged only after its commit, which survives
``kill -9``; a power loss may lose the last commits.

Semantics beyond the ``Store`` protocol, all as in Kubernetes:

- resourceVersion is one counter across kinds (an etcd revision): each committed event takes
  the next integer, also each object a cascade deletes, and numbers are never reused after a
  restart. A write that changes nothing returns the stored object, takes no number and emits
  no event.
- Deletion cascades in the background style: a dependent goes (finalizers honoured) once none
  of its owners exists. An object written with owner references that all point at missing
  uids is collected in the same transaction (the create or replace still returns it).
- A terminating object can lose finalizers but not gain new ones (``Invalid``).
- ``replace``/``replace_status`` also accept a ``metadata.uid`` precondition (``Conflict``).
- Watches: history (``StoreSettings.watch_history``) lives in memory, so after a restart only
  the current resourceVersion and later can be resumed (older: ``Gone``). With a selector, an
  object that stops matching is sent as DELETED carrying its new state (Kubernetes sends the
  old state); one that starts matching as ADDED. Bad arguments raise ``BadRequest`` from
  ``watch()`` itself, ``Gone`` comes from the first iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import orjson

from aviator.api.errors import BadRequest, InternalError
from aviator.api.kinds import KindInfo
from aviator.api.labels import Selector
from aviator.settings import StoreSettings
from aviator.store import objects
from aviator.store.database import Database, run_translated
from aviator.store.watch import Change, WatchHub, WatchStream, parse_resource_version

__all__ = ["SqliteStore"]

P = ParamSpec("P")
T = TypeVar("T")
Obj = dict[str, Any]


class SqliteStore:
    """Objects, resourceVersions and watches over one SQLite file. Build it with ``open``."""

    def __init__(
        self,
        *,
        database: Database,
        executor: ThreadPoolExecutor,
        loop: asyncio.AbstractEventLoop,
        settings: StoreSettings,
    ) -> None:
        self._db = database
        self._executor = executor
        self._loop = loop
        self._settings = settings
        self._hub = WatchHub(revision=database.revision, history=settings.watch_history)
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, settings: StoreSettings) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and its parent directories."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aviator-store")
        try:
            database = await loop.run_in_executor(
                executor, functools.partial(run_translated, Database.open, path)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(database=database, executor=executor, loop=loop, settings=settings)

    async def close(self) -> None:
        """End all watches, let queued operations finish, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._hub.close()
        try:
            await self._loop.run_in_executor(
                self._executor, functools.partial(run_translated, self._db.close)
            )
        finally:
            # The queue is drained by now, so this joins an idle thread: no real wait.
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion committed (and published to watchers)."""
        return str(self._hub.revision)

    def watcher_count(self) -> int:
        """Live watchers, for diagnostics and tests."""
        return self._hub.watcher_count()

    # -- Reader ------------------------------------------------------------------------------

    async def get(self, kind: KindInfo, namespace: str | None, name: str) -> Obj:
        return await self._read(self._db.get, kind, namespace, name)

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None, selector: Selector | None = None
    ) -> tuple[list[Obj], str]:
        items, revision = await self._read(self._db.list, kind, namespace, selector)
        return items, str(revision)

    def watch(
        self,
        kind: KindInfo,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        selector: Selector | None = None,
    ) -> WatchStream:
        """Bad arguments raise ``BadRequest`` here; ``Gone`` comes from the first iteration."""
        namespace = objects.list_namespace(kind, namespace)
        start = parse_resource_version(resource_version)
        return WatchStream(
            self._hub,
            kind=kind.kind,
            namespace=namespace,
            selector=selector,
            resource_version=start,
            snapshot=functools.partial(self._read, self._db.list, kind, namespace, selector),
            limit=self._settings.watcher_queue,
        )

    # -- Writer ------------------------------------------------------------------------------

    async def create(self, kind: KindInfo, obj: Obj) -> Obj:
        return await self._write(self._db.create, kind, _encode(obj))

    async def replace(self, kind: KindInfo, obj: Obj) -> Obj:
        return await self._write(self._db.replace, kind, _encode(obj))

    async def replace_status(self, kind: KindInfo, obj: Obj) -> Obj:
        return await self._write(self._db.replace_status, kind, _encode(obj))

    async def delete(
        self,
        kind: KindInfo,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
    ) -> Obj:
        return await self._write(
            functools.partial(self._db.delete, resource_version=resource_version),
            kind,
            namespace,
            name,
        )

    # -- the thread boundary -----------------------------------------------------------------

    async def _read(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self._check_open()
        job = functools.partial(run_translated, fn, *args, **kwargs)
        return await self._loop.run_in_executor(self._executor, job)

    async def _write(
        self, fn: Callable[P, tuple[Obj, Sequence[Change]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Obj:
        self._check_open()
        job = functools.partial(self._commit_and_publish, fn, *args, **kwargs)
        return await self._loop.run_in_executor(self._executor, job)

    def _commit_and_publish(
        self, fn: Callable[P, tuple[Obj, Sequence[Change]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Obj:
        """Runs on the store thread: the write, then its events queued to the loop in order."""
        result, changes = run_translated(fn, *args, **kwargs)
        if changes:
            # RuntimeError: the loop is closed, so nobody is left to watch.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._hub.publish, changes)
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("the store is closed")


def _encode(obj: Obj) -> bytes:
    """Snapshot the caller's object before it crosses threads (they may mutate it meanwhile)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"expected an object, got {type(obj).__name__}")
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        raise BadRequest(f"the object is not JSON-serializable: {exc}") from exc
