"""Server-side metadata rules, as pure functions over wire-form dicts.

Who owns which field: the store sets ``uid``, ``resourceVersion``, ``generation``,
``creationTimestamp`` and ``deletionTimestamp``; everything else in ``metadata`` and ``spec`` is
the writer's. Functions here never mutate their arguments; they return new top-level and
``metadata`` dicts (nested values are shared, so callers own their inputs exclusively).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from aviator.api.errors import BadRequest, Conflict, FieldError, Invalid
from aviator.api.kinds import KindInfo

__all__ = [
    "SERVER_FIELDS",
    "canonical",
    "check_preconditions",
    "created",
    "finalizers",
    "identity",
    "is_terminating",
    "labels",
    "list_namespace",
    "marked_for_deletion",
    "owner_uids",
    "replaced",
    "scope_namespace",
    "status_replaced",
    "with_revision",
]

Obj = dict[str, Any]

SERVER_FIELDS: Final = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)


def canonical(value: Any) -> bytes:
    """Key-order-insensitive, type-exact encoding for "did it change?" (``1`` is not ``1.0``)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def labels(obj: Obj) -> dict[str, str]:
    value = _meta(obj).get("labels")
    return value if isinstance(value, dict) else {}


def finalizers(obj: Obj) -> list[str]:
    value = _meta(obj).get("finalizers")
    return [f for f in value if isinstance(f, str)] if isinstance(value, list) else []


def owner_uids(obj: Obj) -> list[str]:
    """The distinct uids in ``metadata.ownerReferences``, in order."""
    refs = _meta(obj).get("ownerReferences")
    if not isinstance(refs, list):
        return []
    uids = (ref.get("uid") for ref in refs if isinstance(ref, dict))
    return list(dict.fromkeys(uid for uid in uids if isinstance(uid, str) and uid))


def is_terminating(obj: Obj) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def scope_namespace(kind: KindInfo, namespace: str | None) -> str | None:
    """The namespace one object of ``kind`` lives in; ``BadRequest`` if it contradicts the scope."""
    if kind.namespaced:
        if not namespace:
            raise BadRequest(f"{kind.kind} is namespaced: a namespace is required")
        return namespace
    if namespace:
        raise BadRequest(
            f"{kind.kind} is cluster-scoped and takes no namespace (got {namespace!r})"
        )
    return None


def list_namespace(kind: KindInfo, namespace: str | None) -> str | None:
    """Like ``scope_namespace`` for list/watch, where ``None`` on a namespaced kind means all."""
    if namespace and not kind.namespaced:
        raise BadRequest(
            f"{kind.kind} is cluster-scoped and takes no namespace (got {namespace!r})"
        )
    return namespace or None


def identity(kind: KindInfo, obj: Obj) -> tuple[str | None, str]:
    """``(namespace, name)`` of a body about to be written; ``BadRequest`` for a body the store
    cannot even key (admission gives the precise field errors before this point)."""
    if obj.get("kind", kind.kind) != kind.kind:
        raise BadRequest(f"expected an object of kind {kind.kind!r}, got {obj.get('kind')!r}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise BadRequest(f"{kind.kind} has no metadata object")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{kind.kind} has no metadata.name")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise BadRequest(f"{kind.kind} {name!r} has a non-string metadata.namespace")
    return scope_namespace(kind, namespace), name


def _resource_key(kind: KindInfo, obj: Obj) -> str:
    return f'{kind.plural} "{_meta(obj).get("name", "")}"'


def check_preconditions(
    kind: KindInfo, current: Obj, *, resource_version: str | None, uid: str | None = None
) -> None:
    """``Conflict`` when the writer saw another version (or another incarnation) of the object."""
    meta = _meta(current)
    name = str(meta.get("name", ""))
    if uid and uid != meta.get("uid"):
        raise Conflict(
            f"Operation cannot be fulfilled on {_resource_key(kind, current)}: the uid in the "
            f"request ({uid}) does not match the stored object's ({meta.get('uid')}); "
            "it was deleted and created again",
            kind=kind.plural,
            name=name,
        )
    if resource_version and resource_version != meta.get("resourceVersion"):
        raise Conflict(
            f"Operation cannot be fulfilled on {_resource_key(kind, current)}: the object has "
            "been modified; please apply your changes to the latest version and try again",
            kind=kind.plural,
            name=name,
        )


def with_revision(obj: Obj, revision: int) -> Obj:
    return {**obj, "metadata": {**_meta(obj), "resourceVersion": str(revision)}}


def created(kind: KindInfo, obj: Obj, *, uid: str, revision: int, now: str) -> Obj:
    """The object as first stored: client-set server fields dropped, then set by the store.

    Status is kept as given: admission already reset it for user writes, and controllers may
    create children with an initial status.
    """
    meta = {k: v for k, v in _meta(obj).items() if k not in SERVER_FIELDS}
    if meta.get("namespace") is None:
        meta.pop("namespace", None)
    meta.update(uid=uid, resourceVersion=str(revision), generation=1, creationTimestamp=now)
    out: Obj = {"apiVersion": obj.get("apiVersion", kind.api_version), "kind": kind.kind}
    out["metadata"] = meta
    out.update((k, v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata"))
    return out


def replaced(kind: KindInfo, current: Obj, obj: Obj) -> Obj:
    """``obj``'s user-owned metadata and spec over ``current``'s server fields and status.

    Generation moves only when spec changed. A terminating object may lose finalizers but not
    gain new ones (``Invalid``), as in Kubernetes. resourceVersion is left as stored: the caller
    sets a new one only if the result differs from ``current``.
    """
    cur_meta = _meta(current)
    meta = {k: v for k, v in _meta(obj).items() if k not in SERVER_FIELDS}
    meta["name"] = cur_meta["name"]
    if "namespace" in cur_meta:
        meta["namespace"] = cur_meta["namespace"]
    else:
        meta.pop("namespace", None)
    for field in SERVER_FIELDS:
        if field in cur_meta:
            meta[field] = cur_meta[field]
    out: Obj = {"apiVersion": current.get("apiVersion", kind.api_version), "kind": kind.kind}
    out["metadata"] = meta
    out.update(
        (k, v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")
    )
    if "status" in current:
        out["status"] = current["status"]
    if canonical(out.get("spec")) != canonical(current.get("spec")):
        meta["generation"] = int(cur_meta.get("generation") or 0) + 1
    if is_terminating(current):
        added = sorted(set(finalizers(out)) - set(finalizers(current)))
        if added:
            raise Invalid(
                f"{kind.kind} {cur_meta['name']!r} is invalid",
                kind=kind.kind,
                name=str(cur_meta["name"]),
                causes=(
                    FieldError(
                        "metadata.finalizers",
                        f"no new finalizers can be added while the object is being deleted "
                        f"(tried to add {', '.join(added)})",
                        "FieldValueForbidden",
                    ),
                ),
            )
    return out


def status_replaced(current: Obj, obj: Obj) -> Obj:
    """``current`` with ``obj``'s status (or none, when ``obj`` has no status)."""
    out = {k: v for k, v in current.items() if k != "status"}
    if "status" in obj:
        out["status"] = obj["status"]
    return out


def marked_for_deletion(current: Obj, *, now: str) -> Obj:
    return {**current, "metadata": {**_meta(current), "deletionTimestamp": now}}
