"""The Kubernetes object envelope: metadata, owner references, conditions, names.

Field names follow Kubernetes (camelCase on the wire, snake_case in Python).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from aviator.api.names import (
    API_GROUP,
    API_VERSION,
    GROUP_VERSION,
    dns1123_label_problem,
    dns1123_subdomain_problem,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "Condition",
    "ConditionStatus",
    "Model",
    "ObjectMeta",
    "OwnerReference",
    "dns1123_label_problem",
    "dns1123_subdomain_problem",
    "find_condition",
    "format_time",
    "now_utc",
    "set_condition",
]

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _check_label_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (problem := dns1123_subdomain_problem(prefix)):
        return f"prefix {prefix!r}: {problem}"
    if not name or len(name) > 63 or not _LABEL_VALUE.match(name):
        return (
            "name part must be 1-63 alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def _valid_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if problem := _check_label_key(key):
            raise ValueError(f"invalid label key {key!r}: {problem}")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(
                f"invalid label value {value!r} for {key!r}: must be at most 63 alphanumeric "
                "characters, '-', '_' or '.', starting and ending with an alphanumeric character"
            )
    return labels


def _valid_annotation_keys(annotations: dict[str, str]) -> dict[str, str]:
    for key in annotations:
        if problem := _check_label_key(key):
            raise ValueError(f"invalid annotation key {key!r}: {problem}")
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        raise ValueError("annotations must total at most 256 KiB")
    return annotations


class Model(BaseModel):
    """Base for every wire model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )


def now_utc() -> datetime:
    """The one sanctioned wall clock for timestamps written into objects (second precision, as k8s)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the way Kubernetes writes timestamps."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class OwnerReference(Model):
    """The object this one belongs to; deleting the owner deletes it (garbage collection)."""

    api_version: str
    kind: str
    name: str
    uid: str
    """The owner's uid: a re-created owner of the same name does not adopt old dependents."""
    controller: bool | None = None
    """True for the one owner that manages this object."""
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """Kubernetes object metadata. Server-owned fields are ignored on writes."""

    name: str = Field(default="", max_length=253)
    """DNS-1123 name, unique per kind and namespace."""
    namespace: str | None = None
    """Namespace (namespaced kinds); taken from the request path."""
    uid: str | None = None
    """Server-owned: unique for the object's lifetime."""
    resource_version: str | None = None
    """Server-owned: changes on every write; send it back to make an update conditional."""
    generation: int | None = None
    """Server-owned: increases when ``spec`` changes (status writes do not count)."""
    labels: Annotated[dict[str, str], AfterValidator(_valid_labels)] = Field(default_factory=dict)
    """Identifying key/value pairs for selection (``-l``)."""
    annotations: Annotated[dict[str, str], AfterValidator(_valid_annotation_keys)] = Field(
        default_factory=dict
    )
    """Non-identifying metadata, 256 KiB in all."""
    creation_timestamp: datetime | None = None
    """Server-owned."""
    deletion_timestamp: datetime | None = None
    """Server-owned: set when deletion was requested while finalizers remain."""
    finalizers: list[str] = Field(default_factory=list)
    """Cleanup that must finish before the object goes away."""
    owner_references: list[OwnerReference] = Field(default_factory=list)
    """Owners; the object is deleted when its owner is."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A Kubernetes-style condition (``metav1.Condition``)."""

    type: str
    """E.g. ``Available``, ``Progressing``, ``Degraded``, ``Ready``."""
    status: ConditionStatus
    reason: str = ""
    """CamelCase, machine-readable cause of the last transition."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: datetime | None = None
    """When ``status`` last changed (not when the condition was last written)."""
    observed_generation: int | None = None
    """The object's generation this condition was computed for."""


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type`` set; lastTransitionTime moves only when status changes."""
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type:
            out.append(cond)
            continue
        found = True
        changed = cond.status != status
        out.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now if changed else (cond.last_transition_time or now),
                observed_generation=observed_generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=observed_generation,
            )
        )
    return out


def find_condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)
