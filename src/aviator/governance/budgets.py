"""Per-agent budgets: tokens per minute, tokens per day, requests in flight. A pure core.

Tokens are counted the way the gateway can know them: a request *reserves* its estimate when it
is admitted (so requests in flight count against the budget at once), and is *settled* when it
ends, with the usage the replica reported (prompt plus completion) or, when none was reported,
the estimate it reserved. A request is admitted only if what the window already holds plus its
estimate fits the limit; otherwise ``admit`` says which budget is exhausted and how long until
enough of the window has slid past for the request to fit (``retry_after_s``, at least 1).

Windows slide in buckets (1 s buckets for the minute, 5 min buckets for the day): memory per agent
is bounded by the bucket count whatever the traffic, and a bucket leaves the window as a whole,
so a window may forget tokens up to one bucket early. Only non-empty buckets are kept.

Everything takes ``now`` (seconds, any monotonic-enough clock) from the caller: this module reads
no clock, does no I/O and holds no state beyond the ``Budgets`` object the caller owns. It MUST
NOT know where limits come from (the caller passes each agent's ``Limits``) or log anything.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

__all__ = [
    "DAY",
    "MINUTE",
    "Budget",
    "Budgets",
    "Limits",
    "Refusal",
    "Reservation",
    "WindowShape",
]

Budget = Literal["tokensPerMinute", "tokensPerDay", "maxConcurrentRequests"]


@dataclass(frozen=True, slots=True)
class WindowShape:
    """A sliding window of ``buckets`` buckets of ``bucket_s`` seconds."""

    bucket_s: float
    buckets: int

    @property
    def length_s(self) -> float:
        return self.bucket_s * self.buckets


MINUTE: Final = WindowShape(bucket_s=1.0, buckets=60)
DAY: Final = WindowShape(bucket_s=300.0, buckets=288)


@dataclass(frozen=True, slots=True)
class Limits:
    """An agent's budgets (``Agent.spec.budgets``); None is no limit."""

    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_concurrent_requests: int | None = None

    @classmethod
    def from_spec(cls, budgets: Mapping[str, Any] | None) -> Limits:
        """From the wire form of ``spec.budgets`` (camelCase); anything not a positive int is no
        limit (admission refuses such values, so this only meets them in a store edited by hand)."""
        budgets = budgets or {}

        def limit(key: str) -> int | None:
            value = budgets.get(key)
            return value if type(value) is int and value > 0 else None

        return cls(
            tokens_per_minute=limit("tokensPerMinute"),
            tokens_per_day=limit("tokensPerDay"),
            max_concurrent_requests=limit("maxConcurrentRequests"),
        )

    @property
    def unlimited(self) -> bool:
        return (
            self.tokens_per_minute is None
            and self.tokens_per_day is None
            and self.max_concurrent_requests is None
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request does not fit its agent's budgets."""

    budget: Budget
    limit: int
    used: int
    """Tokens in the window (finished and in flight), or requests in flight."""
    requested: int
    """The request's estimate (tokens), or 1 (a request)."""
    retry_after_s: int
    """Seconds until the request would fit if nothing else were admitted meanwhile (at least 1).
    A request larger than the limit itself never fits: then it is the window's length."""

    @property
    def message(self) -> str:
        if self.budget == "maxConcurrentRequests":
            return (
                f"{self.used} requests of the agent are in flight, the budget allows {self.limit}"
            )
        per = "minute" if self.budget == "tokensPerMinute" else "day"
        if self.requested > self.limit:
            return (
                f"the request alone is estimated at {self.requested} tokens, more than the "
                f"budget of {self.limit} tokens per {per}"
            )
        return (
            f"{self.used} of {self.limit} tokens per {per} are used or reserved and the request "
            f"is estimated at {self.requested}"
        )


class _Window:
    """Token counts in buckets, oldest first; only non-empty buckets are kept. The newest bucket
    is held apart, in two ints, from the older ones (a deque of ``[index, tokens]``): nearly
    every call only touches the newest, and compiled (``tools/native.py``) plain ints cost a
    fraction of a list in a deque."""

    __slots__ = (
        "_current",
        "_from",
        "_has_newest",
        "_newest",
        "_newest_tokens",
        "_older",
        "_shape",
        "_until",
        "total",
    )

    def __init__(self, shape: WindowShape) -> None:
        self._shape = shape
        self._older: deque[list[int]] = deque()
        """``[bucket index, tokens]`` of the buckets before the newest, by index."""
        self._has_newest = False
        self._newest = 0
        """The newest bucket's index and tokens (when ``_has_newest``)."""
        self._newest_tokens = 0
        self.total = 0
        # The bucket of the last ``now`` seen and the times it spans: while ``now`` stays in it,
        # nothing leaves the window and its index is known (most calls, at any request rate).
        self._current = 0
        self._from = math.inf
        self._until = -math.inf

    def __len__(self) -> int:
        """Buckets kept."""
        return len(self._older) + (1 if self._has_newest else 0)

    def index(self, now: float) -> int:
        """The index of the bucket ``now`` falls in."""
        if self._from <= now < self._until:
            return self._current
        return math.floor(now / self._shape.bucket_s)

    def slide(self, now: float) -> int:
        """Forget the buckets that left the window at ``now``; return ``now``'s bucket index."""
        if self._from <= now < self._until:
            return self._current
        size = self._shape.bucket_s
        current = math.floor(now / size)
        first = current - self._shape.buckets + 1
        older = self._older
        while older and older[0][0] < first:
            self.total -= older.popleft()[1]
        if not older and self._has_newest and self._newest < first:
            self.total -= self._newest_tokens
            self._has_newest = False
        if current >= self._current or self._until == -math.inf:
            # (A clock that stepped back does not move the cached bucket back.)
            self._current, self._from, self._until = current, current * size, (current + 1) * size
        return current

    def add(self, index: int, tokens: int) -> None:
        """Add ``tokens`` (may be negative) to bucket ``index`` if it is still kept, or to a new
        one if it is the newest; an adjustment of a bucket already forgotten is dropped."""
        if self._has_newest and self._newest == index:
            self._newest_tokens += tokens
        elif not self._has_newest or self._newest < index:
            if self._has_newest:
                self._older.append([self._newest, self._newest_tokens])
            self._has_newest = True
            self._newest = index
            self._newest_tokens = tokens
        else:
            for bucket in self._older:
                if bucket[0] == index:
                    bucket[1] += tokens
                    break
            else:
                return
        self.total += tokens

    def settle(self, bucket: int, reserved: int, actual: int, now: float) -> None:
        """Replace ``reserved`` tokens counted in ``bucket`` with ``actual`` counted now."""
        current = self._current if self._from <= now < self._until else self.index(now)
        if bucket == current and self._has_newest and self._newest == current:
            # The common case: the request ended in the bucket it started in, the newest (no
            # bucket is added, so none needs to leave first).
            self._newest_tokens += actual - reserved
            self.total += actual - reserved
        else:
            self.slide(now)
            self.add(bucket, -reserved)
            self.add(current, actual)

    @property
    def length_s(self) -> float:
        return self._shape.length_s

    def retry_after(self, now: float, *, excess: int) -> float:
        """Seconds until at least ``excess`` tokens have left the window (its length if never)."""
        buckets = [(index, tokens) for index, tokens in self._older]
        if self._has_newest:
            buckets.append((self._newest, self._newest_tokens))
        freed = 0
        for index, tokens in buckets:
            freed += tokens
            if freed >= excess:
                return (index + self._shape.buckets) * self._shape.bucket_s - now
        return self._shape.length_s

    @property
    def empty(self) -> bool:
        return not self._has_newest  # (older buckets are kept only with a newer one)


class _Agent:
    __slots__ = ("day", "inflight", "minute")

    def __init__(self, minute: WindowShape, day: WindowShape) -> None:
        self.minute = _Window(minute)
        self.day = _Window(day)
        self.inflight = 0


class Reservation(NamedTuple):
    """What ``admit`` took for one request; give it back to ``settle`` when the request ends.
    (A named tuple: one is made per request, and it is cheaper to make than a dataclass.)"""

    agent: str
    estimate: int
    minute_bucket: int
    day_bucket: int


_new: Final = tuple.__new__
"""``_new(Reservation, fields)``: a third of what ``Reservation(…)`` costs (its ``__new__`` is
Python code), and one is made per request."""


class Budgets:
    """The budgets of every agent with requests in its windows. Not thread-safe: one event loop
    owns it."""

    def __init__(self, *, minute: WindowShape = MINUTE, day: WindowShape = DAY) -> None:
        self._minute = minute
        self._day = day
        self._agents: dict[str, _Agent] = {}

    def __len__(self) -> int:
        """Agents with something counted (bounded by the agents that sent requests lately)."""
        return len(self._agents)

    def admit(
        self, agent: str, limits: Limits, *, estimate: int, now: float
    ) -> Reservation | Refusal:
        """Reserve ``estimate`` tokens and one request slot for ``agent``, or say why not."""
        if estimate < 0:
            raise ValueError(f"a token estimate cannot be negative (got {estimate})")
        state = self._agents.get(agent)
        if state is None:
            state = self._agents[agent] = _Agent(self._minute, self._day)
        minute, day = state.minute, state.day
        # ``slide``, inlined for the common case: ``now`` in the bucket of the last call.
        minute_bucket = (
            minute._current if minute._from <= now < minute._until else minute.slide(now)
        )
        day_bucket = day._current if day._from <= now < day._until else day.slide(now)
        cap = limits.max_concurrent_requests
        if cap is not None and state.inflight >= cap:
            self._forget_if_idle(agent, state)
            return Refusal("maxConcurrentRequests", cap, state.inflight, 1, 1)
        limit = limits.tokens_per_minute
        if limit is not None and minute.total + estimate > limit:
            return self._refuse(agent, state, "tokensPerMinute", limit, minute, estimate, now)
        limit = limits.tokens_per_day
        if limit is not None and day.total + estimate > limit:
            return self._refuse(agent, state, "tokensPerDay", limit, day, estimate, now)
        # ``add``, inlined for the common case: the newest bucket is the current one.
        if minute._has_newest and minute._newest == minute_bucket:
            minute._newest_tokens += estimate
            minute.total += estimate
        else:
            minute.add(minute_bucket, estimate)
        if day._has_newest and day._newest == day_bucket:
            day._newest_tokens += estimate
            day.total += estimate
        else:
            day.add(day_bucket, estimate)
        state.inflight += 1
        return _new(Reservation, (agent, estimate, minute_bucket, day_bucket))

    def _refuse(
        self,
        agent: str,
        state: _Agent,
        budget: Budget,
        limit: int,
        window: _Window,
        estimate: int,
        now: float,
    ) -> Refusal:
        # A request larger than the limit never fits: then the wait is the window's length.
        excess = window.total + estimate - limit
        wait = window.length_s if estimate > limit else window.retry_after(now, excess=excess)
        self._forget_if_idle(agent, state)
        return Refusal(budget, limit, window.total, estimate, max(1, math.ceil(wait)))

    def settle(self, reservation: Reservation, *, used: int | None, now: float) -> None:
        """The request of ``reservation`` ended having used ``used`` tokens (None: unknown, the
        estimate stands). Its tokens count from now on, in place of the estimate."""
        agent, reserved, minute_bucket, day_bucket = reservation
        state = self._agents.get(agent)
        if state is None:  # cannot happen while the reservation is outstanding
            return
        if state.inflight > 0:
            state.inflight -= 1
        actual = reserved if used is None else used if used > 0 else 0
        state.minute.settle(minute_bucket, reserved, actual, now)
        state.day.settle(day_bucket, reserved, actual, now)

    def used(self, agent: str, *, now: float) -> tuple[int, int, int]:
        """(tokens in the minute window, tokens in the day window, requests in flight)."""
        state = self._agents.get(agent)
        if state is None:
            return (0, 0, 0)
        state.minute.slide(now)
        state.day.slide(now)
        counts = (state.minute.total, state.day.total, state.inflight)
        self._forget_if_idle(agent, state)
        return counts

    def _forget_if_idle(self, agent: str, state: _Agent) -> None:
        if not state.inflight and state.minute.empty and state.day.empty:
            del self._agents[agent]
