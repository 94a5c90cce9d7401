"""Circuit breakers per replica: stop sending requests to a replica that keeps failing. Pure.

A replica's breaker moves through three states (time is always passed in, never read)::

    closed ──(N consecutive failures)──► open ──(cool-down elapsed)──► half-open
       ▲                                  ▲                                │
       └──────────(trial succeeds)────────┼────────────────────────────────┤
                                          └──────(trial fails: cool-down doubles)

- A *failure* is what the proxy sees before the first byte: a refused or broken connection, a
  5xx answer, or no answer before the read timeout. Anything the replica answers below 500 is a
  success and closes the breaker at once, whatever its state.
- While *open* the replica is left out of the candidates. Its cool-down starts at
  ``cooldown_s`` and doubles with every failed trial, up to ``cooldown_max_s``; closing resets it.
- *Half-open* lets exactly one trial request through; others keep away until it settles. A trial
  that ends without an outcome (its client left) frees the slot for the next one.
- When every candidate is open (or half-open with its trial under way), the proxy does not fail
  outright: it tries the replica whose cool-down ends first, since some answer beats a certain
  error. Its outcome is recorded like any other (a success closes the breaker).

Only replicas that failed since their last success are tracked, at most ``max_tracked`` of them
(the longest-tracked is forgotten first), so replicas that come and go cannot grow memory.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from aviator.gateway.endpoints import Endpoint
from aviator.settings import GatewaySettings

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreakers"]


class BreakerState(enum.IntEnum):
    """A breaker's state; the value is what the ``aviator_gateway_breaker_state`` gauge shows."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    """Consecutive failures that open a closed breaker."""
    cooldown_s: float = 1.0
    """First cool-down after opening (seconds); doubles with every failed trial."""
    cooldown_max_s: float = 30.0
    """Longest cool-down (seconds)."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("failures must be at least 1")
        if not 0 < self.cooldown_s <= self.cooldown_max_s:
            raise ValueError("need 0 < cooldown_s <= cooldown_max_s")

    def cooldown(self, opened: int) -> float:
        """The cool-down after the ``opened``-th opening in a row (1 for the first)."""
        return min(self.cooldown_s * 2.0 ** min(opened - 1, 62), self.cooldown_max_s)


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    """Consecutive failures (while closed)."""
    opened: int = 0
    """Openings since the breaker last closed; 0 while closed."""
    retry_at: float = 0.0
    """When an open breaker turns half-open."""
    trial: bool = False
    """A half-open trial request is under way."""

    def state(self, now: float) -> BreakerState:
        if not self.opened:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self.retry_at else BreakerState.HALF_OPEN


class CircuitBreakers:
    """One breaker per replica key."""

    __slots__ = ("_entries", "max_tracked", "policy")

    def __init__(self, policy: BreakerPolicy | None = None, *, max_tracked: int = 4096) -> None:
        self.policy = policy or BreakerPolicy()
        self.max_tracked = max_tracked
        self._entries: dict[str, _Entry] = {}

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> CircuitBreakers:
        return cls(
            BreakerPolicy(
                failures=settings.breaker_failures,
                cooldown_s=settings.breaker_cooldown_s,
                cooldown_max_s=settings.breaker_cooldown_max_s,
            )
        )

    def state(self, key: str, now: float) -> BreakerState:
        entry = self._entries.get(key)
        return BreakerState.CLOSED if entry is None else entry.state(now)

    def states(self, now: float) -> Iterator[tuple[str, BreakerState]]:
        """(key, state) of every tracked replica (untracked ones are closed)."""
        for key, entry in self._entries.items():
            yield key, entry.state(now)

    def allows(self, key: str, now: float) -> bool:
        """Whether a request may go to ``key``: closed, or half-open with no trial under way."""
        entry = self._entries.get(key)
        if entry is None:
            return True
        state = entry.state(now)
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not entry.trial)

    def usable(
        self,
        candidates: Sequence[Endpoint],
        *,
        now: float,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Sequence[Endpoint]:
        """The candidates not in ``exclude`` whose breakers allow a request.

        When there are none but some candidates are not excluded, the one whose cool-down ends
        first (then: the first in ``candidates``) is returned alone, rather than nothing.
        """
        if not self._entries and not exclude:
            return candidates  # the usual case costs no copy
        allowed: list[Endpoint] = []
        fallback: Endpoint | None = None
        fallback_at = 0.0
        for endpoint in candidates:
            if endpoint.key in exclude:
                continue
            if self.allows(endpoint.key, now):
                allowed.append(endpoint)
            elif not allowed:
                retry_at = self._entries[endpoint.key].retry_at
                if fallback is None or retry_at < fallback_at:
                    fallback, fallback_at = endpoint, retry_at
        if allowed or fallback is None:
            return allowed
        return (fallback,)

    def attempt(self, key: str, now: float) -> bool:
        """A request is being sent to ``key``; True if it is the half-open trial.

        A trial's sender MUST report it with ``succeeded``, ``failed`` or ``abandoned``.
        """
        entry = self._entries.get(key)
        if entry is None or entry.trial or entry.state(now) is not BreakerState.HALF_OPEN:
            return False
        entry.trial = True
        return True

    def succeeded(self, key: str) -> bool:
        """``key`` answered: close its breaker. True if it was not closed before."""
        entry = self._entries.pop(key, None)
        return entry is not None and entry.opened > 0

    def failed(self, key: str, now: float) -> bool:
        """``key`` failed before the first byte. True if this opened its breaker.

        Failures while open (requests sent before it opened, or a last-resort attempt) change
        nothing; a failure once the cool-down is over (the trial's) re-opens it for longer.
        """
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_tracked:
                del self._entries[next(iter(self._entries))]
            entry = self._entries[key] = _Entry()
        state = entry.state(now)
        if state is BreakerState.OPEN:
            return False
        entry.trial = False
        if state is BreakerState.CLOSED:
            entry.failures += 1
            if entry.failures < self.policy.failures:
                return False
        entry.opened += 1
        entry.retry_at = now + self.policy.cooldown(entry.opened)
        return True

    def abandoned(self, key: str) -> None:
        """A trial ended without an outcome (its client left): the next request may try."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.trial = False
