"""The operator's object-level verbs (get, list, create, server-side apply, merge patch, status
patch, delete) by :class:`aviator.operator.resources.ObjectRef`, over the one Kubernetes client.

Every request goes through :meth:`aviator.kube.api.KubeApi.request`, so the transport, the
credentials and the error translation are the gateway's too: failures arrive as
``aviator.api.errors`` exceptions (``NotFound``, ``AlreadyExists`` for a create whose name is
taken, ``Conflict`` for a stale ``resourceVersion``, ``ServiceUnavailable`` when the server
cannot be reached). This module only maps objects to paths, verbs and content types; objects stay
the plain dicts the pure planners read and write.

Two different 404s: "this object does not exist" (normal: ``get`` answers None, ``delete``
False, an ``apply`` of a new object ``NotFound`` so the caller creates it) and "the cluster does
not serve this resource type" (its CRD is not installed, e.g. no Gateway API Inference Extension
for InferencePools). A collection request (``list``, ``create``) that answers 404 is checked
against API discovery (:meth:`ObjectApi.served`) and raised as :class:`NotServed` when the type
is not served, so callers can tell an optional kind that is absent from a real failure.

It MUST NOT log request or response bodies: they may carry data from the cluster's Secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from aviator.api import errors
from aviator.kube.api import APPLY_PATCH, MERGE_PATCH, KubeApi
from aviator.operator.resources import ObjectRef, ResourceType, ref_of

__all__ = ["NotServed", "ObjectApi"]


class NotServed(errors.NotFound):
    """The API server does not serve the resource type (its CRD is not installed)."""

    def __init__(self, rtype: ResourceType) -> None:
        super().__init__(
            f"the cluster does not serve {rtype.api_version} {rtype.plural}", kind=rtype.kind
        )
        self.rtype = rtype


_DELETE_IN_BACKGROUND: Mapping[str, str] = MappingProxyType(
    {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
)


class ObjectApi:
    """Object-level requests through ``kube``; the caller owns (and closes) ``kube``."""

    def __init__(self, *, kube: KubeApi) -> None:
        self._kube = kube

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._kube.request("GET", ref.path(), verb="get")
        except errors.NotFound:
            return None

    async def list(
        self,
        rtype: ResourceType,
        *,
        namespace: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of ``rtype`` in ``namespace`` (all when None) carrying ``labels``.

        The label selector is also checked here: an emulator, or an older server, may ignore
        it, and what the operator prunes must match it for certain."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else {}
        try:
            data = await self._kube.request(
                "GET", rtype.path(namespace=namespace), verb="list", query=query
            )
        except errors.NotFound as exc:
            raise await self._not_served_or(rtype, exc) from None
        out: list[dict[str, Any]] = []
        for raw in data.get("items") or []:
            if not isinstance(raw, dict):
                continue
            # List items omit apiVersion and kind: restore them so refs are complete.
            item = {"apiVersion": rtype.api_version, "kind": rtype.kind, **raw}
            have = (item.get("metadata") or {}).get("labels") or {}
            if all(have.get(k) == v for k, v in (labels or {}).items()):
                out.append(item)
        return out

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj``; ``AlreadyExists`` when its name is taken, :class:`NotServed` when the
        cluster does not serve its kind."""
        ref = ref_of(obj)
        try:
            return await self._kube.request(
                "POST", ref.type.path(namespace=ref.namespace), verb="create", body=obj
            )
        except errors.NotFound as exc:
            raise await self._not_served_or(ref.type, exc) from None

    async def served(self, rtype: ResourceType) -> bool:
        """Whether the API server serves ``rtype``, by API discovery of its group version."""
        root = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
        try:
            listing = await self._kube.request("GET", root, verb="get")
        except errors.NotFound:
            return False  # the whole group version is absent (no CRD of it installed)
        return any(
            isinstance(r, Mapping) and r.get("name") == rtype.plural
            for r in listing.get("resources") or ()
        )

    async def _not_served_or(self, rtype: ResourceType, exc: errors.NotFound) -> errors.NotFound:
        """What a 404 of a collection request means: :class:`NotServed` when discovery agrees,
        else ``exc`` itself (e.g. a create in a namespace that does not exist)."""
        return exc if await self.served(rtype) else NotServed(rtype)

    async def apply(
        self, obj: Mapping[str, Any], *, field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply: ``obj`` is the complete intent of ``field_manager``."""
        query = {"fieldManager": field_manager}
        if force:
            query["force"] = "true"
        return await self._kube.request(
            "PATCH",
            ref_of(obj).path(),
            verb="apply",
            query=query,
            body=obj,
            content_type=APPLY_PATCH,
        )

    async def patch(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of ``obj`` onto the live object (``null`` removes a field). When
        ``obj`` carries ``metadata.resourceVersion`` the API server applies it only to that
        version (``Conflict`` otherwise): an update conditional on what was read."""
        return await self._kube.request(
            "PATCH", ref_of(obj).path(), verb="patch", body=obj, content_type=MERGE_PATCH
        )

    async def patch_status(
        self, ref: ObjectRef, status: Mapping[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        """Merge ``status`` into the status subresource."""
        return await self._kube.request(
            "PATCH",
            ref.path("status"),
            verb="patch",
            query={"fieldManager": field_manager},
            body={"status": dict(status)},
            content_type=MERGE_PATCH,
        )

    async def delete(self, ref: ObjectRef) -> bool:
        """Delete in the background (the garbage collector removes dependents such as a
        Deployment's ReplicaSets and Pods): True when it existed."""
        try:
            await self._kube.request(
                "DELETE", ref.path(), verb="delete", body=_DELETE_IN_BACKGROUND
            )
        except errors.NotFound:
            return False
        return True
