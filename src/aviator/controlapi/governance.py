"""Governance on the Control API: who is asking, whether policy lets them write, and the audit
record of every such decision.

- **Who.** ``authenticate`` turns an ``Authorization`` header into a ``Principal``: the admin token
  (constant-time compare) is ``ADMIN``; anything else must be a token the ``TokenVerifier``
  accepts (the plane's own, audience ``control-api``, or a trusted issuer's). The principal is
  stored on the request under ``PRINCIPAL``.
- **May they.** ``write_decision`` (pure) decides a write on the compiled policy set: ``create``
  on the object as it would be stored, ``delete`` on the stored one, ``update`` on *both* (an
  agent must not be able to write its way out of a policy, e.g. by lowering a deployment's
  priority).
- **Recorded.** ``authorize_write`` appends the decision to the audit log *before* the write is
  performed, then raises ``Forbidden`` for a deny: a write that could not be recorded is not
  performed (``AuditUnavailableError``, 503), and a refused one is recorded too. The record is of
  the decision; a write that is allowed and then fails in the store (a conflict) leaves the allow
  record alone.
- ``admin_only`` guards what policy does not cover (token issuing, signing keys, status writes):
  the admin only, audited.

Reads are not policy actions: any authenticated principal may read (schema of
``aviator.policy.schema``). Without a ``Governance`` on the app (unit tests of the plain API) only
the admin token authenticates and nothing is decided or audited.

This module must not perform writes (the handlers in ``app`` and ``grants`` do), nor log or echo
a credential.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from aviator.api import errors
from aviator.api.agent import CONTROL_API_AUDIENCE
from aviator.api.kinds import KindInfo
from aviator.api.meta import now_utc
from aviator.api.principal import ADMIN, Principal
from aviator.audit.log import AuditError, AuditLog
from aviator.audit.record import AuditRecord, ExtraValue
from aviator.governance.view import PolicyView
from aviator.identity.verify import InvalidToken, Issuer, KeySource, TokenVerifier, plane_issuer
from aviator.policy import entities as ent
from aviator.policy.engine import CompiledPolicies, Decision
from aviator.settings import IdentitySettings

__all__ = [
    "GOVERNANCE",
    "PRINCIPAL",
    "AuditUnavailableError",
    "Governance",
    "WriteAction",
    "WriteDecision",
    "admin_only",
    "audit",
    "authenticate",
    "authorize_write",
    "combine_update",
    "control_api_verifier",
    "principal_of",
    "request_id",
    "write_decision",
]

WriteAction = Literal["create", "update", "delete"]

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_MAX = 128
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:/@+=-]+$")
"""A caller's request id is kept only if it is short and plain (it lands in the audit log)."""


class AuditUnavailableError(errors.ServiceUnavailable):
    """The decision could not be recorded, so the request was refused (fail closed)."""


@dataclass(frozen=True, slots=True)
class Governance:
    """What enforcement needs: the policies (kept current by a watch), the audit log, and the
    verifier of non-admin tokens (None: only the admin token authenticates)."""

    view: PolicyView
    audit: AuditLog
    verifier: TokenVerifier | None = None
    clock: Callable[[], datetime] = field(default=now_utc)
    """Wall clock of grant decisions (``decidedAt``, ``expiresAt``); injectable for tests."""
    sync_timeout_s: float = 2.0
    """Longest a grant write waits for the view to see it before answering anyway."""


GOVERNANCE = web.AppKey("governance", Governance)
PRINCIPAL = web.RequestKey("principal", Principal)
_REQUEST_ID = web.RequestKey("request_id", str)


def control_api_verifier(
    settings: IdentitySettings,
    *,
    keys: KeySource,
    view: PolicyView,
    trusted: Iterable[Issuer] = (),
    clock: Callable[[], float] = time.time,
) -> TokenVerifier:
    """The verifier of agent tokens on the Control API: the plane's own tokens for audience
    ``control-api`` and the trusted issuers' tokens, of agents that still exist."""
    return TokenVerifier(
        issuers=[plane_issuer(settings, keys=keys, audience=CONTROL_API_AUDIENCE), *trusted],
        trust_domain=settings.trust_domain,
        leeway_s=settings.leeway_s,
        cache_size=settings.cache_size,
        clock=clock,
        agents=view.agents,
    )


def authenticate(header: str, *, admin_token: bytes, verifier: TokenVerifier | None) -> Principal:
    """The principal of an ``Authorization`` header value; ``InvalidToken`` when it names none."""
    scheme, _, presented = header.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise InvalidToken("missing", "no bearer token in the Authorization header")
    if hmac.compare_digest(presented.encode(), admin_token):
        return ADMIN
    if verifier is None:
        raise InvalidToken("unknown_issuer", "only the admin token is accepted here")
    return verifier.authenticate(header)


def principal_of(request: web.Request) -> Principal:
    """The authenticated principal (set by the auth middleware)."""
    return request[PRINCIPAL]


def request_id(request: web.Request) -> str:
    """The caller's ``x-request-id`` when it is plain and short, else a fresh one (the same for
    every record of the request)."""
    known = request.get(_REQUEST_ID)
    if isinstance(known, str):
        return known
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    rid = (
        given
        if given and len(given) <= _REQUEST_ID_MAX and _REQUEST_ID_OK.match(given)
        else uuid.uuid4().hex
    )
    request[_REQUEST_ID] = rid
    return rid


# -- the pure part -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteDecision:
    decision: Decision
    resource: str
    """The entity uid, e.g. ``ModelDeployment::"team-a/chat"`` (the audit record's resource)."""


def _no_decision(detail: str) -> Decision:
    return Decision(False, reason=f"no decision (counts as deny): {detail}", no_decision=True)


def combine_update(current: Decision, proposed: Decision) -> Decision:
    """An update is allowed only if both the object as stored and as proposed may be updated;
    a deny names which side refused."""
    for side, decision in (("the object as stored", current), ("the object as proposed", proposed)):
        if not decision.allowed:
            return Decision(
                False,
                decision.decided_by,
                f"{decision.reason} (on {side})",
                decision.no_decision,
                decision.statements,
                decision.errors,
            )
    if current.reason == proposed.reason:
        reason = current.reason
    else:
        reason = f"{current.reason} (as stored); {proposed.reason} (as proposed)"
    return Decision(
        True,
        tuple(dict.fromkeys((*current.decided_by, *proposed.decided_by))),
        reason,
        False,
        tuple(dict.fromkeys((*current.statements, *proposed.statements))),
        tuple(dict.fromkeys((*current.errors, *proposed.errors))),
    )


def write_decision(
    compiled: CompiledPolicies,
    principal: Principal,
    action: WriteAction,
    kind: KindInfo,
    *,
    current: Mapping[str, Any] | None = None,
    proposed: Mapping[str, Any] | None = None,
) -> WriteDecision:
    """May ``principal`` do ``action`` on an object of ``kind``? ``create`` needs ``proposed``,
    ``delete`` ``current``, ``update`` both."""
    needed = {"create": (proposed,), "delete": (current,), "update": (current, proposed)}[action]
    if any(obj is None for obj in needed):
        raise ValueError(f"{action} of {kind.kind} needs the object(s) it is decided on")
    targets = [obj for obj in needed if obj is not None]
    try:
        entities = [ent.object_entity(kind.kind, obj) for obj in targets]
    except ValueError as exc:
        meta = targets[-1].get("metadata") or {}
        uid = ent.object_uid(kind.kind, meta.get("namespace"), str(meta.get("name") or ""))
        return WriteDecision(_no_decision(str(exc)), str(uid))
    decisions = [compiled.decide(principal, action, entity) for entity in entities]
    decision = combine_update(*decisions) if action == "update" else decisions[0]
    return WriteDecision(decision, str(entities[-1].uid))


# -- the shell -----------------------------------------------------------------------------------


def governance_of(request: web.Request) -> Governance | None:
    return request.app.get(GOVERNANCE)


async def audit(
    request: web.Request,
    governance: Governance,
    *,
    action: str,
    resource: str,
    allowed: bool,
    policies: Iterable[str] = (),
    reason: str = "",
    extra: Mapping[str, ExtraValue] | None = None,
) -> None:
    """Append one record about the request's principal; ``AuditUnavailableError`` (503) when
    the log cannot take it, so that the caller performs nothing it could not record."""
    record = AuditRecord.of(
        principal_of(request),
        source="controlapi",
        action=action,
        resource=resource,
        decision="allow" if allowed else "deny",
        policies=policies,
        reason=reason,
        request_id=request_id(request),
        extra={"method": request.method, **(extra or {})},
    )
    try:
        # ``append`` blocks while the log's queue is full (up to its full_timeout_s): off the
        # event loop, so reads keep being served while the disk catches up.
        await asyncio.to_thread(governance.audit.append, record)
    except AuditError as exc:
        raise AuditUnavailableError(
            f"the decision could not be recorded in the audit log, so nothing was done: {exc}",
            retry_after=1.0,
        ) from None


async def authorize_write(
    request: web.Request,
    kind: KindInfo,
    action: WriteAction,
    *,
    current: Mapping[str, Any] | None = None,
    proposed: Mapping[str, Any] | None = None,
) -> None:
    """Decide a write, record the decision, and raise ``Forbidden`` for a deny (a no-op without
    governance). Call it right before performing the write."""
    governance = governance_of(request)
    if governance is None:
        return
    principal = principal_of(request)
    verdict = write_decision(
        governance.view.compiled, principal, action, kind, current=current, proposed=proposed
    )
    decision = verdict.decision
    await audit(
        request,
        governance,
        action=action,
        resource=verdict.resource,
        allowed=decision.allowed,
        policies=decision.decided_by,
        reason=decision.reason,
        extra=None if decision.allowed else {"status": errors.Forbidden.code},
    )
    if not decision.allowed:
        raise errors.Forbidden(
            f"{principal.id} may not {action} {verdict.resource}: {decision.reason}",
            kind=kind.kind,
            name=str(((proposed or current) or {}).get("metadata", {}).get("name") or "") or None,
        )


async def admin_only(request: web.Request, *, action: str, resource: str, what: str) -> None:
    """Refuse (403) anyone but the admin; with governance, record the decision either way."""
    principal = principal_of(request)
    allowed = principal.kind == "admin"
    reason = "the administrator" if allowed else f"only the administrator may {what}"
    governance = governance_of(request)
    if governance is not None:
        await audit(
            request,
            governance,
            action=action,
            resource=resource,
            allowed=allowed,
            reason=reason,
            extra=None if allowed else {"status": errors.Forbidden.code},
        )
    if not allowed:
        raise errors.Forbidden(f"{reason}; {principal.id} is not the administrator")
