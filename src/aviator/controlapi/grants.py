"""Grants through the Control API: requesting one, and approving, denying or revoking it.

```
POST /apis/aviator.dev/v1alpha1/namespaces/{ns}/grants                 a Grant: requestGrant
POST /apis/aviator.dev/v1alpha1/namespaces/{ns}/grants/{name}/approve  {"reason": "..."} optional
POST /apis/aviator.dev/v1alpha1/namespaces/{ns}/grants/{name}/deny
POST /apis/aviator.dev/v1alpha1/namespaces/{ns}/grants/{name}/revoke
```

A request is decided by policy (``aviator.policy.grants.decide_request``) and stored with the
decision as its status, ``Denied`` too, so the requester can read why; the ``create`` write check
does not apply to Grants (``requestGrant`` replaces it). The verbs check ``may_approve`` /
``may_revoke`` (the requester, and the agent a grant is for, never approve it: 403) and the phase
(a wrong one: 409). Each is recorded in the audit log before the status is written.

A Grant's spec is immutable once requested: what was decided is what holds (``check_spec_kept``,
422). Labels and annotations may change, subject to ``update`` policy; deleting is ``delete``.

After a grant write the handler waits (bounded) until the plane's ``PolicyView`` holds it and
recompiles, so the next decision in this process sees it; other processes see it through their
watch. This module must not decide anything itself: policy and the pure lifecycle do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import Field

from aviator.api import admission, errors, kinds
from aviator.api.errors import FieldError
from aviator.api.grant import GrantStatus
from aviator.api.meta import GROUP_VERSION, Model, dns1123_label_problem
from aviator.controlapi.bodies import read_options
from aviator.controlapi.governance import (
    GOVERNANCE,
    Governance,
    audit,
    principal_of,
)
from aviator.policy import entities as ent
from aviator.policy import grants
from aviator.policy.engine import Decision
from aviator.store.protocol import Store

__all__ = ["VERBS", "Verb", "check_spec_kept", "install", "request_grant", "wait_for_view"]

log = logging.getLogger("aviator.controlapi.grants")

Verb = Literal["approve", "deny", "revoke"]
VERBS: tuple[Verb, ...] = ("approve", "deny", "revoke")
RETRIES = 5
"""A verb re-reads the grant and tries again this often when a concurrent write races it."""
_SYNC_STEP_S = 0.005


class VerbBody(Model):
    """Optional body of approve, deny and revoke."""

    reason: str = Field(default="", max_length=512)
    """Why, for the status and the audit log (default: who did it)."""


GRANTS_STORE: web.AppKey[Store] = web.AppKey("grants_store", Store)


def _status_wire(status: GrantStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def check_spec_kept(current: dict[str, Any], proposed: dict[str, Any]) -> None:
    """Refuse (422) a write that changes a Grant's spec: it was decided as requested."""
    if (current.get("spec") or {}) != (proposed.get("spec") or {}):
        name = (current.get("metadata") or {}).get("name")
        raise errors.Invalid(
            f"Grant {name!r} is invalid",
            kind="Grant",
            name=name,
            causes=(
                FieldError(
                    "spec",
                    "a Grant's spec is immutable once requested; request a new Grant instead "
                    "(approve, deny and revoke change its status)",
                    "FieldValueForbidden",
                ),
            ),
        )


async def wait_for_view(
    governance: Governance, namespace: str, name: str, stored: dict[str, Any] | None
) -> None:
    """Wait until the view holds ``stored`` (or, for None, no longer holds the grant), then
    recompile; give up quietly after ``sync_timeout_s`` (the view's own watch catches up)."""
    view = governance.view
    wanted = None if stored is None else int(stored["metadata"]["resourceVersion"])
    deadline = time.monotonic() + governance.sync_timeout_s
    while True:
        seen = view.grant(namespace, name)
        if wanted is None:
            if seen is None:
                break
        elif seen is not None and int(seen["metadata"]["resourceVersion"]) >= wanted:
            break
        if time.monotonic() >= deadline:
            log.warning("policy view did not see grant %s/%s in time", namespace, name)
            return
        await asyncio.sleep(_SYNC_STEP_S)
    view.refresh()


async def request_grant(
    request: web.Request, governance: Governance, store: Store, obj: dict[str, Any]
) -> dict[str, Any]:
    """Decide and store an admitted Grant; returns it as stored (with its decided status)."""
    principal = principal_of(request)
    meta = obj["metadata"]
    verdict = grants.decide_request(governance.view.compiled, obj, requester=principal)
    status = grants.requested_status(obj, verdict, requester=principal, now=governance.clock())
    await audit(
        request,
        governance,
        action="requestGrant",
        resource=str(ent.object_uid("Grant", meta["namespace"], meta["name"])),
        allowed=verdict.phase != "Denied",
        policies=verdict.decision.decided_by,
        reason=verdict.reason,
        extra={"phase": verdict.phase},
    )
    stored = await store.create(kinds.GRANT, {**obj, "status": _status_wire(status)})
    await wait_for_view(governance, meta["namespace"], meta["name"], stored)
    return stored


async def _verb_body(request: web.Request) -> VerbBody:
    return await read_options(request, VerbBody, kind="Grant", example='{"reason": "..."}')


def _transition(
    verb: Verb, grant: dict[str, Any], request: web.Request, now: Any, reason: str
) -> GrantStatus:
    principal = principal_of(request)
    if verb == "approve":
        return grants.approved_status(grant, approver=principal, now=now, reason=reason)
    if verb == "deny":
        return grants.denied_status(grant, approver=principal, now=now, reason=reason)
    return grants.revoked_status(grant, by=principal, now=now, reason=reason)


def _handler(verb: Verb) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if problem := dns1123_label_problem(namespace):
            raise errors.BadRequest(f"invalid namespace {namespace!r}: {problem}")
        governance = request.app[GOVERNANCE]
        store = request.app[GRANTS_STORE]
        body = await _verb_body(request)
        principal = principal_of(request)
        resource = str(ent.object_uid("Grant", namespace, name))
        for _ in range(RETRIES):
            current = await store.get(kinds.GRANT, namespace, name)
            compiled = governance.view.compiled
            decision: Decision = (
                grants.may_revoke(compiled, principal, current)
                if verb == "revoke"
                else grants.may_approve(compiled, principal, current)
            )
            if not decision.allowed:
                await audit(
                    request,
                    governance,
                    action=verb,
                    resource=resource,
                    allowed=False,
                    policies=decision.decided_by,
                    reason=decision.reason,
                    extra={"status": errors.Forbidden.code},
                )
                raise errors.Forbidden(
                    f"{principal.id} may not {verb} grant {namespace}/{name}: {decision.reason}",
                    kind="Grant",
                    name=name,
                )
            try:
                status = _transition(verb, current, request, governance.clock(), body.reason)
            except errors.Conflict as exc:
                await audit(
                    request,
                    governance,
                    action=verb,
                    resource=resource,
                    allowed=False,
                    reason=exc.message,
                    extra={"status": exc.code},
                )
                raise
            await audit(
                request,
                governance,
                action=verb,
                resource=resource,
                allowed=True,
                policies=decision.decided_by,
                reason=f"{decision.reason}; now {status.phase}",
                extra={"phase": status.phase},
            )
            obj = admission.admit_status(
                {"status": _status_wire(status)}, kind=kinds.GRANT, current=current
            )
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                stored = await store.replace_status(kinds.GRANT, obj)
            except errors.Conflict:
                continue  # written meanwhile (the expiry controller, another approver): again
            await wait_for_view(governance, namespace, name, stored)
            return web.Response(
                body=orjson.dumps(stored), status=200, content_type="application/json"
            )
        raise errors.Conflict(
            f"grant {name!r} kept changing; {verb} not applied", kind="Grant", name=name
        )

    handle.__name__ = f"{verb}_grant"
    return handle


def install(app: web.Application, *, store: Store) -> None:
    """Add the approve, deny and revoke endpoints to the Control API ``app`` (which carries a
    ``Governance``)."""
    app[GRANTS_STORE] = store
    base = f"/apis/{GROUP_VERSION}/namespaces/{{namespace}}/{kinds.GRANT.plural}/{{name}}"
    for verb in VERBS:
        app.router.add_post(f"{base}/{verb}", _handler(verb))
