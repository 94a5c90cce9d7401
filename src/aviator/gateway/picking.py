"""What routing is given and what it answers: the request, in-flight counts, the picker protocol.

A picker chooses one replica among a model's ready candidates. The proxy holds one ``Picker`` and
calls ``await picker.pick(candidates, request=..., exclude=...)`` for every attempt; which policy
is behind it (the weighted pipeline of :mod:`aviator.gateway.routing`, or least-in-flight) is not
its business. Whatever a picker needs (scraped engine metrics, a prefix index, in-flight counts) is
kept in memory by others and read here, never fetched per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

from aviator.gateway.endpoints import Endpoint

__all__ = ["InFlight", "LeastInFlight", "Picker", "RouteRequest", "least_inflight"]


@dataclass(slots=True)
class RouteRequest:
    """What a picker may know about the request being routed (never change it).

    Not a frozen dataclass: one is made per request, and a frozen one takes twice as long to
    make."""

    model: str
    operation: str
    """OTel GenAI operation name: ``chat``, ``text_completion`` or ``embeddings``."""
    body: Mapping[str, Any]
    """The parsed JSON body (read it, never change it: the original bytes are forwarded)."""
    session: str | None = None
    """The client's ``x-session-id``, for session affinity."""


class Picker(Protocol):
    async def pick(
        self,
        candidates: Sequence[Endpoint],
        *,
        request: RouteRequest,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Endpoint | None:
        """One of ``candidates`` whose key is not in ``exclude``, or None if there is none."""
        ...


class InFlight:
    """Requests this gateway has sent to each endpoint key that have not finished yet."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def inflight(self, key: str) -> int:
        return self._counts.get(key, 0)

    def acquire(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def release(self, key: str) -> None:
        left = self._counts.get(key, 0) - 1
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


def least_inflight(
    candidates: Sequence[Endpoint],
    *,
    inflight: InFlight,
    exclude: AbstractSet[str] = frozenset(),
    turn: int = 0,
) -> Endpoint | None:
    """A candidate with the fewest in-flight requests; ``turn`` chooses among equals.

    Ties are resolved by position in ``candidates`` (sorted by key in the endpoint table) offset
    by ``turn``, so a caller that advances ``turn`` spreads load over idle equal replicas.
    """
    best = -1
    ties: list[Endpoint] = []
    for endpoint in candidates:
        if endpoint.key in exclude:
            continue
        load = inflight.inflight(endpoint.key)
        if best < 0 or load < best:
            best = load
            ties = [endpoint]
        elif load == best:
            ties.append(endpoint)
    if not ties:
        return None
    return ties[turn % len(ties)]


class LeastInFlight:
    """Least-in-flight with a rotating tie-break (a ``Picker``)."""

    __slots__ = ("_inflight", "_turn")

    def __init__(self, inflight: InFlight) -> None:
        self._inflight = inflight
        self._turn = 0

    async def pick(
        self,
        candidates: Sequence[Endpoint],
        *,
        request: RouteRequest,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Endpoint | None:
        turn = self._turn
        self._turn = turn + 1
        return least_inflight(candidates, inflight=self._inflight, exclude=exclude, turn=turn)
