"""The registry of kinds: names, scope, short names, printer columns and the typed model of each.

It is a constant table (never mutated at run time); the Control API routes from it, the CLI resolves
``md`` or ``modeldeployments`` through it, and schema generation walks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aviator.api.agent import Agent
from aviator.api.devices import DeviceClass, Node
from aviator.api.errors import NotFound
from aviator.api.grant import Grant
from aviator.api.meta import API_GROUP, GROUP_VERSION
from aviator.api.modeldeployment import ModelDeployment
from aviator.api.policy import Policy
from aviator.api.replica import Replica
from aviator.api.resource import Resource


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """A column of ``aviator get`` (the CRD ``additionalPrinterColumns`` shape)."""

    name: str
    json_path: str
    """Dotted path into the object, e.g. ``.status.readyReplicas``."""
    type: str = "string"
    priority: int = 0
    """0: always shown; 1: only with ``-o wide`` (as in Kubernetes)."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    model: type[Resource[Any, Any]]
    columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = ("aviator",)
    name_is_label: bool = False
    """Names must be DNS-1123 labels (63 chars), not just subdomains — e.g. because the cluster
    home turns them into Service names."""
    status_subresource: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return GROUP_VERSION

    @property
    def group(self) -> str:
        return API_GROUP

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


MODEL_DEPLOYMENT = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=("md", "mds"),
    namespaced=True,
    model=ModelDeployment,
    name_is_label=True,
    columns=(
        PrinterColumn("Model", ".spec.model.name"),
        PrinterColumn("Engine", ".spec.engine"),
        PrinterColumn("Ready", ".status.readyReplicas", "integer"),
        PrinterColumn("Desired", ".status.desiredReplicas", "integer"),
        PrinterColumn("Available", ".status.conditions[?(@.type=='Available')].status"),
        PrinterColumn("Priority", ".spec.priority", priority=1),
        PrinterColumn("Endpoints", ".status.endpoints[*].url", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

REPLICA = KindInfo(
    kind="Replica",
    plural="replicas",
    singular="replica",
    short_names=("rep", "reps"),
    namespaced=True,
    model=Replica,
    columns=(
        PrinterColumn("Model", ".spec.model.name"),
        PrinterColumn("Engine", ".spec.engine"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Ready", ".status.conditions[?(@.type=='Ready')].status"),
        PrinterColumn("Restarts", ".status.restarts", "integer"),
        PrinterColumn("Endpoint", ".status.endpoint"),
        PrinterColumn("Node", ".spec.node", priority=1),
        PrinterColumn("PID", ".status.pid", "integer", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

NODE = KindInfo(
    kind="Node",
    plural="nodes",
    singular="node",
    short_names=("no",),
    namespaced=False,
    model=Node,
    columns=(
        PrinterColumn("Region", ".spec.region"),
        PrinterColumn("Zone", ".spec.zone"),
        PrinterColumn("Drivers", ".spec.devices[*].driver", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

DEVICE_CLASS = KindInfo(
    kind="DeviceClass",
    plural="deviceclasses",
    singular="deviceclass",
    short_names=("dc",),
    namespaced=False,
    model=DeviceClass,
    columns=(
        PrinterColumn("Selectors", ".spec.selectors[*].cel.expression", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

AGENT = KindInfo(
    kind="Agent",
    plural="agents",
    singular="agent",
    short_names=("ag",),
    namespaced=True,
    model=Agent,
    columns=(
        PrinterColumn("Owner", ".spec.owner"),
        PrinterColumn("Purpose", ".spec.purpose"),
        PrinterColumn("Audiences", ".spec.audiences[*]", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

POLICY = KindInfo(
    kind="Policy",
    plural="policies",
    singular="policy",
    short_names=("pol",),
    namespaced=False,
    model=Policy,
    columns=(
        PrinterColumn("Description", ".spec.description"),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

GRANT = KindInfo(
    kind="Grant",
    plural="grants",
    singular="grant",
    short_names=("gr",),
    namespaced=True,
    model=Grant,
    columns=(
        PrinterColumn("Agent", ".spec.agent"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Expires", ".status.expiresAt"),
        PrinterColumn("Purpose", ".spec.purpose"),
        PrinterColumn("Actions", ".spec.actions[*]", priority=1),
        PrinterColumn("Resources", ".spec.resources[*]", priority=1),
        PrinterColumn("Decided-By", ".status.decidedBy", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)

KINDS: MappingProxyType[str, KindInfo] = MappingProxyType(
    {
        info.kind: info
        for info in (MODEL_DEPLOYMENT, REPLICA, NODE, DEVICE_CLASS, AGENT, POLICY, GRANT)
    }
)
"""Every kind by its ``kind`` name."""


def by_plural(plural: str) -> KindInfo:
    for info in KINDS.values():
        if info.plural == plural:
            return info
    raise NotFound(f"the server could not find the requested resource type {plural!r}")


def resolve(name: str) -> KindInfo:
    """Find a kind by kind, plural, singular or short name, case-insensitively (like kubectl)."""
    wanted = name.lower()
    for info in KINDS.values():
        if wanted in (info.kind.lower(), info.plural, info.singular, *info.short_names):
            return info
    known = ", ".join(sorted(f"{i.plural} ({', '.join(i.short_names)})" for i in KINDS.values()))
    raise NotFound(f"unknown resource type {name!r}; known types: {known}")
