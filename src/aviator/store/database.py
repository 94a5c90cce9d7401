"""The synchronous half of the embedded store: one SQLite connection and the write rules.

Every method MUST run on the store's single thread (the connection refuses any other). Writes
run in ``BEGIN IMMEDIATE`` transactions and return the changes they committed, for the caller
to publish; reads are single statements, so they see whole transactions only.

resourceVersion is one counter for all kinds, kept in the ``revision`` table and moved inside
each write transaction: every committed event has the next integer, and a rolled-back write
uses none. No-op writes (nothing differs from the stored object) commit nothing, keep the
resourceVersion and emit no event, as in Kubernetes.

Garbage collection follows Kubernetes' background propagation: when an object is removed, each
dependent (``ownerReferences`` naming its uid) none of whose owners still exists is deleted in
the same transaction, honouring finalizers and recursing. An object created (or replaced) with
owner references of which none exists is collected at once, as the Kubernetes collector would do
shortly after; the create still returns the object it stored.
"""

from __future__ import annotations

import gc
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson

from aviator.api.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    InternalError,
    NotFound,
    TooManyRequests,
)
from aviator.api.kinds import KindInfo
from aviator.api.labels import Selector
from aviator.api.meta import format_time, now_utc
from aviator.api.watch import EventType
from aviator.store import objects, schema
from aviator.store.watch import Change

__all__ = ["Database", "run_translated"]

P = ParamSpec("P")
T = TypeVar("T")
Obj = dict[str, Any]
Changes = tuple[Change, ...]

_ERROR_TEXT_MAX = 200


def run_translated(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``fn``; the one place where anything else becomes an ``aviator.api.errors`` error."""
    try:
        return fn(*args, **kwargs)
    except ApiError:
        raise
    except sqlite3.Error as exc:
        raise _translate(exc) from exc
    except Exception as exc:
        raise InternalError(f"store failure: {str(exc)[:_ERROR_TEXT_MAX]}") from exc


def _translate(exc: sqlite3.Error) -> ApiError:
    text = str(exc)[:_ERROR_TEXT_MAX]
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return TooManyRequests(f"the store is busy ({text}); retry", retry_after=1.0)
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(f"the store refused the write: {text}")
    return InternalError(f"store failure: {text}")


@dataclass(frozen=True, slots=True)
class _Key:
    kind: str
    namespace: str | None
    name: str

    @property
    def params(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace or "", self.name)


@dataclass(slots=True)
class _Txn:
    revision: int
    changes: list[Change] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """uids removed in this transaction whose dependents are still to be collected."""

    def next_revision(self) -> int:
        self.revision += 1
        return self.revision


class Database:
    """Objects by (kind, namespace, name), their owner index, and the revision counter."""

    def __init__(self, conn: sqlite3.Connection, *, revision: int) -> None:
        self._conn = conn
        self._revision = revision

    @classmethod
    def open(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
        try:
            schema.configure(conn)
            revision = schema.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, revision=revision)

    @property
    def revision(self) -> int:
        """The last committed resourceVersion."""
        return self._revision

    def close(self) -> None:
        try:
            self._conn.execute("PRAGMA optimize")
        finally:
            self._conn.close()

    # -- reads -------------------------------------------------------------------------------

    def get(self, kind: KindInfo, namespace: str | None, name: str) -> Obj:
        key = _Key(kind.kind, objects.scope_namespace(kind, namespace), name)
        obj = self._load(key)
        if obj is None:
            raise _not_found(kind, key)
        return obj

    def list(
        self, kind: KindInfo, namespace: str | None, selector: Selector | None
    ) -> tuple[list[Obj], int]:
        namespace = objects.list_namespace(kind, namespace)
        if namespace is None:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? ORDER BY namespace, name", (kind.kind,)
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? AND namespace = ? ORDER BY name",
                (kind.kind, namespace),
            ).fetchall()
        with _collector_paused():
            items = [orjson.loads(body) for (body,) in rows]
        if selector is not None and not selector.empty:
            items = [item for item in items if selector.matches(objects.labels(item))]
        return items, self._revision

    # -- writes ------------------------------------------------------------------------------

    def create(self, kind: KindInfo, payload: bytes) -> tuple[Obj, Changes]:
        obj = orjson.loads(payload)
        namespace, name = objects.identity(kind, obj)
        key = _Key(kind.kind, namespace, name)
        with self._writing() as txn:
            if self._conn.execute(
                "SELECT 1 FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key.params
            ).fetchone():
                raise AlreadyExists(
                    f'{kind.plural} "{name}" already exists', kind=kind.plural, name=name
                )
            new = objects.created(
                kind,
                obj,
                uid=str(uuid.uuid4()),
                revision=txn.next_revision(),
                now=format_time(now_utc()),
            )
            self._insert(txn, key, new)
            self._collect_if_orphan(txn, key, new)
        return new, tuple(txn.changes)

    def _current_for_write(self, kind: KindInfo, key: _Key, obj: Obj) -> Obj:
        """The stored object ``obj`` may replace: it exists and the preconditions hold."""
        current = self._require(kind, key)
        meta = obj["metadata"]
        objects.check_preconditions(
            kind,
            current,
            resource_version=_text(meta.get("resourceVersion")),
            uid=_text(meta.get("uid")),
        )
        return current

    def replace(self, kind: KindInfo, payload: bytes) -> tuple[Obj, Changes]:
        obj = orjson.loads(payload)
        key = _Key(kind.kind, *objects.identity(kind, obj))
        with self._writing() as txn:
            current = self._current_for_write(kind, key, obj)
            new = objects.replaced(kind, current, obj)
            if objects.is_terminating(new) and not objects.finalizers(new):
                result = self._remove(txn, key, new)
            elif objects.canonical(new) == objects.canonical(current):
                return current, ()
            else:
                result = self._update(txn, key, new, previous=current)
                if objects.owner_uids(new) != objects.owner_uids(current):
                    self._index_owners(key, result, replace=True)
                    result = self._collect_if_orphan(txn, key, result)
            self._collect_dependents(txn)
        return result, tuple(txn.changes)

    def replace_status(self, kind: KindInfo, payload: bytes) -> tuple[Obj, Changes]:
        obj = orjson.loads(payload)
        key = _Key(kind.kind, *objects.identity(kind, obj))
        with self._writing() as txn:
            current = self._current_for_write(kind, key, obj)
            new = objects.status_replaced(current, obj)
            if objects.canonical(new) == objects.canonical(current):
                return current, ()
            result = self._update(txn, key, new, previous=current)
        return result, tuple(txn.changes)

    def delete(
        self, kind: KindInfo, namespace: str | None, name: str, *, resource_version: str | None
    ) -> tuple[Obj, Changes]:
        key = _Key(kind.kind, objects.scope_namespace(kind, namespace), name)
        with self._writing() as txn:
            current = self._require(kind, key)
            objects.check_preconditions(kind, current, resource_version=resource_version)
            result = self._delete(txn, key, current)
            self._collect_dependents(txn)
        return result, tuple(txn.changes)

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[_Txn]:
        """A write transaction; the counter moves only if it commits."""
        txn = _Txn(revision=self._revision)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield txn
            if txn.revision != self._revision:
                self._conn.execute("UPDATE revision SET rv = ? WHERE id = 0", (txn.revision,))
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._revision = txn.revision

    def _load(self, key: _Key) -> Obj | None:
        row = self._conn.execute(
            "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key.params
        ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def _require(self, kind: KindInfo, key: _Key) -> Obj:
        obj = self._load(key)
        if obj is None:
            raise _not_found(kind, key)
        return obj

    def _record(
        self, txn: _Txn, event: EventType, key: _Key, obj: Obj, *, previous: Obj | None = None
    ) -> bytes:
        body = orjson.dumps(obj)
        txn.changes.append(
            Change(
                revision=txn.revision,
                type=event,
                kind=key.kind,
                namespace=key.namespace,
                labels=objects.labels(obj),
                previous_labels=None if previous is None else objects.labels(previous),
                body=body,
            )
        )
        return body

    def _insert(self, txn: _Txn, key: _Key, obj: Obj) -> None:
        body = self._record(txn, "ADDED", key, obj)
        self._conn.execute(
            "INSERT INTO objects (kind, namespace, name, uid, rv, body) VALUES (?, ?, ?, ?, ?, ?)",
            (*key.params, obj["metadata"]["uid"], txn.revision, body),
        )
        self._index_owners(key, obj, replace=False)

    def _update(self, txn: _Txn, key: _Key, obj: Obj, *, previous: Obj) -> Obj:
        new = objects.with_revision(obj, txn.next_revision())
        body = self._record(txn, "MODIFIED", key, new, previous=previous)
        self._conn.execute(
            "UPDATE objects SET rv = ?, body = ? WHERE kind = ? AND namespace = ? AND name = ?",
            (txn.revision, body, *key.params),
        )
        return new

    def _remove(self, txn: _Txn, key: _Key, obj: Obj) -> Obj:
        final = objects.with_revision(obj, txn.next_revision())
        self._record(txn, "DELETED", key, final)
        self._conn.execute(
            "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key.params
        )
        txn.removed.append(final["metadata"]["uid"])
        return final

    def _delete(self, txn: _Txn, key: _Key, obj: Obj) -> Obj:
        """Mark (once) when finalizers remain, else remove."""
        if not objects.finalizers(obj):
            return self._remove(txn, key, obj)
        if objects.is_terminating(obj):
            return obj
        marked = objects.marked_for_deletion(obj, now=format_time(now_utc()))
        return self._update(txn, key, marked, previous=obj)

    def _index_owners(self, key: _Key, obj: Obj, *, replace: bool) -> None:
        if replace:
            self._conn.execute(
                "DELETE FROM owners WHERE kind = ? AND namespace = ? AND name = ?", key.params
            )
        uids = objects.owner_uids(obj)
        if uids:
            self._conn.executemany(
                "INSERT INTO owners (owner_uid, kind, namespace, name) VALUES (?, ?, ?, ?)",
                [(uid, *key.params) for uid in uids],
            )

    def _any_exists(self, uids: Sequence[str]) -> bool:
        marks = ", ".join("?" * len(uids))
        row = self._conn.execute(
            f"SELECT 1 FROM objects WHERE uid IN ({marks}) LIMIT 1",  # only "?" marks
            uids,
        ).fetchone()
        return row is not None

    def _collect_if_orphan(self, txn: _Txn, key: _Key, obj: Obj) -> Obj:
        uids = objects.owner_uids(obj)
        if uids and not self._any_exists(uids):
            obj = self._delete(txn, key, obj)
            self._collect_dependents(txn)
        return obj

    def _collect_dependents(self, txn: _Txn) -> None:
        """Delete what the removed objects owned, level by level, in key order."""
        while txn.removed:
            owner_uid = txn.removed.pop(0)
            dependents = self._conn.execute(
                "SELECT kind, namespace, name FROM owners WHERE owner_uid = ? "
                "ORDER BY kind, namespace, name",
                (owner_uid,),
            ).fetchall()
            for kind, namespace, name in dependents:
                key = _Key(kind, namespace or None, name)
                obj = self._load(key)
                if obj is None or self._any_exists(objects.owner_uids(obj)):
                    continue
                self._delete(txn, key, obj)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while decoding many objects at once.

    Decoding 10k objects makes ~150k fresh dicts and lists and no cycles, yet each allocation
    burst triggers collections that rescan the growing result: with the collector running, a
    10k list takes about twice as long. The pause is process-wide but lasts one decode.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _not_found(kind: KindInfo, key: _Key) -> NotFound:
    return NotFound(f'{kind.plural} "{key.name}" not found', kind=kind.plural, name=key.name)
