"""Choosing a replica for a request. Pure: no I/O, no clock, no awaits.

Every picker shares one synchronous signature, ``Picker.pick(candidates, *, request, stats,
exclude)``, so the proxy never needs to know which picker it holds. Later scorers (prefix-cache
affinity, queue depth, KV-cache utilization) read more of ``request`` and more of ``stats``; they
stay synchronous because whatever they need (scraped engine metrics, a prefix index) is kept in
memory by background tasks, never fetched per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

from aviator.gateway.endpoints import Endpoint

__all__ = ["InFlight", "LeastInFlight", "LoadView", "Picker", "RouteRequest", "least_inflight"]


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a picker may know about the request being routed."""

    model: str
    operation: str
    """OTel GenAI operation name: ``chat``, ``text_completion`` or ``embeddings``."""
    body: Mapping[str, Any]
    """The parsed JSON body (read it, never change it: the original bytes are forwarded)."""


class LoadView(Protocol):
    """Load signals per endpoint key, as pickers see them."""

    def inflight(self, key: str) -> int:
        """Requests this gateway has sent to ``key`` that have not finished yet."""
        ...


class Picker(Protocol):
    def pick(
        self,
        candidates: Sequence[Endpoint],
        *,
        request: RouteRequest,
        stats: LoadView,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Endpoint | None:
        """One of ``candidates`` whose key is not in ``exclude``, or None if there is none."""
        ...


class InFlight:
    """In-flight request counts per endpoint key (a ``LoadView``)."""

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
    stats: LoadView,
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
        load = stats.inflight(endpoint.key)
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

    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = 0

    def pick(
        self,
        candidates: Sequence[Endpoint],
        *,
        request: RouteRequest,
        stats: LoadView,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Endpoint | None:
        turn = self._turn
        self._turn = turn + 1
        return least_inflight(candidates, stats=stats, exclude=exclude, turn=turn)
