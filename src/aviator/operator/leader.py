"""Leader election over a ``coordination.k8s.io/v1`` Lease, so two operator replicas never both
reconcile.

Why a Lease rather than kopf's peering: peering needs its own CRDs (``KopfPeering``) and only
pauses operators of lower priority, so two replicas of equal priority both run; a Lease is the
cluster's standard lock (what kube-controller-manager uses), needs nothing but the namespaced
Role the install bundle already grants, and gives one holder at a time with optimistic
concurrency (``resourceVersion``) on every write.

:func:`decide` is the pure rule (client-go's): a lease is free when its holder is ours, empty,
or has not renewed for ``leaseDurationSeconds`` as *this* process measured it (a monotonic clock
from when the record last changed, so clock skew between nodes does not matter).
:class:`LeaderElector` is the shell: it polls the Lease, writes what :func:`decide` says, runs
the leader's work while it holds the Lease, and stops it (raising :class:`LeadershipLost`)
when it cannot renew in time, so a replica that lost the lock never acts on stale leadership;
the process exits and its Pod restarts as a follower. The elector MUST NOT touch anything but
its one Lease.

The guarantee, and why it holds: a follower takes over only after it has seen the Lease
unchanged for ``duration_s``, counted from when it read the last renewal. That renewal reached
the server after the leader *started* the round that wrote it, so the leader counts from that
start (not from when the answer arrived, which may be much later) and gives every round only
what is left of ``renew_deadline_s`` (client-go's RenewDeadline, two thirds of the duration by
default): a round that has not renewed by then is cancelled, however long its requests would
have hung (one request may take 30 s), and the leader's work is stopped. The margin
``duration_s - renew_deadline_s`` is for stopping the work; the two never lead at once as long
as stopping takes less than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aviator.api import errors
from aviator.api.meta import now_utc
from aviator.operator.objects import ObjectApi
from aviator.operator.resources import LEASES, ObjectRef

__all__ = ["LeaderElector", "LeadershipLost", "LeaseDecision", "decide", "micro_time", "release"]

log = logging.getLogger("aviator.operator.leader")


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed within its duration; the leader's work was stopped."""


def micro_time(now: datetime) -> str:
    """A Kubernetes ``MicroTime``: RFC 3339 UTC with microseconds."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseDecision:
    action: Literal["create", "renew", "acquire", "follow"]
    body: dict[str, Any] | None
    """The Lease to write (create, or patch conditionally on its resourceVersion)."""
    holder: str
    """Who holds the lease after this decision (when the write succeeds)."""


def _lease(
    *, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": LEASES.api_version,
        "kind": LEASES.kind,
        "metadata": meta,
        "spec": dict(spec),
    }


def decide(
    lease: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    identity: str,
    duration_s: int,
    unchanged_for_s: float,
    now: datetime,
) -> LeaseDecision:
    """What to do with the Lease as read: create it, renew ours, take over an expired or
    released one, or follow its live holder. ``unchanged_for_s`` is how long (on this process's
    monotonic clock) the holder and renewTime have stayed as they are."""
    stamp = micro_time(now)
    if lease is None:
        spec = {
            "holderIdentity": identity,
            "leaseDurationSeconds": duration_s,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 0,
        }
        return LeaseDecision(
            "create",
            _lease(namespace=namespace, name=name, spec=spec, resource_version=None),
            identity,
        )
    spec = dict(lease.get("spec") or {})
    version = (lease.get("metadata") or {}).get("resourceVersion")
    holder = str(spec.get("holderIdentity") or "")
    their_duration = spec.get("leaseDurationSeconds")
    expiry = (
        their_duration if isinstance(their_duration, int) and their_duration > 0 else duration_s
    )
    if holder == identity:
        spec.update({"renewTime": stamp, "leaseDurationSeconds": duration_s})
        return LeaseDecision(
            "renew",
            _lease(namespace=namespace, name=name, spec=spec, resource_version=version),
            identity,
        )
    if holder and unchanged_for_s < expiry:
        return LeaseDecision("follow", None, holder)
    transitions = spec.get("leaseTransitions")
    spec.update(
        {
            "holderIdentity": identity,
            "leaseDurationSeconds": duration_s,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": (transitions if isinstance(transitions, int) else 0) + 1,
        }
    )
    return LeaseDecision(
        "acquire",
        _lease(namespace=namespace, name=name, spec=spec, resource_version=version),
        identity,
    )


def release(lease: Mapping[str, Any], *, identity: str, now: datetime) -> dict[str, Any] | None:
    """The Lease with its holder cleared, so a follower takes over at once; None when it is not
    ours to release."""
    spec = dict(lease.get("spec") or {})
    if spec.get("holderIdentity") != identity:
        return None
    meta = lease.get("metadata") or {}
    spec.update({"holderIdentity": "", "renewTime": micro_time(now), "leaseDurationSeconds": 1})
    return _lease(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        spec=spec,
        resource_version=meta.get("resourceVersion"),
    )


class LeaderElector:
    """Holds the Lease ``namespace/name`` for ``identity`` and runs ``lead()`` while it does."""

    def __init__(
        self,
        *,
        api: ObjectApi,
        namespace: str,
        name: str,
        identity: str,
        duration_s: int = 15,
        retry_s: float = 2.0,
        renew_deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = now_utc,
    ) -> None:
        if retry_s * 2 >= duration_s:
            raise ValueError("retry_s must be well under half of duration_s to renew in time")
        deadline = duration_s * 2 / 3 if renew_deadline_s is None else renew_deadline_s
        if not retry_s < deadline < duration_s:
            raise ValueError("renew_deadline_s must lie between retry_s and duration_s")
        self._api = api
        self._renew_deadline_s = deadline
        self._ref = ObjectRef(LEASES.api_version, LEASES.kind, namespace, name)
        self._identity = identity
        self._duration_s = duration_s
        self._retry_s = retry_s
        self._clock = clock
        self._wall = wall
        self.leading = False
        self.last_contact: float | None = None
        """Monotonic time of the last successful read or write of the Lease (liveness)."""

    async def _try(self, record: list[Any]) -> bool:
        """One round: read, decide, write. True when we hold the lease afterwards."""
        lease = await self._api.get(self._ref)
        self.last_contact = self._clock()
        spec = (lease or {}).get("spec") or {}
        seen = (spec.get("holderIdentity"), spec.get("renewTime"))
        if seen != record[0]:
            record[0], record[1] = seen, self._clock()
        decision = decide(
            lease,
            namespace=self._ref.namespace or "",
            name=self._ref.name,
            identity=self._identity,
            duration_s=self._duration_s,
            unchanged_for_s=self._clock() - record[1],
            now=self._wall(),
        )
        if decision.body is None:
            return False
        try:
            if decision.action == "create":
                await self._api.create(decision.body)
            else:
                await self._api.patch(decision.body)
        except (errors.AlreadyExists, errors.Conflict):
            return False  # another replica wrote first: read again next round
        if decision.action == "acquire":
            log.info("acquired lease %s (leader: %s)", self._ref, self._identity)
        return True

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Elect, then run ``lead()`` while leading. Returns when ``lead()`` returns; raises
        :class:`LeadershipLost` when the lease slips away; releases the lease on the way out."""
        record: list[Any] = [None, self._clock()]
        renewed_at: float | None = None
        """When the round that last renewed (or acquired) the Lease started."""
        work: asyncio.Task[None] | None = None
        try:
            while True:
                started = self._clock()
                # A leader's round gets what is left until its renew deadline; a follower's the
                # whole deadline, so a Lease it acquires is fresh when its work starts.
                budget = self._renew_deadline_s - (
                    started - renewed_at if work is not None and renewed_at is not None else 0.0
                )
                holding: bool | None
                try:
                    # ``asyncio.timeout``, not ``wait_for``: on 3.11 ``wait_for`` drops a
                    # cancellation that arrives as the request completes, and the elector would
                    # then never stop (seen as a follower polling the Lease forever).
                    async with asyncio.timeout(max(budget, 0.0)):
                        holding = await self._try(record)
                except TimeoutError:
                    log.warning("lease %s: no answer within %.1f s", self._ref, budget)
                    holding = False if work is None else None
                except errors.ApiError as exc:
                    log.warning("lease %s: %s", self._ref, exc)
                    holding = False if renewed_at is None else None  # None: unknown, keep trying
                if holding:
                    renewed_at = started
                if work is not None and (
                    holding is False
                    or renewed_at is None
                    or self._clock() - renewed_at >= self._renew_deadline_s
                ):
                    raise LeadershipLost(f"lost lease {self._ref}")
                if holding and work is None:
                    self.leading = True
                    work = asyncio.ensure_future(lead())
                if work is not None:
                    done, _ = await asyncio.wait({work}, timeout=self._retry_s)
                    if done:
                        await work  # the leader's work ended (or failed): so do we
                        return
                else:
                    await asyncio.sleep(self._retry_s)
        finally:
            self.leading = False
            if work is not None and not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
            if renewed_at is not None:
                # In a task of its own: this one may be cancelled (shutdown), and a request made
                # from a task that is being cancelled can stall until its timeout.
                release_task = asyncio.create_task(self._release())
                await asyncio.wait({release_task}, timeout=self._retry_s * 2)
                release_task.cancel()  # unanswered: the Lease expires instead; leave no request

    async def _release(self) -> None:
        with contextlib.suppress(errors.ApiError):
            lease = await self._api.get(self._ref)
            body = (
                None if lease is None else release(lease, identity=self._identity, now=self._wall())
            )
            if body is not None:
                await self._api.patch(body)
                log.info("released lease %s", self._ref)
