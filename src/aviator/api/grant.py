"""``Grant``: an agent's just-in-time request for rights — actions on resources, for a purpose, for
a while.

An agent declares intent by creating a Grant. Policy decides it (``aviator.policy.grants``):
approved automatically (``Active``), left for a human (``Pending``), or ``Denied``. An ``Active``
grant expires by itself ``durationSeconds`` after approval and can be ``Revoked`` earlier.

Resources are Cedar entity references. Two spellings are accepted and stored canonically:

- ``Type::"id"`` — e.g. ``ModelDeployment::"team-a/chat"``, ``Namespace::"team-a"``,
  ``Node::"gpu-1"``. Namespaced types (ModelDeployment, Replica, Agent) take ``namespace/name``.
- ``KIND/NAME`` — a short form with any kind name or short name (``md/chat``,
  ``modeldeployment/chat``, ``ns/team-a``, ``node/gpu-1``); a namespaced NAME is in the Grant's own
  namespace. ``md/chat`` in namespace ``team-a`` is stored as ``ModelDeployment::"team-a/chat"``.

A ``Namespace`` reference stands for everything in that namespace.

Pure: phases are computed from ``now`` the caller passes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, Field, field_validator, model_validator

from aviator.api.meta import Model, dns1123_label_problem, dns1123_subdomain_problem
from aviator.api.resource import Resource, Status

GrantPhase = Literal["Pending", "Active", "Denied", "Expired", "Revoked"]
GrantAction = Literal["infer", "embed", "create", "update", "delete"]
"""Actions a grant can carry. ``requestGrant`` and ``approve`` are never grantable: rights to
decide grants come from standing policy only."""

MAX_GRANT_SECONDS = 24 * 3600
"""Longest grant: a day. Just-in-time rights are meant to be short; renew by asking again."""
MIN_GRANT_SECONDS = 60

RESOURCE_TYPES: Mapping[str, bool] = {
    "ModelDeployment": True,
    "Replica": True,
    "Agent": True,
    "Namespace": False,
    "Node": False,
    "DeviceClass": False,
    "Policy": False,
}
"""Entity types a grant may name, and whether their ids are ``namespace/name``."""

REF_ALIASES: Mapping[str, str] = {
    **{alias: "ModelDeployment" for alias in ("md", "mds", "modeldeployment", "modeldeployments")},
    **{alias: "Replica" for alias in ("rep", "reps", "replica", "replicas")},
    **{alias: "Agent" for alias in ("ag", "agent", "agents")},
    **{alias: "Namespace" for alias in ("ns", "namespace", "namespaces")},
    **{alias: "Node" for alias in ("no", "node", "nodes")},
    **{alias: "DeviceClass" for alias in ("dc", "deviceclass", "deviceclasses")},
    **{alias: "Policy" for alias in ("pol", "policy", "policies")},
}
"""Kind names of the short form (``md/chat``), lower case; kept equal to the kinds registry's names
by a test (the api's modules cannot import the registry that imports them)."""

_CANONICAL = re.compile(r'^(?P<type>[A-Za-z]+)::"(?P<id>[^"\\]*)"$')


def parse_ref(text: str, *, namespace: str | None) -> tuple[str, str]:
    """``(type, id)`` of a resource reference in either spelling; ``ValueError`` says what is wrong.

    ``namespace`` resolves a short-form namespaced name; without it, such a reference is refused.
    """
    if match := _CANONICAL.match(text):
        entity_type, entity_id = match["type"], match["id"]
        if entity_type not in RESOURCE_TYPES:
            raise ValueError(
                f"unknown entity type {entity_type!r}; expected one of "
                f"{', '.join(sorted(RESOURCE_TYPES))}"
            )
    else:
        alias, sep, name = text.partition("/")
        entity_type = REF_ALIASES.get(alias.lower(), "")
        if not sep or not entity_type:
            raise ValueError(
                f'expected an entity reference like ModelDeployment::"team-a/chat" or a short form '
                f"KIND/NAME like md/chat (got {text!r})"
            )
        if RESOURCE_TYPES[entity_type]:
            if namespace is None:
                raise ValueError(f"{text!r}: a short-form reference needs the Grant's namespace")
            entity_id = f"{namespace}/{name}"
        else:
            entity_id = name
    _check_id(entity_type, entity_id)
    return entity_type, entity_id


def _check_id(entity_type: str, entity_id: str) -> None:
    if RESOURCE_TYPES[entity_type]:
        ns, sep, name = entity_id.partition("/")
        if not sep:
            raise ValueError(f"{entity_type} ids are namespace/name (got {entity_id!r})")
        if problem := dns1123_label_problem(ns):
            raise ValueError(f"namespace {ns!r} of {entity_type}: {problem}")
    else:
        name = entity_id
    problem = (
        dns1123_label_problem(name)
        if entity_type == "Namespace"
        else dns1123_subdomain_problem(name)
    )
    if problem:
        raise ValueError(f"name {name!r} of {entity_type}: {problem}")


def canonical_ref(text: str, *, namespace: str | None) -> str:
    """The stored spelling, ``Type::"id"``, of a reference in either spelling."""
    entity_type, entity_id = parse_ref(text, namespace=namespace)
    return f'{entity_type}::"{entity_id}"'


def _well_formed_ref(text: str) -> str:
    # The Grant-level validator resolves short forms once the namespace is known; here only the
    # shape is checked, with a placeholder namespace, so the error lands on spec.resources[i].
    parse_ref(text, namespace="placeholder")
    return text


def _agent_name(value: str) -> str:
    if problem := dns1123_subdomain_problem(value):
        raise ValueError(problem)
    return value


class GrantSpec(Model):
    """What an agent asks for, and why."""

    agent: Annotated[str, AfterValidator(_agent_name)] = Field(
        description="The Agent that receives the rights, in the Grant's namespace."
    )
    actions: list[GrantAction] = Field(
        min_length=1, max_length=5, description="Actions granted on every resource below."
    )
    resources: list[Annotated[str, AfterValidator(_well_formed_ref)]] = Field(
        min_length=1,
        max_length=64,
        description='Entity references: `ModelDeployment::"team-a/chat"`, or a short form '
        "`md/chat` (stored canonically); `ns/team-a` is everything in the namespace.",
    )
    purpose: str = Field(
        min_length=1,
        max_length=512,
        description="Why: the declared intent, shown to approvers and matched against a request's "
        "`x-aviator-intent`.",
    )
    duration_seconds: int = Field(
        default=900,
        ge=MIN_GRANT_SECONDS,
        le=MAX_GRANT_SECONDS,
        description="How long the grant lasts once approved: 60 s to 24 h.",
    )

    @field_validator("actions")
    @classmethod
    def _distinct_actions(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each action at most once")
        return value


class GrantStatus(Status):
    """The decision and the lifecycle. Written by the plane only."""

    phase: GrantPhase = "Pending"
    """``Pending`` (waiting for a human), ``Active``, ``Denied``, ``Expired`` (past ``expiresAt``)
    or ``Revoked``."""
    reason: str = ""
    """Why the grant is in this phase, e.g. the policies that decided or the approver's note."""
    requested_by: str = ""
    """The principal id that created the grant; it can never approve it."""
    decided_by: str = ""
    """``policy`` for an automatic decision, else the principal id that approved, denied or
    revoked."""
    decided_at: datetime | None = None
    expires_at: datetime | None = None
    """When an ``Active`` grant stops counting (approval time + ``durationSeconds``)."""
    policies: list[str] = Field(default_factory=list)
    """The Policy objects whose statements decided the request."""


class Grant(Resource[GrantSpec, GrantStatus]):
    KIND: ClassVar[str] = "Grant"
    kind: str = "Grant"
    status: GrantStatus = Field(default_factory=GrantStatus)

    @model_validator(mode="after")
    def _canonical_resources(self) -> Grant:
        namespace = self.metadata.namespace
        if namespace:
            # Two spellings of one resource collapse into one entry.
            resources = [canonical_ref(r, namespace=namespace) for r in self.spec.resources]
            self.spec.resources = list(dict.fromkeys(resources))
        return self


def expires_at(approved_at: datetime, duration_seconds: int) -> datetime:
    """When a grant approved at ``approved_at`` for ``duration_seconds`` expires."""
    return approved_at + timedelta(seconds=duration_seconds)


def phase_at(grant: Grant | Mapping[str, Any], now: datetime) -> GrantPhase:
    """The phase of ``grant`` at ``now``: an ``Active`` grant is ``Expired`` from ``expiresAt`` on
    (and an ``Active`` grant without ``expiresAt`` counts as expired: it cannot be trusted)."""
    phase: GrantPhase
    if isinstance(grant, Grant):
        phase = grant.status.phase
    else:
        raw_phase = (grant.get("status") or {}).get("phase")
        phase = next((p for p in get_args(GrantPhase) if p == raw_phase), "Pending")
    if phase == "Active":
        until = expiry_of(grant)
        if until is None or now >= until:
            return "Expired"
    return phase


def expiry_of(grant: Grant | Mapping[str, Any]) -> datetime | None:
    """``status.expiresAt`` of a Grant model or wire dict, None when absent or unreadable."""
    if isinstance(grant, Grant):
        return grant.status.expires_at
    raw = (grant.get("status") or {}).get("expiresAt")
    return _parse_time(raw) if raw else None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
