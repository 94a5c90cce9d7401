"""Governance in the request path: policy, budgets, grant leases and the audit record of each
request.

Per request, once the principal is known and the body names a served model:

1. **Policy.** The admin is allowed without evaluation; everyone else is decided by the compiled
   Cedar set of a ``PolicyView`` (action ``infer``, or ``embed`` for embeddings, on the
   ModelDeployment serving the model, with the inference context: model, estimated tokens,
   priority, hour, and the intent declared by ``x-aviator-intent``). Deny → 403.
2. **Budgets.** An agent with ``spec.budgets`` reserves its estimate and a request slot
   (``aviator.governance.budgets``); over budget → 429 with ``Retry-After``. The reservation is
   settled with the reported usage when the request ends.
3. **Grant lease.** A request permitted only by grants holds a ``GrantLease``: the proxy cuts its
   answer off once the grants are no longer active (revoked: the view recompiles and the listener
   flips the lease; expired: the lease's deadline passes).
4. **Audit.** A refusal (403, 429) is recorded when it is made; an admitted request when it ends,
   with its tokens and status. When the log cannot take a record the request is refused with 503
   (fail closed). Unauthenticated requests (401) are not decisions and are not recorded. The
   records are written by a child process (``aviator.audit.writer``: rendering, chaining and
   SQLite leave the gateway's process), or in this process with ``audit_process=False``.

An ``insecure`` gateway skips policy and budgets (anonymous callers are let in) and still audits.

This module MUST NOT block the event loop (the audit log only queues; its queue never waits here),
read credentials, or log anything that identifies a request's content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

from aviator.api import grant as grant_api
from aviator.api.principal import Principal
from aviator.audit.log import AuditClosed, AuditUnavailable
from aviator.audit.record import AuditRecord, ExtraValue
from aviator.audit.sink import AuditSink, LocalSink, Sink
from aviator.gateway import openai
from aviator.gateway.buckets import Buckets
from aviator.gateway.usage import Usage
from aviator.governance.budgets import Budgets, Limits, Refusal, Reservation
from aviator.governance.view import PolicyView
from aviator.policy.engine import CompiledPolicies, Decision
from aviator.policy.entities import EntityUid, object_uid
from aviator.policy.lane import InferenceLane
from aviator.settings import AuditSettings

__all__ = [
    "INTENT_HEADER",
    "Admission",
    "Governance",
    "GrantLease",
    "estimate_tokens",
]

INTENT_HEADER: Final = "x-aviator-intent"
CHARS_PER_TOKEN: Final = 4
"""The estimate's rule of thumb for English text (tokenizers average 3.5-4.5 characters)."""
_INTENT_MAX: Final = 256
_LANE_TEMPLATES: Final = 8
"""Record templates one lane remembers (its decisions differ by estimate and hour: few)."""
_REMEMBERED: Final = 10_000
"""Entries each per-key memo holds (limits per agent, uids per deployment, record templates)
before it starts over: agents and deployments come and go, a rebuild is one read each."""


def _text_chars(value: Any) -> int:
    """Characters of prompt text in a message content, a prompt or an embedding input."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, int):  # a token id: one token is CHARS_PER_TOKEN characters
                total += CHARS_PER_TOKEN
            elif isinstance(item, list):  # a batch of token ids
                total += CHARS_PER_TOKEN * len(item)
            elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
                total += len(item["text"])  # a content part of type text
        return total
    return 0


def estimate_tokens(operation: str, body: Mapping[str, Any]) -> int:
    """A cheap estimate of a request's tokens: its prompt's characters / 4, plus the most it may
    generate (``max_completion_tokens`` or ``max_tokens``; without either, nothing: the usage the
    replica reports settles the difference). Pure."""
    if type(body) is dict:
        return _estimate(operation, body)  # what JSON parses to: dict lookups, no ABC calls
    return _estimate(operation, dict(body))


def _estimate(operation: str, body: dict[str, Any]) -> int:
    chars = 0
    if operation == "chat":
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if type(message) is dict:
                    content = message.get("content")
                    chars += len(content) if type(content) is str else _text_chars(content)
                elif isinstance(message, Mapping):
                    chars += _text_chars(message.get("content"))
    elif operation == "embeddings":
        chars = _text_chars(body.get("input"))
    else:
        chars = _text_chars(body.get("prompt"))
    output = 0
    if operation != "embeddings":
        value = body.get("max_completion_tokens")
        if type(value) is int and value > 0:
            output = value
        else:
            value = body.get("max_tokens")
            if type(value) is int and value > 0:
                output = value
    return -(-chars // CHARS_PER_TOKEN) + output


class GrantLease:
    """The grants one request was admitted on (see ``proxy.Lease``). It ends when the view no
    longer holds any of them active (``revoke``) or at the latest expiry (``deadline``)."""

    __slots__ = ("_clock", "deadline", "grants", "reason")

    def __init__(
        self, grants: tuple[str, ...], *, deadline: float, clock: Callable[[], float]
    ) -> None:
        self.grants = grants
        """``namespace/name`` of each grant that permitted the request."""
        self.deadline = deadline
        """Seconds since the epoch when the last of them expires."""
        self.reason: str | None = None
        self._clock = clock

    def ended(self) -> str | None:
        if self.reason is None and self._clock() >= self.deadline:
            self.reason = f"grant {', '.join(self.grants)} expired"
        return self.reason

    def revoke(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


class Admission:
    """One admitted request, until ``Governance.finish``. (A plain class, not a dataclass: one
    is made per request, and compiled with mypyc a dataclass's ``__init__`` stays interpreted,
    the dataclasses module writes it at run time.)"""

    __slots__ = (
        "_estimate",
        "action",
        "body",
        "decision",
        "extra",
        "lane",
        "lease",
        "operation",
        "policies",
        "principal",
        "reason",
        "request_id",
        "reservation",
        "resource",
    )

    def __init__(
        self,
        *,
        principal: Principal,
        action: str,
        resource: str,
        request_id: str,
        operation: str,
        body: Mapping[str, Any],
    ) -> None:
        self.principal = principal
        self.action = action
        self.resource = resource
        self.request_id = request_id
        self.operation = operation
        self.body = body
        self.policies: tuple[str, ...] = ()
        self.reason = ""
        self.reservation: Reservation | None = None
        self.lease: GrantLease | None = None
        self.extra: dict[str, ExtraValue] = {}
        self._estimate: int | None = None
        self.lane: _Lane | None = None
        self.decision: Decision | None = None
        """The lane's decision that admitted it (its record template is remembered there)."""

    @property
    def estimate(self) -> int:
        """The request's token estimate (``estimate_tokens``), computed on first use: the admin's
        and an insecure gateway's requests need it only for a record without reported usage."""
        if self._estimate is None:
            self._estimate = estimate_tokens(self.operation, self.body)
        return self._estimate


class _Lane(NamedTuple):
    """``Governance._lane``: what one family of requests shares under one compiled set."""

    compiled: CompiledPolicies
    intent: str
    grant: str
    policies: InferenceLane[Decision] | None
    """Its decisions (None: ``decide_inference`` each time)."""
    principal: Principal
    """The principal it was made for (another token of the same agent shares the lane)."""
    templates: list[tuple[Decision, Sink, int]]
    """The record template of each of its decisions made so far, in the log it was registered
    with: looked up by identity (a lane makes few decisions), only for ``principal``."""


class Governance:
    """Policy, budgets, leases and audit for one gateway. ``start``/``aclose`` in its lifespan."""

    def __init__(
        self,
        *,
        view: PolicyView | None,
        insecure: bool = False,
        budgets: Budgets | None = None,
        audit_path: Path | None = None,
        audit_settings: AuditSettings | None = None,
        audit_process: bool = True,
        clock: Callable[[], float] = time.time,
        recorder: Buckets | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """``view`` may be None only when ``insecure`` (nothing is decided then). ``clock``:
        seconds since the epoch (grant expiries, budget windows and the time of each record).
        ``recorder``: the histogram series each policy decision's time (declared intent and
        Cedar) is observed in, in seconds (the gateway sets its metrics' here)."""
        if view is None and not insecure:
            raise ValueError("a gateway that enforces policy needs a PolicyView")
        self.view = view
        self.insecure = insecure
        self.budgets = budgets if budgets is not None else Budgets()
        self.audit_path = audit_path
        # The queue must never make a request wait on the event loop: when it is full, refuse.
        self._audit_settings = replace(audit_settings or AuditSettings(), full_timeout_s=0.0)
        self._queue_bound = self._audit_settings.queue_bound
        self.audit: Sink | None = None
        self._audit_process = audit_process
        self._opening: asyncio.Task[None] | None = None
        self._clock = clock
        self.recorder = recorder
        self._log = logger or logging.getLogger("aviator.gateway.governance")
        self._leases: set[GrantLease] = set()
        self._resources: dict[str, tuple[EntityUid | None, str]] = {}
        self._templates: dict[tuple[object, ...], int] = {}
        self._lanes: dict[tuple[str | None, ...], _Lane] = {}
        """``_lane``'s by agent, action, deployment, model, priority and intent header."""
        self._limits: dict[str, Limits] = {}
        """Per agent, its limits as read from its Agent: forgotten at every compile of the view,
        which follows every change of an Agent (so a changed budget applies from the same
        moment as a changed policy)."""
        if view is not None:
            view.on_compiled(self._recompiled)

    # -- lifespan ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the audit log: start its writer process (``audit_process``; in the background,
        so that the gateway's start does not wait for it: until it runs, ``synced`` is False and
        governed requests are refused with 503), or open it here (off the event loop)."""
        if self.audit_path is None or self.audit is not None or self._opening is not None:
            return
        if self._audit_process:
            self._opening = asyncio.create_task(self._open_sink(self.audit_path))
        else:
            self.audit = await LocalSink.start(self.audit_path, settings=self._audit_settings)

    async def _open_sink(self, path: Path) -> None:
        try:
            self.audit = await AuditSink.start(path, settings=self._audit_settings)
        except (OSError, AuditUnavailable) as exc:
            # Fail closed: nothing governed is served unrecorded.
            self._log.error(
                "the audit log %s cannot be written (%s): requests are refused with 503", path, exc
            )

    async def aclose(self) -> None:
        """Write every acknowledged record and close the log."""
        opening, self._opening = self._opening, None
        if opening is not None:
            await opening
        audit, self.audit = self.audit, None
        self._templates.clear()  # numbers of that log's templates
        if audit is not None:
            await audit.aclose()

    @property
    def synced(self) -> bool:
        """The policies are known, and the audit log (if any) is open."""
        return (self.view is None or self.view.synced.is_set()) and (
            self.audit_path is None or self.audit is not None
        )

    # -- deciding ----------------------------------------------------------------------------

    def admit(
        self,
        principal: Principal,
        *,
        operation: str,
        model: str,
        deployment: str,
        body: Mapping[str, Any],
        priority: str,
        intent_header: str | None,
        request_id: str,
    ) -> Admission:
        """Decide a request; raise ``OpenAIError`` (403, 429, 503) to refuse it, after recording
        the refusal. ``deployment`` is ``namespace/name`` of the ModelDeployment serving ``model``
        ("" when none is known)."""
        action = "embed" if operation == "embeddings" else "infer"
        uid, resource = self._resource(deployment)
        admission = Admission(
            principal=principal,
            action=action,
            resource=resource if uid is not None else f"model:{model}",
            request_id=request_id,
            operation=operation,
            body=body,
        )
        if self.insecure or principal.kind == "admin":
            admission.reason = (
                "insecure gateway: policy is not enforced"
                if self.insecure
                else "the administrator is not subject to policy"
            )
            self._audit_ready()
            return admission
        assert self.view is not None  # checked at construction
        estimate = admission.estimate
        now = self._clock()
        deciding = time.perf_counter()
        compiled = self.view.compiled
        hour = int(now // 3600) % 24  # UTC: POSIX time has no leap seconds
        if intent_header is not None:
            # Only this much of it is read; and a lane's key must not hold a client's kilobytes.
            intent_header = intent_header[:_INTENT_MAX]
        agent = principal.agent_key  # (read once: a Python object's attribute)
        key = (agent, action, deployment, model, priority, intent_header)
        lane = self._lanes.get(key)
        if lane is None or lane.compiled is not compiled:
            lane = self._lane(key, compiled, principal, action, uid, model, priority, intent_header)
        if lane.intent:
            admission.extra["intent"] = lane.intent
        if lane.grant:
            admission.extra["grant"] = lane.grant
        if uid is None:
            decision = Decision(
                allowed=False,
                reason=f"model {model!r} is served by no ModelDeployment the gateway knows",
            )
        elif lane.policies is not None:
            decision = lane.policies.decide(estimate, hour)
        else:
            decision = compiled.decide_inference(
                principal,
                action,
                uid,
                model=model,
                estimated_tokens=estimate,
                priority=priority,
                hour=hour,
                intent=lane.intent,
                grant=lane.grant,
            )
        if self.recorder is not None:
            self.recorder.observe(time.perf_counter() - deciding)
        admission.policies = decision.decided_by
        admission.reason = decision.reason
        if lane.policies is not None:  # a decision the lane keeps: its template can be too
            admission.lane = lane
            admission.decision = decision
        if not decision.allowed:
            self._refuse(admission, status=403, reason=decision.reason)
            raise openai.policy_denied(decision.reason)
        if agent is not None:
            limits = self._limits_of(principal, agent)
            if not limits.unlimited:
                outcome = self.budgets.admit(agent, limits, estimate=estimate, now=now)
                if isinstance(outcome, Refusal):
                    self._refuse(
                        admission,
                        status=429,
                        reason=f"budget {outcome.budget} exceeded: {outcome.message}",
                        policies=(),
                        extra={"budget": outcome.budget},
                    )
                    raise openai.budget_exceeded(
                        outcome.budget, outcome.message, retry_after_s=outcome.retry_after_s
                    )
                admission.reservation = outcome
        try:
            self._audit_ready()
        except openai.OpenAIError:
            self._release(admission)
            raise
        sources = decision.decided_by
        if (
            sources
            and sources[0].startswith("grant:")
            and all(s.startswith("grant:") for s in sources)
        ):
            admission.lease = self._lease(tuple(s.removeprefix("grant:") for s in sources))
        return admission

    def finish(
        self,
        admission: Admission,
        *,
        code: int,
        usage: Usage | None = None,
        cut: str | None = None,
    ) -> None:
        """Settle the request's budget, drop its lease, and record it."""
        now = self._clock()  # one reading: the budget's settlement and the record's time
        self._release(admission, usage=usage, now=now)
        audit = self.audit
        if audit is None:
            return
        extra = admission.extra  # the admission's own, and it ends here: no copy
        extra["status"] = code
        if cut is not None:
            extra["cutOff"] = cut
        tokens = None
        if usage is not None:
            tokens = (usage.prompt_tokens, usage.completion_tokens)
        else:
            extra["estimatedTokens"] = admission.estimate
        # Every admitted request is recorded: as the facts that change, with the number of a
        # template of what repeats (the writer process renders the record).
        try:
            audit.record(
                self._template(admission, audit),
                request_id=admission.request_id,
                micros=int(now * 1_000_000),
                tokens=tokens,
                extra=extra,
            )
        except (AuditUnavailable, AuditClosed) as exc:
            # Already answered: all that is left is to say it was not recorded.
            self._log.error("request %s was not audited: %s", admission.request_id, exc)

    # -- internals -----------------------------------------------------------------------------

    def _resource(self, deployment: str) -> tuple[EntityUid | None, str]:
        """The uid of the ModelDeployment ``namespace/name`` and its text (None, "" for none)."""
        known = self._resources.get(deployment)
        if known is None:
            namespace, _, name = deployment.partition("/")
            uid = object_uid("ModelDeployment", namespace, name) if name else None
            known = (uid, str(uid) if uid is not None else "")
            if len(self._resources) >= _REMEMBERED:
                self._resources.clear()  # deployments come and go; a rebuild is one string each
            self._resources[deployment] = known
        return known

    def _lane(
        self,
        key: tuple[str | None, ...],
        compiled: CompiledPolicies,
        principal: Principal,
        action: str,
        uid: EntityUid | None,
        model: str,
        priority: str,
        intent_header: str | None,
    ) -> _Lane:
        """What ``admit`` decides the same way for every request of ``key`` — principal, action,
        deployment, model, priority and ``x-aviator-intent`` (cut to ``_INTENT_MAX``) — under
        ``compiled``: the declared intent, and the policies' decisions by estimate and hour
        (``InferenceLane``)."""
        intent = grant = ""
        if intent_header and intent_header.strip():
            declared = compiled.declared_intent(principal, intent_header)
            intent, grant = declared["intent"], declared["grant"]
        policies = None
        if uid is not None:
            policies = compiled.inference_lane(
                principal, action, uid, model=model, priority=priority, intent=intent, grant=grant
            )
        lane = _Lane(compiled, intent, grant, policies, principal, [])
        if principal.agent_key is not None:  # others (anonymous, API keys) are not remembered
            if len(self._lanes) >= _REMEMBERED:
                self._lanes.clear()  # a lane is rebuilt on the next request: a few lookups
            self._lanes[key] = lane
        return lane

    def _limits_of(self, principal: Principal, agent: str) -> Limits:
        """The limits of ``principal``, the agent ``agent`` (its ``agent_key``)."""
        assert self.view is not None
        known = self._limits.get(agent)
        if known is not None:
            return known
        obj = self.view.agents.get(principal.agent_ref or ("", "")) or {}
        limits = Limits.from_spec((obj.get("spec") or {}).get("budgets"))
        if obj:
            if len(self._limits) >= _REMEMBERED:
                self._limits.clear()  # agents come and go; a rebuild costs one read each
            self._limits[agent] = limits
        return limits

    def _release(
        self, admission: Admission, *, usage: Usage | None = None, now: float | None = None
    ) -> None:
        if admission.reservation is not None:
            used = None if usage is None else usage.prompt_tokens + usage.completion_tokens
            when = self._clock() if now is None else now
            self.budgets.settle(admission.reservation, used=used, now=when)
            admission.reservation = None
        if admission.lease is not None:
            self._leases.discard(admission.lease)

    def _lease(self, grants: tuple[str, ...]) -> GrantLease:
        assert self.view is not None
        deadline = 0.0
        for key in grants:
            namespace, _, name = key.partition("/")
            obj = self.view.grant(namespace, name)
            until = grant_api.expiry_of(obj) if obj is not None else None
            if until is not None:
                deadline = max(deadline, until.timestamp())
        lease = GrantLease(grants, deadline=deadline, clock=self._clock)
        self._leases.add(lease)
        return lease

    def _recompiled(self, compiled: CompiledPolicies) -> None:
        """A new policy set (an Agent may have changed: its limits are read again); leases none
        of whose grants is still active end now."""
        self._limits.clear()
        if not self._leases:
            return
        statements = compiled.statements
        for lease in list(self._leases):
            if any(f"grant:{key}" in statements for key in lease.grants):
                continue
            lease.revoke(self._why_inactive(lease.grants))
            self._leases.discard(lease)

    def _why_inactive(self, grants: tuple[str, ...]) -> str:
        assert self.view is not None
        now = datetime.fromtimestamp(self._clock(), UTC)
        states = []
        for key in grants:
            namespace, _, name = key.partition("/")
            obj = self.view.grant(namespace, name)
            phase = "deleted" if obj is None else grant_api.phase_at(obj, now).lower()
            states.append(
                f"grant {key} was {phase}" if phase != "expired" else f"grant {key} expired"
            )
        return "; ".join(states)

    def _audit_ready(self) -> None:
        """Refuse (503) a request whose record the log could not take when it ends (also while
        the log is not open yet, or could not be)."""
        audit = self.audit
        if audit is None:
            if self.audit_path is not None:
                raise openai.audit_unavailable()
        elif audit.pending >= self._queue_bound:
            raise openai.audit_unavailable()

    def _refuse(
        self,
        admission: Admission,
        *,
        status: int,
        reason: str,
        policies: tuple[str, ...] | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> None:
        facts: dict[str, ExtraValue] = {**admission.extra, **(extra or {}), "status": status}
        facts["estimatedTokens"] = admission.estimate
        self._append(
            AuditRecord.of(
                admission.principal,
                source="gateway",
                action=admission.action,
                resource=admission.resource,
                decision="deny",
                policies=admission.policies if policies is None else policies,
                reason=reason,
                request_id=admission.request_id,
                extra=facts,
            )
        )

    def _template(self, admission: Admission, audit: Sink) -> int:
        """The record template of an admitted request (one per principal, resource and
        decision: few, and each reused by every request that repeats them). Remembered by the
        lane that decided, by identity: no key to build and hash on its next request."""
        lane = admission.lane
        decision = admission.decision
        if lane is None or decision is None or admission.principal is not lane.principal:
            return self._template_of(admission, audit)
        remembered = lane.templates
        for known, sink, number in remembered:
            if known is decision and sink is audit:
                return number
        template = self._template_of(admission, audit)
        if len(remembered) >= _LANE_TEMPLATES:
            remembered.clear()  # a lane that keeps making new decisions: start over
        remembered.append((decision, audit, template))
        return template

    def _template_of(self, admission: Admission, audit: Sink) -> int:
        principal = admission.principal
        key = (
            principal.id,
            principal.kind,
            admission.action,
            admission.resource,
            admission.policies,
            admission.reason,
        )
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= _REMEMBERED:
                self._templates.clear()  # a template is registered again, once
            template = self._templates[key] = audit.template(
                principal,
                source="gateway",
                action=admission.action,
                resource=admission.resource,
                decision="allow",
                policies=admission.policies,
                reason=admission.reason,
            )
        return template

    def _append(self, record: AuditRecord) -> None:
        """Record a refusal before it is answered: 503 when the log cannot take it."""
        audit = self.audit
        if audit is None:
            if self.audit_path is not None:  # not open (yet): nothing is answered unrecorded
                raise openai.audit_unavailable()
            return
        try:
            audit.append(record)
        except (AuditUnavailable, AuditClosed):
            raise openai.audit_unavailable() from None
