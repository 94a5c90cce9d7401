"""Just-in-time grants: deciding a request, who may approve, and the lifecycle. Pure.

**Deciding a request.** A new Grant is evaluated as action ``requestGrant`` with the requester as
principal and the Grant (``entities.grant_entity``: agent, actions, resources, kinds, namespaces,
purpose, durationSeconds) as resource:

- denied (a ``forbid`` holds, nothing permits, or no decision) → ``Denied``;
- permitted, and at least one permitting statement is annotated ``@approval("auto")`` → ``Active``
  at once, for ``durationSeconds``;
- permitted only by statements without that annotation (``@approval("human")`` says so
  explicitly) → ``Pending``: a human decides.

A forbid always wins, so a policy can refuse outright what another would auto-approve. The admin
requesting a grant (for an agent) is approving it: ``Active``.

**Approving.** ``may_approve``: the requester and the agent that receives the rights can never
approve (or deny) the grant — a hard rule checked before any policy; the admin may; anyone else
only if policy permits ``approve`` on the Grant. ``may_revoke`` only takes rights away: the admin,
the agent and the requester always may, others as for approving.

**Lifecycle.** ``Pending`` → ``Active`` | ``Denied``; ``Active`` → ``Expired`` (by itself, at
``expiresAt``: ``phase_at``) | ``Revoked``; ``Pending`` → ``Revoked`` (withdrawn). The status
helpers below return the new status and refuse any other transition with ``Conflict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aviator.api import errors
from aviator.api.grant import GrantPhase, GrantStatus, expires_at, phase_at
from aviator.api.principal import Principal
from aviator.policy import entities as ent
from aviator.policy.engine import CompiledPolicies, Decision

__all__ = [
    "APPROVAL",
    "APPROVAL_VALUES",
    "AUTO",
    "HUMAN",
    "POLICY",
    "GrantVerdict",
    "approved_status",
    "decide_request",
    "denied_status",
    "expires_at",
    "may_approve",
    "may_revoke",
    "phase_at",
    "requested_status",
    "revoked_status",
]

APPROVAL = "approval"
"""The annotation that says how a permitted ``requestGrant`` is approved."""
AUTO = "auto"
"""``@approval("auto")``: a permit by this statement activates the grant at once."""
HUMAN = "human"
"""``@approval("human")`` (the same as no annotation): a permit leaves the grant ``Pending``."""
APPROVAL_VALUES = (AUTO, HUMAN)

POLICY = "policy"
"""``status.decidedBy`` of an automatic decision."""


@dataclass(frozen=True, slots=True)
class GrantVerdict:
    """What policy made of a Grant request."""

    phase: Literal["Active", "Pending", "Denied"]
    decision: Decision
    """The ``requestGrant`` decision behind it."""
    reason: str


def _parties(grant: Mapping[str, Any]) -> tuple[str, str]:
    """``(the agent it is for as namespace/name, the principal id that requested it)``."""
    meta = grant.get("metadata") or {}
    spec = grant.get("spec") or {}
    return f"{meta.get('namespace') or ''}/{spec.get('agent') or ''}", str(
        (grant.get("status") or {}).get("requestedBy") or ""
    )


def decide_request(
    compiled: CompiledPolicies, grant: Mapping[str, Any], *, requester: Principal
) -> GrantVerdict:
    """Decide a new Grant (a wire dict, as admitted) requested by ``requester``."""
    if requester.kind == "admin":
        decision = Decision(allowed=True, reason="the administrator is not subject to policy")
        return GrantVerdict("Active", decision, "requested by the administrator")
    try:
        resource = ent.grant_entity(grant)
    except ValueError as exc:
        decision = Decision(False, reason=f"no decision (counts as deny): {exc}", no_decision=True)
        return GrantVerdict("Denied", decision, decision.reason)
    decision = compiled.decide(requester, "requestGrant", resource)
    if not decision.allowed:
        return GrantVerdict("Denied", decision, decision.reason)
    auto = [s for s in decision.statements if compiled.annotations(s).get(APPROVAL) == AUTO]
    if auto:
        labels = ", ".join(compiled.statements[s].label for s in auto)
        return GrantVerdict("Active", decision, f"approved automatically by {labels}")
    return GrantVerdict("Pending", decision, f"{decision.reason}; waiting for a human to approve")


def _own_grant(approver: Principal, grant: Mapping[str, Any]) -> bool:
    beneficiary, requested_by = _parties(grant)
    if requested_by and approver.id == requested_by:
        return True
    return approver.kind == "agent" and approver.agent_key == beneficiary


def may_approve(
    compiled: CompiledPolicies, approver: Principal, grant: Mapping[str, Any]
) -> Decision:
    """May ``approver`` approve or deny ``grant``? Never its requester or its agent; always the
    admin; others when policy permits ``approve`` on it."""
    if _own_grant(approver, grant):
        return Decision(
            allowed=False,
            reason="the requester can never approve its own grant (nor the agent it is for)",
        )
    if approver.kind == "admin":
        return Decision(allowed=True, reason="the administrator may decide any grant")
    return compiled.decide(approver, "approve", ent.grant_entity(grant))


def may_revoke(
    compiled: CompiledPolicies, revoker: Principal, grant: Mapping[str, Any]
) -> Decision:
    """May ``revoker`` revoke ``grant``? Revoking only takes rights away, so the self-approval rule
    does not apply: the admin, the agent the grant is for and its requester (withdrawing its
    request) always may; anyone else when policy permits ``approve`` on the grant."""
    beneficiary, requested_by = _parties(grant)
    if revoker.kind == "admin":
        return Decision(allowed=True, reason="the administrator may revoke any grant")
    if revoker.kind == "agent" and revoker.agent_key == beneficiary:
        return Decision(allowed=True, reason="an agent may always give up its own grant")
    if requested_by and revoker.id == requested_by:
        return Decision(allowed=True, reason="a requester may always withdraw its own grant")
    return compiled.decide(revoker, "approve", ent.grant_entity(grant))


def _current(grant: Mapping[str, Any], now: datetime) -> tuple[GrantStatus, GrantPhase]:
    status = GrantStatus.model_validate(grant.get("status") or {})
    return status, phase_at(grant, now)


def _refuse(grant: Mapping[str, Any], phase: str, verb: str, allowed: str) -> errors.Conflict:
    name = (grant.get("metadata") or {}).get("name")
    return errors.Conflict(
        f"grant {name!r} is {phase}; only {allowed} grants can be {verb}", kind="Grant", name=name
    )


def requested_status(
    grant: Mapping[str, Any], verdict: GrantVerdict, *, requester: Principal, now: datetime
) -> GrantStatus:
    """The status to store with a freshly requested ``grant``, as ``verdict`` decided it."""
    active = verdict.phase == "Active"
    decided = verdict.phase != "Pending"
    duration_seconds = int((grant.get("spec") or {}).get("durationSeconds") or 0)
    return GrantStatus(
        phase=verdict.phase,
        reason=verdict.reason,
        requested_by=requester.id,
        decided_by=(requester.id if requester.kind == "admin" else POLICY) if decided else "",
        decided_at=now if decided else None,
        expires_at=expires_at(now, duration_seconds) if active else None,
        policies=list(verdict.decision.decided_by),
    )


def approved_status(
    grant: Mapping[str, Any], *, approver: Principal, now: datetime, reason: str = ""
) -> GrantStatus:
    """``Pending`` → ``Active`` for ``durationSeconds`` from ``now`` (check ``may_approve``
    first)."""
    status, phase = _current(grant, now)
    if phase != "Pending":
        raise _refuse(grant, phase, "approved", "Pending")
    duration = int((grant.get("spec") or {}).get("durationSeconds") or 0)
    return status.model_copy(
        update={
            "phase": "Active",
            "reason": reason or f"approved by {approver.id}",
            "decided_by": approver.id,
            "decided_at": now,
            "expires_at": expires_at(now, duration),
        }
    )


def denied_status(
    grant: Mapping[str, Any], *, approver: Principal, now: datetime, reason: str = ""
) -> GrantStatus:
    """``Pending`` → ``Denied`` (check ``may_approve`` first)."""
    status, phase = _current(grant, now)
    if phase != "Pending":
        raise _refuse(grant, phase, "denied", "Pending")
    return status.model_copy(
        update={
            "phase": "Denied",
            "reason": reason or f"denied by {approver.id}",
            "decided_by": approver.id,
            "decided_at": now,
        }
    )


def revoked_status(
    grant: Mapping[str, Any], *, by: Principal, now: datetime, reason: str = ""
) -> GrantStatus:
    """``Active`` or ``Pending`` → ``Revoked`` (check ``may_revoke`` first)."""
    status, phase = _current(grant, now)
    if phase not in ("Active", "Pending"):
        raise _refuse(grant, phase, "revoked", "Active or Pending")
    return status.model_copy(
        update={
            "phase": "Revoked",
            "reason": reason or f"revoked by {by.id}",
            "decided_by": by.id,
            "decided_at": now,
        }
    )
