"""``InferenceLane``: the decisions of one family of gateway requests, by class of the two values
that vary per request. Pure: no Cedar, no I/O.

A gateway sees the same agent, action, deployment, model, priority and declared intent over and
over; only the token estimate and the hour change from one request to the next. The compiled
set's plan (``engine.value_plan``) says how its statements read those two, so the lane keeps one
decision per class of them and a request costs a comparison or two and one lookup. The lane does
not decide anything itself: a class it has not seen is decided by the ``decide`` it was made
with (``CompiledPolicies.decide_inference``, its checks and messages included).

Its own module so that it can be compiled with mypyc (``tools/native.py``) apart from the engine,
whose functions the tests replace.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Final, Generic, TypeVar

__all__ = ["InferenceLane", "among"]

D = TypeVar("D")

_CLASSES: Final = 4096
"""Decisions a lane remembers (classes of two values: a few dozen in practice)."""
_LONG_MAX: Final = 2**63 - 1
_HOURS: Final = 23


def among(cuts: tuple[int, ...], value: int) -> int:
    """The class of a Long compared only with the literals ``cuts`` (sorted): its position among
    them, and whether it equals the literal there (see ``engine.context_class``)."""
    at = bisect_left(cuts, value)
    return 2 * at + (1 if at < len(cuts) and cuts[at] == value else 0)


class InferenceLane(Generic[D]):
    """The decisions ``decide(estimated_tokens, hour)`` gives, remembered per class. ``tokens``
    and ``hour`` say how each value is read: the literals it is compared with (its class is its
    place among them, ``among``; none, ``()``: no statement reads it, every value is one class),
    or None when its exact value decides. ``compiled`` is what made it (the lane is dropped with
    it)."""

    __slots__ = ("_decide", "_decisions", "_hour", "_tokens", "compiled")

    def __init__(
        self,
        compiled: object,
        *,
        decide: Callable[[int, int], D],
        tokens: tuple[int, ...] | None,
        hour: tuple[int, ...] | None,
    ) -> None:
        self.compiled = compiled
        self._decide = decide
        self._tokens = tokens
        self._hour = hour
        self._decisions: dict[tuple[int, int], D] = {}

    def decide(self, estimated_tokens: int, hour: int) -> D:
        """The decision ``decide`` gives with these two values. (Compiled, a bool passed for
        either is read as its int, as mypyc converts it; the gateway passes ints.)"""
        if not (
            type(estimated_tokens) is int
            and 0 <= estimated_tokens <= _LONG_MAX
            and type(hour) is int
            and 0 <= hour <= _HOURS
        ):
            return self._decide(estimated_tokens, hour)  # its checks and messages
        cuts = self._tokens
        tokens = estimated_tokens if cuts is None else among(cuts, estimated_tokens) if cuts else 0
        cuts = self._hour
        hours = hour if cuts is None else among(cuts, hour) if cuts else 0
        key = (tokens, hours)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(estimated_tokens, hour)
            if len(self._decisions) >= _CLASSES:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision
