"""The Grant controller: an ``Active`` grant past ``expiresAt`` is written ``Expired``.

Policy already stops counting a grant at ``expiresAt`` (``phase_at``; the policy view recompiles
then), whatever its stored status says; this controller makes the stored status say so too, for
``aviator get grants``, the audit trail and anyone reading the object. Level-triggered: every
reconcile looks at the grant as it is now; an ``Active`` one not yet expired is looked at again
at its expiry (``Result.requeue_after``).

``expiry_step`` is the pure decision; ``GrantReconciler`` only reads the informer cache and writes
the status it returns. It never approves, denies or revokes: people and policy do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aviator.api import admission, errors, kinds
from aviator.api.grant import GrantStatus, expiry_of
from aviator.api.meta import format_time, now_utc
from aviator.cache import ObjectKey, Reflector
from aviator.controllers.reconcile import Result
from aviator.store.protocol import Store

__all__ = ["EXPIRY_SLACK_S", "ExpiryStep", "GrantReconciler", "expiry_step"]

log = logging.getLogger("aviator.controllers.grant")

EXPIRY_SLACK_S = 0.05
"""Look again this long after ``expiresAt``, so the clock read then is past it."""


@dataclass(frozen=True, slots=True)
class ExpiryStep:
    """What to do about one grant now: write ``status`` (it expired), or look again after
    ``requeue_after`` seconds, or nothing (neither)."""

    status: GrantStatus | None = None
    requeue_after: float | None = None


def expiry_step(grant: Mapping[str, Any], now: datetime) -> ExpiryStep:
    """The step for ``grant`` (a wire dict) at ``now``. Only an ``Active`` grant changes: to
    ``Expired`` from ``expiresAt`` on (an ``Active`` grant without ``expiresAt`` cannot be
    trusted and expires at once)."""
    raw = grant.get("status") or {}
    if raw.get("phase") != "Active":
        return ExpiryStep()
    until = expiry_of(grant)
    if until is not None and now < until:
        return ExpiryStep(requeue_after=(until - now).total_seconds() + EXPIRY_SLACK_S)
    status = GrantStatus.model_validate(raw)
    reason = (
        f"expired at {format_time(until)}"
        if until is not None
        else "expired: Active without expiresAt"
    )
    return ExpiryStep(status=status.model_copy(update={"phase": "Expired", "reason": reason}))


class GrantReconciler:
    def __init__(
        self,
        *,
        store: Store,
        grants: Reflector,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._store = store
        self._grants = grants
        self._clock = clock

    async def reconcile(self, key: ObjectKey) -> Result:
        raw = self._grants.get(key)
        if raw is None:
            return Result()
        step = expiry_step(raw, self._clock())
        if step.status is None:
            return Result(requeue_after=step.requeue_after)
        wire = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        obj = admission.admit_status({"status": wire}, kind=kinds.GRANT, current=raw)
        # Pinned to the version read: an approval or revocation meanwhile wins, and the next
        # event brings the grant back here.
        obj["metadata"]["resourceVersion"] = raw["metadata"]["resourceVersion"]
        try:
            await self._store.replace_status(kinds.GRANT, obj)
        except (errors.NotFound, errors.Conflict):
            return Result()
        log.info("grant %s/%s %s", key[0], key[1], step.status.reason)
        return Result()
