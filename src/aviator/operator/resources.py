"""The Kubernetes resource types the operator reads and writes, and their REST paths.

A static table, not API discovery: the operator only ever touches the kinds
:func:`aviator.k8s.render.render` produces, its own CR, the EndpointSlices and Deployment status
it reports, and its leader-election Lease; knowing them up front keeps every path explicit and
matches the RBAC :mod:`aviator.k8s.install` grants. Paths are spelled by
:func:`aviator.kube.api.resource_path`, as for every other caller of the Kubernetes client.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aviator.api.kinds import MODEL_DEPLOYMENT
from aviator.api.meta import GROUP_VERSION
from aviator.kube.api import Resource, resource_path

__all__ = [
    "DEPLOYMENTS",
    "ENDPOINT_SLICES",
    "LEASES",
    "MANAGED",
    "MODEL_DEPLOYMENTS",
    "ObjectRef",
    "ResourceType",
    "UnknownKind",
    "ref_of",
    "resource_type",
]


class UnknownKind(KeyError):
    """An object of a kind the operator does not manage."""


@dataclass(frozen=True, slots=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> Resource:
        """The same type as the Kubernetes client names it."""
        return Resource(self.group, self.version, self.plural, self.namespaced, self.kind)

    def path(self, *, namespace: str | None, name: str | None = None, sub: str = "") -> str:
        """The REST path of the collection (``name`` None) or of one object (or subresource)."""
        return resource_path(self.resource, namespace=namespace, name=name, subresource=sub or None)


MODEL_DEPLOYMENTS = ResourceType(GROUP_VERSION, MODEL_DEPLOYMENT.kind, MODEL_DEPLOYMENT.plural)
DEPLOYMENTS = ResourceType("apps/v1", "Deployment", "deployments")
ENDPOINT_SLICES = ResourceType("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
LEASES = ResourceType("coordination.k8s.io/v1", "Lease", "leases")

MANAGED: tuple[ResourceType, ...] = (
    ResourceType("resource.k8s.io/v1", "ResourceClaimTemplate", "resourceclaimtemplates"),
    DEPLOYMENTS,
    ResourceType("v1", "Service", "services"),
    ResourceType("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
    ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
)
"""Every kind the renderer produces, in apply order (deletion goes the other way)."""

_BY_KIND: Mapping[tuple[str, str], ResourceType] = MappingProxyType(
    {(t.api_version, t.kind): t for t in (*MANAGED, MODEL_DEPLOYMENTS, ENDPOINT_SLICES, LEASES)}
)


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise UnknownKind(f"{kind} ({api_version}) is not a kind the operator manages") from None


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """One object: its type, namespace and name."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @property
    def type(self) -> ResourceType:
        return resource_type(self.api_version, self.kind)

    def path(self, sub: str = "") -> str:
        return self.type.path(namespace=self.namespace, name=self.name, sub=sub)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()}/{where}{self.name}"


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(
        api_version=str(obj.get("apiVersion", "")),
        kind=str(obj.get("kind", "")),
        namespace=meta.get("namespace"),
        name=str(meta.get("name", "")),
    )
