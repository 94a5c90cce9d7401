"""``PolicyView``: the compiled policy set and the agents, kept current from a list + watch.

Four reflectors (Policy, Grant, Agent, ModelDeployment) feed one recompile loop. Any event marks
the view stale and wakes the loop, which compiles once for however many events arrived meanwhile
(a burst of applies is one compile). The loop also wakes at the compiled set's ``valid_until`` —
the earliest expiry among the active grants — so an expired grant stops counting within
``expiry_slack_s`` of its expiry even if nothing else changes. Decisions are never delayed by a
compile: readers keep the previous handle until the new one is swapped in.

Failing closed: until the first full list of every kind is compiled, and whenever the stored
Policies fail to compile (admission refuses bad Cedar, so this means a schema change or a store
edited behind the API), ``compiled`` is the empty set — every non-admin request is denied — and
``error`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aviator.api import kinds
from aviator.api.meta import now_utc
from aviator.api.principal import Principal
from aviator.api.watch import EventType
from aviator.cache import ListWatch, ObjectKey, Reflector
from aviator.policy.engine import CompiledPolicies, CompileError, PolicyEngine

__all__ = ["PolicyView"]

EXPIRY_SLACK_S = 0.05
"""Recompile this long after the earliest grant expiry, so that the grant is past ``expiresAt``
by the clock the compile reads."""


class PolicyView:
    """Compiled policies and agents from ``source``; run ``run()`` as a task."""

    def __init__(
        self,
        *,
        source: ListWatch,
        engine: PolicyEngine | None = None,
        clock: Callable[[], datetime] = now_utc,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._engine = engine or PolicyEngine()
        self._clock = clock
        self._log = logger or logging.getLogger("aviator.governance")
        self._reflectors = {
            kind.kind: Reflector(
                source=source,
                kind=kind,
                on_event=self._changed,
                backoff_base_s=backoff_base_s,
                backoff_max_s=backoff_max_s,
                logger=self._log,
            )
            for kind in (kinds.POLICY, kinds.GRANT, kinds.AGENT, kinds.MODEL_DEPLOYMENT)
        }
        self.agents: Mapping[ObjectKey, dict[str, Any]] = self._reflectors[kinds.AGENT.kind].cache
        """Every Agent by ``(namespace, name)``: the reflector's own mapping, kept current (read
        on every request: no call needed)."""
        self.compiled: CompiledPolicies = self._engine.compile((), now=clock())
        """The current compiled set (the empty set, denying all but the admin, until synced or
        while the stored Policies fail to compile). Read on every request: an attribute, which
        only ``refresh`` sets."""
        self._error: str | None = "policies not loaded yet"
        self._generation = 0
        self._stale = asyncio.Event()
        self._synced = asyncio.Event()
        self._listeners: list[Callable[[CompiledPolicies], None]] = []

    # -- reading ---------------------------------------------------------------------------

    @property
    def error(self) -> str | None:
        """Why ``compiled`` is the fail-closed empty set, or None when it is the real one."""
        return self._error

    @property
    def generation(self) -> int:
        """Bumped by every compile; lets callers notice that decisions may have changed."""
        return self._generation

    @property
    def synced(self) -> asyncio.Event:
        """Set once every kind was listed and compiled."""
        return self._synced

    def agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Agent object ``namespace/name`` (wire dict), if it exists."""
        return self.agents.get((namespace, name))

    def agent_exists(self, principal: Principal) -> bool:
        """Whether an agent principal's Agent still exists (a deleted agent's tokens are void)."""
        if principal.namespace is None or principal.name is None:
            return False
        return self.agent(principal.namespace, principal.name) is not None

    def grant(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._reflectors["Grant"].get((namespace, name))

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._reflectors["ModelDeployment"].get((namespace, name))

    def on_compiled(self, listener: Callable[[CompiledPolicies], None]) -> None:
        """Call ``listener`` with every newly compiled set (e.g. to cut off requests whose grant
        was revoked). Listeners run on the event loop and must be quick."""
        self._listeners.append(listener)

    # -- keeping it current ----------------------------------------------------------------

    def _changed(self, _type: EventType, _obj: dict[str, Any]) -> None:
        self._stale.set()

    def refresh(self) -> CompiledPolicies:
        """Compile now from what the reflectors hold (the loop calls this; so may a writer that
        must see its own write before the watch delivers it)."""
        now = self._clock()
        objects = {kind: list(r.cache.values()) for kind, r in self._reflectors.items()}
        policies = sorted(
            (p["metadata"]["name"], str((p.get("spec") or {}).get("cedar") or ""))
            for p in objects["Policy"]
        )
        try:
            compiled = self._engine.compile(
                policies,
                now=now,
                grants=objects["Grant"],
                agents=objects["Agent"],
                deployments=objects["ModelDeployment"],
            )
        except CompileError as exc:
            if self._error != str(exc):
                self._log.error("policies refused, denying every non-admin request: %s", exc)
            self._error = str(exc)
            compiled = self._engine.compile((), now=now)
        else:
            if self._error is not None and self._synced.is_set():
                self._log.info("policies compile again")
            self._error = None
            for problem in compiled.problems:
                self._log.warning("left out of the policy set: %s", problem)
        self.compiled = compiled
        self._generation += 1
        for listener in self._listeners:
            try:
                listener(compiled)
            except Exception:
                self._log.exception("policy listener failed")
        return compiled

    async def run(self) -> None:
        """List and watch every kind, and recompile on change and at grant expiry, until
        cancelled."""
        tasks = [
            asyncio.create_task(r.run(), name=f"aviator-governance-{r.kind.plural}")
            for r in self._reflectors.values()
        ]
        try:
            await asyncio.gather(*(r.synced.wait() for r in self._reflectors.values()))
            self._stale.clear()
            compiled = self.refresh()
            self._synced.set()
            while True:
                timeout = None
                if compiled.valid_until is not None:
                    delta = (compiled.valid_until - self._clock()).total_seconds()
                    timeout = max(0.0, delta) + EXPIRY_SLACK_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stale.wait(), timeout)
                self._stale.clear()
                compiled = self.refresh()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
