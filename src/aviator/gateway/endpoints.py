"""The endpoint table: which replica URLs serve which model, built from Replica objects. Pure.

The table is fed with watch events (``apply``) and full lists (``resync``) of Replica objects in
wire form (camelCase dicts, as the Control API sends them). It knows every Replica it was told
about, routable or not, so the gateway can tell an unknown model (404) from a known model that has
no ready replica right now (503).

A replica is routable when its ``Ready`` condition is ``True``, ``status.endpoint`` is an
``http(s)://`` URL and ``metadata.deletionTimestamp`` is unset. Each model's routable endpoints are
kept as a tuple sorted by key and rebuilt on change, so the request path only reads a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Endpoint", "EndpointTable", "endpoint_of", "model_of", "replica_key"]

READY = "Ready"
"""The condition type the gateway routes on (``aviator.api.replica.READY``)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One routable replica."""

    key: str
    """``namespace/name`` of the Replica; also what ``x-aviator-replica`` reports."""
    model: str
    """The served model name (``spec.model.name``)."""
    url: str
    """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123``."""


def replica_key(obj: Mapping[str, Any]) -> str | None:
    """``namespace/name`` of a Replica object, or None when it has no name."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = meta.get("namespace")
    return f"{namespace if isinstance(namespace, str) else ''}/{name}"


def model_of(obj: Mapping[str, Any]) -> str | None:
    """``spec.model.name``, or None when absent."""
    spec = obj.get("spec")
    model = spec.get("model") if isinstance(spec, Mapping) else None
    name = model.get("name") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) and name else None


def _is_ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return False
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") == READY:
            return cond.get("status") == "True"
    return False


def endpoint_of(obj: Mapping[str, Any]) -> Endpoint | None:
    """The endpoint a Replica object offers, or None when it is not routable."""
    key = replica_key(obj)
    model = model_of(obj)
    if key is None or model is None:
        return None
    if obj["metadata"].get("deletionTimestamp"):
        return None
    status = obj.get("status")
    if not isinstance(status, Mapping) or not _is_ready(status):
        return None
    url = status.get("endpoint")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    return Endpoint(key=key, model=model, url=url.rstrip("/"))


@dataclass(slots=True)
class _Model:
    members: dict[str, Endpoint | None] = field(default_factory=dict)
    """Every replica of the model by key, with its endpoint when routable."""
    ready: tuple[Endpoint, ...] = ()
    """The routable ones, sorted by key."""
    keys: tuple[str, ...] = ()
    """Their keys."""

    def rebuild(self) -> None:
        self.ready = tuple(ep for _, ep in sorted(self.members.items()) if ep is not None)
        self.keys = tuple(ep.key for ep in self.ready)


class EndpointTable:
    """Replicas indexed by model; read by the request path, written by discovery.

    Single-threaded by design: it lives on the gateway's event loop and is never awaited across.
    """

    __slots__ = ("_by_key", "_models", "_version")

    def __init__(self) -> None:
        self._by_key: dict[str, str] = {}
        """Replica key → the model it serves."""
        self._models: dict[str, _Model] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """Grows by one on every change; lets observers skip work when nothing moved."""
        return self._version

    def lookup(self, model: str) -> tuple[Endpoint, ...] | None:
        """The ready endpoints of ``model`` (maybe empty), or None if no replica serves it."""
        entry = self._models.get(model)
        return None if entry is None else entry.ready

    def keys(self, model: str) -> tuple[str, ...]:
        """The keys of the ready endpoints of ``model`` (empty when there are none)."""
        entry = self._models.get(model)
        return () if entry is None else entry.keys

    def endpoint(self, key: str) -> Endpoint | None:
        """The endpoint of replica ``key`` (``namespace/name``) if it is routable."""
        model = self._by_key.get(key)
        return None if model is None else self._models[model].members[key]

    def endpoints(self) -> list[Endpoint]:
        """Every routable endpoint, of every model."""
        return [e for entry in self._models.values() for e in entry.ready]

    def models(self) -> list[str]:
        """Every model at least one Replica serves, ready or not, sorted."""
        return sorted(self._models)

    def ready_counts(self) -> dict[str, int]:
        """Routable endpoints per known model."""
        return {model: len(entry.ready) for model, entry in self._models.items()}

    def __len__(self) -> int:
        """Number of routable endpoints over all models."""
        return sum(len(entry.ready) for entry in self._models.values())

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> bool:
        """Apply one watch event (``ADDED``, ``MODIFIED``, ``DELETED``); others are ignored.

        Returns whether the table changed.
        """
        key = replica_key(obj)
        if key is None:
            return False
        if event_type in ("ADDED", "MODIFIED"):
            model = model_of(obj)
            if model is None:
                return self._remove(key)
            return self._put(key, model, endpoint_of(obj))
        if event_type == "DELETED":
            return self._remove(key)
        return False

    def resync(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Replace the whole table with the Replicas of a fresh list."""
        latest: dict[str, Mapping[str, Any]] = {}
        for obj in objects:
            key = replica_key(obj)
            if key is not None:
                latest[key] = obj  # a list names each object once; if not, the last one wins
        self._by_key.clear()
        self._models.clear()
        for key, obj in latest.items():
            model = model_of(obj)
            if model is None:
                continue
            self._by_key[key] = model
            self._models.setdefault(model, _Model()).members[key] = endpoint_of(obj)
        for entry in self._models.values():
            entry.rebuild()
        self._version += 1

    def _put(self, key: str, model: str, endpoint: Endpoint | None) -> bool:
        old_model = self._by_key.get(key)
        if old_model == model:
            entry = self._models[model]
            if entry.members[key] == endpoint:
                return False
        elif old_model is not None:
            self._remove(key)
        self._by_key[key] = model
        entry = self._models.setdefault(model, _Model())
        entry.members[key] = endpoint
        entry.rebuild()
        self._version += 1
        return True

    def _remove(self, key: str) -> bool:
        model = self._by_key.pop(key, None)
        if model is None:
            return False
        entry = self._models[model]
        del entry.members[key]
        if entry.members:
            entry.rebuild()
        else:
            del self._models[model]
        self._version += 1
        return True
