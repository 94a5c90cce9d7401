"""``KubeStore``: the ``aviator.store.protocol.Store`` of the cluster home, over the API server.

The aviator kinds that are CustomResourceDefinitions in a cluster (``aviator.k8s.crds.CRD_KINDS``:
ModelDeployment, Agent, Policy, Grant) are read and written as custom resources, so the
controllers, the reflectors and the policy view work unchanged against a cluster. The other kinds
are upstream objects there (``UPSTREAM_KINDS``) and are ``NotFound`` here.

How each promise of the protocol is kept:

- the API server assigns uid, resourceVersion, generation and creationTimestamp, bumps the
  generation on spec changes only (status subresource), keeps status out of spec writes, removes
  an object whose finalizers are emptied while terminating, and garbage-collects dependents by
  ownerReferences;
- ``replace`` and ``replace_status`` send a JSON merge patch computed against the stored object
  and carrying its resourceVersion: a stale ``metadata.resourceVersion`` in the caller's object
  is ``Conflict`` (checked here and again by the server, which refuses a patch whose version is
  no longer current); without one the write is unconditional, retried on a race;
- ``watch`` asks for bookmarks and passes them on, so a reflector resumes from a recent version;
  an expired version is ``Gone`` and the reflector relists;
- errors are translated once, in ``aviator.kube.api``.

A store may be confined to one namespace (``namespace=``), for a gateway whose service account
reads only its own: namespaced lists and watches then stay in it, and naming another namespace is
``Forbidden``. Label selectors go to the server and are applied again here, so that objects that
stop matching leave a watch as DELETED even from a server that does not filter.

``resource_version`` is the latest version this store has seen (Kubernetes versions are opaque:
it is not compared, only remembered). ``close()`` closes the API client the store was given.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aviator.api import errors
from aviator.api.kinds import KindInfo
from aviator.api.labels import Selector
from aviator.api.watch import WatchEvent
from aviator.k8s.crds import CRD_KINDS, UPSTREAM_KINDS
from aviator.kube.api import MERGE_PATCH, KubeApi, Resource, resource_path, selector_text
from aviator.kube.patch import merge_patch

__all__ = ["KubeStore", "resource_of"]

log = logging.getLogger("aviator.kube.store")

USER_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
"""The metadata a replace may change; the rest is the server's."""
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)
"""Refused by the API server on create, so dropped from the object first."""
LIST_PAGE = 500
WATCH_TIMEOUT_S = 300
"""The server ends each watch after this long; the caller resumes from the last version."""
REPLACE_ATTEMPTS = 5
"""Unconditional replaces that lose a race this many times in a row give up with ``Conflict``."""


def resource_of(kind: KindInfo) -> Resource:
    """Where ``kind``'s custom resources live; ``NotFound`` for a kind that is no CRD."""
    if kind.kind not in CRD_KINDS:
        upstream = UPSTREAM_KINDS.get(kind.kind)
        where = f": in a cluster it is {upstream}" if upstream else ""
        raise errors.NotFound(f"{kind.kind} is not a custom resource{where}", kind=kind.kind)
    return Resource(
        group=kind.group,
        version=kind.api_version.split("/", 1)[1],
        plural=kind.plural,
        namespaced=kind.namespaced,
        kind=kind.kind,
    )


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise errors.BadRequest("the object has no metadata")
    return meta


def _typed(kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
    # Collections of custom resources name apiVersion and kind on each item, but not every server
    # does on every path; the wire form always has them.
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    return obj


def _sort_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class KubeStore:
    """The aviator CRDs of one cluster (or one namespace of it) as a ``Store``."""

    def __init__(
        self, *, api: KubeApi, namespace: str | None = None, watch_timeout_s: int = WATCH_TIMEOUT_S
    ) -> None:
        self._api = api
        self._scope = namespace
        self._watch_timeout_s = watch_timeout_s
        self._resource_version = ""

    @property
    def namespace(self) -> str | None:
        """The namespace this store is confined to, or None for the whole cluster."""
        return self._scope

    @property
    def resource_version(self) -> str:
        return self._resource_version

    async def close(self) -> None:
        await self._api.aclose()

    # -- reading ----------------------------------------------------------------------------------

    async def get(self, kind: KindInfo, namespace: str | None, name: str) -> dict[str, Any]:
        path = self._object_path(kind, namespace, name)
        return self._seen(_typed(kind, await self._api.request("GET", path, verb="get")))

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None, selector: Selector | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        path = resource_path(
            resource_of(kind), namespace=self._collection_namespace(kind, namespace)
        )
        query: dict[str, str] = {"limit": str(LIST_PAGE)}
        if (text := selector_text(selector)) is not None:
            query["labelSelector"] = text
        items: list[dict[str, Any]] = []
        while True:
            page = await self._api.request("GET", path, verb="list", query=query)
            items.extend(
                _typed(kind, item) for item in page.get("items") or () if isinstance(item, dict)
            )
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            query["continue"] = str(meta["continue"])
        version = str(meta.get("resourceVersion") or "")
        if version:
            self._resource_version = version
        if selector is not None and not selector.empty:
            items = [i for i in items if selector.matches(_meta(i).get("labels") or {})]
        items.sort(key=_sort_key)
        return items, version

    async def watch(
        self,
        kind: KindInfo,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        selector: Selector | None = None,
    ) -> AsyncIterator[WatchEvent]:
        path = resource_path(
            resource_of(kind), namespace=self._collection_namespace(kind, namespace)
        )
        query = {"allowWatchBookmarks": "true", "timeoutSeconds": str(self._watch_timeout_s)}
        if resource_version:
            query["resourceVersion"] = resource_version
        if (text := selector_text(selector)) is not None:
            query["labelSelector"] = text
        selecting = selector is not None and not selector.empty
        resumed = resource_version not in (None, "", "0")
        present: set[tuple[str, str]] = set()
        """Keys this watch reported as present."""
        departed: set[tuple[str, str]] = set()
        """Keys it reported as DELETED (so a departure is reported once)."""
        async for event in self._api.watch(path, query=query):
            type_ = event.get("type")
            obj = _typed(kind, event["object"])
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if isinstance(version, str) and version:
                self._resource_version = version
            if type_ == "BOOKMARK":
                yield {"type": "BOOKMARK", "object": obj}
                continue
            if type_ not in ("ADDED", "MODIFIED", "DELETED"):
                log.warning("ignoring a watch event of type %r for %s", type_, kind.plural)
                continue
            if selecting:
                assert selector is not None
                key = _sort_key(obj)
                if type_ != "DELETED" and not selector.matches(_meta(obj).get("labels") or {}):
                    # It stopped matching (a server that filters says DELETED itself). After a
                    # resume the caller may hold it from before, so say it once then too.
                    if key in present or (resumed and key not in departed):
                        present.discard(key)
                        departed.add(key)
                        yield {"type": "DELETED", "object": obj}
                    continue
                if type_ == "DELETED":
                    present.discard(key)
                    departed.add(key)
                else:
                    present.add(key)
                    departed.discard(key)
            yield {"type": type_, "object": obj}

    # -- writing ----------------------------------------------------------------------------------

    async def create(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        meta = _meta(obj)
        name, namespace = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str) or not name:
            raise errors.Invalid(
                f"{kind.kind}: metadata.name is required",
                kind=kind.kind,
                causes=(errors.FieldError("metadata.name", "required", "FieldValueRequired"),),
            )
        self._check_namespace(kind, namespace, required=True)
        body = {
            **obj,
            "apiVersion": kind.api_version,
            "kind": kind.kind,
            "metadata": {k: v for k, v in meta.items() if k not in SERVER_METADATA},
        }
        path = resource_path(resource_of(kind), namespace=namespace)
        return self._seen(
            _typed(kind, await self._api.request("POST", path, verb="create", body=body))
        )

    async def replace(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        def desired(current: dict[str, Any]) -> dict[str, Any]:
            want = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
            have = {k: v for k, v in current.items() if k not in ("apiVersion", "kind", "status")}
            have_meta = _meta(current)
            want_meta = _meta(obj)
            have["metadata"] = {k: have_meta[k] for k in USER_METADATA if k in have_meta}
            want["metadata"] = {k: want_meta[k] for k in USER_METADATA if k in want_meta}
            return merge_patch(have, want)

        return await self._patch(kind, obj, subresource=None, patch_of=desired)

    async def replace_status(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        if not kind.status_subresource:
            raise errors.MethodNotAllowed(f"{kind.kind} has no status subresource", kind=kind.kind)

        def desired(current: dict[str, Any]) -> dict[str, Any]:
            return merge_patch(
                {"status": current.get("status") or {}}, {"status": obj.get("status") or {}}
            )

        return await self._patch(kind, obj, subresource="status", patch_of=desired)

    async def delete(
        self,
        kind: KindInfo,
        namespace: str | None,
        name: str,
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        path = self._object_path(kind, namespace, name)
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        result = await self._api.request("DELETE", path, verb="delete", body=options)
        if result.get("kind") == "Status":
            # Removed at once and answered with a Status instead of the last state (some servers
            # do for some kinds): say what is known of it.
            details = result.get("details") or {}
            meta: dict[str, Any] = {"name": name}
            if kind.namespaced:
                meta["namespace"] = namespace
            if details.get("uid"):
                meta["uid"] = details["uid"]
            return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta}
        return self._seen(_typed(kind, result))

    # -- helpers ----------------------------------------------------------------------------------

    async def _patch(
        self,
        kind: KindInfo,
        obj: dict[str, Any],
        *,
        subresource: str | None,
        patch_of: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        meta = _meta(obj)
        name, namespace = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str) or not name:
            raise errors.BadRequest(f"{kind.kind}: metadata.name is required")
        expected = meta.get("resourceVersion") or None
        path = self._object_path(kind, namespace, name, subresource=subresource)
        for _ in range(REPLACE_ATTEMPTS):
            current = await self.get(kind, namespace, name)
            stored = _meta(current).get("resourceVersion")
            if expected is not None and stored != expected:
                raise errors.Conflict(
                    f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    kind=kind.kind,
                    name=name,
                )
            patch: dict[str, Any] = patch_of(current)
            if stored:
                # The server's optimistic-concurrency check: refused if no longer current.
                patch.setdefault("metadata", {})["resourceVersion"] = stored
            try:
                result = await self._api.request(
                    "PATCH", path, verb="patch", body=patch, content_type=MERGE_PATCH
                )
            except errors.Conflict:
                if expected is not None:
                    raise
                continue  # unconditional: someone wrote in between, so patch their version
            return self._seen(_typed(kind, result))
        raise errors.Conflict(
            f"{kind.kind} {name!r} kept changing: gave up after {REPLACE_ATTEMPTS} attempts",
            kind=kind.kind,
            name=name,
        )

    def _seen(self, obj: dict[str, Any]) -> dict[str, Any]:
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(version, str) and version:
            self._resource_version = version
        return obj

    def _object_path(
        self, kind: KindInfo, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> str:
        if not name:
            raise errors.BadRequest(f"{kind.kind}: a name is required")
        self._check_namespace(kind, namespace, required=True)
        return resource_path(
            resource_of(kind), namespace=namespace, name=name, subresource=subresource
        )

    def _collection_namespace(self, kind: KindInfo, namespace: str | None) -> str | None:
        self._check_namespace(kind, namespace, required=False)
        if kind.namespaced and namespace is None:
            return self._scope
        return namespace

    def _check_namespace(self, kind: KindInfo, namespace: object, *, required: bool) -> None:
        if not kind.namespaced:
            if namespace is not None:
                raise errors.BadRequest(
                    f"{kind.kind} is cluster-scoped: it has no namespace (got {namespace!r})"
                )
            return
        if namespace is None:
            if required:
                raise errors.BadRequest(f"{kind.kind} is namespaced: a namespace is required")
            return
        if not isinstance(namespace, str) or not namespace:
            raise errors.BadRequest(f"{kind.kind}: invalid namespace {namespace!r}")
        if self._scope is not None and namespace != self._scope:
            raise errors.Forbidden(
                f"this store is confined to the namespace {self._scope!r}, not {namespace!r}",
                kind=kind.kind,
            )
