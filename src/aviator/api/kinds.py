"""The registry of kinds: names, scope, short names, printer columns and the typed model of each.

It is a constant table (never mutated at run time); the Control API routes from it, the CLI resolves
``md`` or ``modeldeployments`` through it, and schema generation walks it.

Importing it imports no model (nor pydantic): each kind names its model by ``model_ref``
(``module:Class``) and ``KindInfo.model`` imports that module on first use (``sys.modules`` keeps
it). So a command that only names objects (``aviator get``, ``delete``, ``describe``) never pays
for the models; admission, schema generation and typed reads get the class as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aviator.api.errors import NotFound
from aviator.api.names import API_GROUP, GROUP_VERSION

if TYPE_CHECKING:
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


def _import_model(ref: str) -> type[Resource[Any, Any]]:
    module, _, name = ref.partition(":")
    # __import__ rather than importlib.import_module: the same import (sys.modules caches it),
    # but one that `python -X importtime` reports, so the models' cost stays visible in profiles.
    model: type[Resource[Any, Any]] = getattr(__import__(module, fromlist=[name]), name)
    return model


@dataclass(frozen=True, slots=True)
class KindInfo:
    """One kind; its typed model is named by ``model_ref`` and imported on first use of
    ``model``."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    model_ref: str
    """Where the typed model is, ``module:Class``."""
    columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = ("aviator",)
    name_is_label: bool = False
    """Names must be DNS-1123 labels (63 chars), not just subdomains — e.g. because the cluster
    home turns them into Service names."""
    status_subresource: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, colon, name = self.model_ref.partition(":")
        if not (module and colon and name) or ":" in name:
            raise ValueError(
                f"KindInfo {self.kind!r}: model_ref must be 'module:Class', not {self.model_ref!r}"
            )

    @property
    def model(self) -> type[Resource[Any, Any]]:
        """The typed model (its module is imported on the first call)."""
        return _import_model(self.model_ref)

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
    model_ref="aviator.api.modeldeployment:ModelDeployment",
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
    model_ref="aviator.api.replica:Replica",
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
    model_ref="aviator.api.devices:Node",
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
    model_ref="aviator.api.devices:DeviceClass",
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
    model_ref="aviator.api.agent:Agent",
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
    model_ref="aviator.api.policy:Policy",
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
    model_ref="aviator.api.grant:Grant",
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
