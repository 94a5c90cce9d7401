"""The Kubernetes resource types the operator reads and writes, and their REST paths.

A static table, not API discovery: the operator only ever touches the kinds
:func:`aviator.k8s.render.render` produces, its own CR, the EndpointSlices and Deployment status
it reports, and its leader-election Lease; knowing them up front keeps every path explicit and
matches the RBAC :mod:`aviator.k8s.install` grants. Paths are spelled by
:func:`aviator.kube.api.resource_path`, as for every other caller of the Kubernetes client.

:data:`OPERATOR_ACCESS` and :data:`LEADER_ELECTION_ACCESS` say, as (apiGroup, resource, verbs),
every request the operator makes (its own and kopf's), so the install bundle's RBAC can be derived
from them and checked against them.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from aviator.api.kinds import GRANT, MODEL_DEPLOYMENT
from aviator.api.meta import GROUP_VERSION
from aviator.kube.api import Resource, resource_path

__all__ = [
    "DEPLOYMENTS",
    "ENDPOINT_SLICES",
    "INFERENCE_POOLS",
    "LEADER_ELECTION_ACCESS",
    "LEASES",
    "MANAGED",
    "MODEL_DEPLOYMENTS",
    "OPERATOR_ACCESS",
    "Access",
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

INFERENCE_POOLS = ResourceType("inference.networking.k8s.io/v1", "InferencePool", "inferencepools")
"""Optional: only clusters with the Gateway API Inference Extension CRDs serve it."""

MANAGED: tuple[ResourceType, ...] = (
    ResourceType("resource.k8s.io/v1", "ResourceClaimTemplate", "resourceclaimtemplates"),
    DEPLOYMENTS,
    ResourceType("v1", "Service", "services"),
    INFERENCE_POOLS,
    ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
)
"""Every kind the renderer produces, in apply order (deletion goes the other way)."""


class Access(NamedTuple):
    """One RBAC rule's worth of access: verbs on one resource (or subresource) of one group."""

    api_group: str
    """``""`` for the core group."""
    resource: str
    """Plural, or ``plural/subresource``."""
    verbs: tuple[str, ...]


_GROUP = MODEL_DEPLOYMENTS.group

OPERATOR_ACCESS: tuple[Access, ...] = (
    # kopf watches the CRs and patches their finalizers and its progress annotations; the
    # reconciler reads them and writes their status.
    Access(_GROUP, MODEL_DEPLOYMENTS.plural, ("get", "list", "watch", "patch")),
    Access(_GROUP, f"{MODEL_DEPLOYMENTS.plural}/status", ("patch",)),
    # No request: the API server's OwnerReferencesPermissionEnforcement lets only who may update
    # the owner's finalizers set blockOwnerDeletion, which every rendered object carries.
    Access(_GROUP, f"{MODEL_DEPLOYMENTS.plural}/finalizers", ("update",)),
    # The Grant expiry controller (the embedded plane's, over KubeStore): a reflector lists and
    # watches, the status write reads the object it merges against.
    Access(_GROUP, GRANT.plural, ("get", "list", "watch")),
    Access(_GROUP, f"{GRANT.plural}/status", ("patch",)),
    # What the renderer produces: server-side apply (patch), create when new, list to prune,
    # delete; the Deployment is also read (replica count) and watched (status).
    Access(
        DEPLOYMENTS.group, DEPLOYMENTS.plural, ("get", "list", "watch", "create", "patch", "delete")
    ),
    *(
        Access(t.group, t.plural, ("list", "create", "patch", "delete"))
        for t in MANAGED
        if t is not DEPLOYMENTS
    ),
    # Status (endpoints) and capacity planning (the DRA fleet).
    Access(ENDPOINT_SLICES.group, ENDPOINT_SLICES.plural, ("list", "watch")),
    Access("resource.k8s.io", "resourceslices", ("list",)),
    Access("resource.k8s.io", "deviceclasses", ("list",)),
    Access("resource.k8s.io", "resourceclaims", ("list",)),
    # kopf: it rescans resources when CRDs change, observes namespaces, and posts Events.
    Access("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    Access("", "namespaces", ("list", "watch")),
    Access("", "events", ("create",)),
)
"""Everything the operator asks of the API server, cluster-wide (a ClusterRole). API discovery
(``/api``, ``/apis``) needs no grant."""

LEADER_ELECTION_ACCESS: tuple[Access, ...] = (
    Access(LEASES.group, LEASES.plural, ("get", "create", "patch")),
)
"""The leader-election Lease, in the operator's own namespace only (a Role)."""

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
