"""The routing pipeline: filters, then weighted scorers, then the best score wins.

The shape is llm-d's endpoint picker's (reference/inference.md §1): every plugin is an object
with one async method over the same arguments, ``(context, candidates)`` — a filter returns the
candidates it keeps, a scorer one score in [0, 1] per candidate, the picker one candidate. The
final score is the sum of weight * score; the highest wins, ties go round-robin. Which scorers run, with
which weights, comes per request from the model's ModelDeployment (``spec.routing``, via the
model directory), so a change there applies to the next request.

Scorers (all read in-memory state; none does I/O):

- ``prefix-cache``: leading prompt blocks the replica was recently sent / prompt blocks
  (:mod:`aviator.gateway.prefix`); the chosen replica is then recorded as holding them.
- ``queue-depth``: ``(max - waiting) / (max - min)`` over the candidates' scraped waiting queues
  (all equal → 1); a replica without fresh metrics scores 0.
- ``kv-cache``: ``1 - KV-cache usage``; without fresh metrics 0.
- ``in-flight``: like queue-depth over the requests this gateway has in flight to each replica.
- ``session``: 1 for the replica that last served the request's ``x-session-id``, 0 otherwise;
  sessions are remembered for ``session_ttl_s`` (bounded LRU).

A model routed ``round-robin`` (no scorers) takes each candidate in turn.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

from aviator.gateway.endpoints import Endpoint
from aviator.gateway.models import DEFAULT_ROUTE, ModelRoute
from aviator.gateway.picking import InFlight, RouteRequest
from aviator.gateway.prefix import BLOCK_CHARS, PrefixIndex, prompt_blocks, prompt_text
from aviator.gateway.scrape import EngineSignals

__all__ = [
    "Filter",
    "InFlightScorer",
    "KvCacheScorer",
    "PrefixCacheScorer",
    "QueueDepthScorer",
    "RouteContext",
    "Router",
    "Scorer",
    "SessionScorer",
]


@dataclass(slots=True)
class RouteContext:
    """One routing decision's inputs, and what scorers learn on the way."""

    request: RouteRequest
    exclude: AbstractSet[str] = frozenset()
    blocks: tuple[int, ...] | None = None
    """The prompt's block hashes, computed once by the prefix scorer."""


class Filter(Protocol):
    async def filter(
        self, context: RouteContext, candidates: Sequence[Endpoint]
    ) -> Sequence[Endpoint]: ...


class Scorer(Protocol):
    """A scorer whose ``picked`` does nothing may say so with a class attribute ``learns =
    False``: the pipeline then does not call it."""

    name: str

    async def score(
        self, context: RouteContext, candidates: Sequence[Endpoint]
    ) -> Sequence[float]: ...

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        """The pipeline chose ``endpoint`` (scorers that learn from decisions record it)."""
        ...


class ExcludeFilter:
    """Drops the replicas already tried for this request."""

    async def filter(
        self, context: RouteContext, candidates: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        if not context.exclude:
            return candidates
        return [c for c in candidates if c.key not in context.exclude]


def _min_max(values: Sequence[float]) -> list[float]:
    """``(max - v) / (max - min)``: the least loaded 1, the most 0, all equal 1."""
    high, low = max(values), min(values)
    if high == low:
        return [1.0] * len(values)
    return [(high - v) / (high - low) for v in values]


class QueueDepthScorer:
    name = "queue-depth"
    learns = False

    def __init__(self, signals: EngineSignals) -> None:
        self._signals = signals

    async def score(self, context: RouteContext, candidates: Sequence[Endpoint]) -> list[float]:
        loads = [self._signals.fresh(c.key) for c in candidates]
        known = [load.waiting for load in loads if load is not None]
        if not known:
            return [0.0] * len(candidates)
        scaled = iter(_min_max(known))
        return [0.0 if load is None else next(scaled) for load in loads]

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        return None


class KvCacheScorer:
    name = "kv-cache"
    learns = False

    def __init__(self, signals: EngineSignals) -> None:
        self._signals = signals

    async def score(self, context: RouteContext, candidates: Sequence[Endpoint]) -> list[float]:
        out = []
        for c in candidates:
            load = self._signals.fresh(c.key)
            out.append(0.0 if load is None else max(0.0, 1.0 - min(load.kv_cache_usage, 1.0)))
        return out

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        return None


class InFlightScorer:
    name = "in-flight"
    learns = False

    def __init__(self, inflight: InFlight) -> None:
        self._inflight = inflight

    async def score(self, context: RouteContext, candidates: Sequence[Endpoint]) -> list[float]:
        return _min_max([float(self._inflight.inflight(c.key)) for c in candidates])

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        return None


class PrefixCacheScorer:
    name = "prefix-cache"
    learns = True

    def __init__(self, index: PrefixIndex) -> None:
        self._index = index

    def _blocks(self, context: RouteContext) -> tuple[int, ...]:
        blocks = context.blocks
        if blocks is None:
            request = context.request
            text = prompt_text(request.operation, request.body)
            blocks = context.blocks = prompt_blocks(text) if len(text) >= BLOCK_CHARS else ()
        return blocks

    async def score(self, context: RouteContext, candidates: Sequence[Endpoint]) -> list[float]:
        blocks = self._blocks(context)
        if not blocks:
            return [0.0] * len(candidates)
        return [self._index.match(c.key, blocks) / len(blocks) for c in candidates]

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        blocks = self._blocks(context)
        if blocks:  # (a short prompt has none: nothing to record)
            self._index.record(endpoint.key, blocks)


class SessionScorer:
    name = "session"
    learns = True

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def owner(self, session: str) -> str | None:
        found = self._sessions.get(session)
        if found is None:
            return None
        if self._clock() - found[1] > self._ttl_s:
            del self._sessions[session]
            return None
        return found[0]

    async def score(self, context: RouteContext, candidates: Sequence[Endpoint]) -> list[float]:
        session = context.request.session
        owner = self.owner(session) if session else None
        return [1.0 if c.key == owner else 0.0 for c in candidates]

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        session = context.request.session
        if not session:
            return
        self._sessions[session] = (endpoint.key, self._clock())
        self._sessions.move_to_end(session)
        while len(self._sessions) > self._capacity:
            self._sessions.popitem(last=False)


class Router:
    """The pipeline as a ``Picker``: the scorers and weights of each request's model route."""

    def __init__(
        self,
        *,
        scorers: Sequence[Scorer],
        routes: Callable[[str], ModelRoute | None],
        filters: Sequence[Filter] = (),
    ) -> None:
        """``routes`` maps a model name to its route (the model directory's ``route``)."""
        self._scorers: Mapping[str, Scorer] = {s.name: s for s in scorers}
        self._filters: tuple[Filter, ...] = (ExcludeFilter(), *filters)
        self._more_filters = tuple(filters)
        self._routes = routes
        self._turn = 0
        self._plans: dict[
            tuple[tuple[str, float], ...],
            tuple[tuple[tuple[Scorer, float], ...], tuple[Scorer, ...]],
        ] = {}
        """Per route's scorer list: the (scorer, weight) pairs that exist, and those that learn."""

    def _plan(
        self, scorers: tuple[tuple[str, float], ...]
    ) -> tuple[tuple[tuple[Scorer, float], ...], tuple[Scorer, ...]]:
        plan = self._plans.get(scorers)
        if plan is None:
            named = self._scorers
            weighted = tuple((named[n], w) for n, w in scorers if n in named)
            learners = tuple(s for s, _ in weighted if getattr(s, "learns", True))
            if len(self._plans) >= 256:  # (routes come from ModelDeployments: few)
                self._plans.clear()
            plan = self._plans[scorers] = (weighted, learners)
        return plan

    async def pick(
        self,
        candidates: Sequence[Endpoint],
        *,
        request: RouteRequest,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Endpoint | None:
        context = RouteContext(request, exclude)
        if exclude:
            steps = self._filters
        else:  # the exclude filter would pass every candidate: not even called
            if not candidates:
                return None
            steps = self._more_filters
        for step in steps:
            candidates = await step.filter(context, candidates)
            if not candidates:
                return None
        route = self._routes(request.model) or DEFAULT_ROUTE
        turn = self._turn
        self._turn = turn + 1
        weighted, learners = self._plan(route.scorers)
        if not weighted or len(candidates) == 1:
            chosen = candidates[turn % len(candidates)]
        else:
            totals = [0.0] * len(candidates)
            for scorer, weight in weighted:
                scores = await scorer.score(context, candidates)
                for i, value in enumerate(scores):
                    totals[i] += weight * value
            best = max(totals)
            ties = [c for c, total in zip(candidates, totals, strict=True) if best - total < 1e-9]
            chosen = ties[turn % len(ties)]
        for scorer in learners:
            scorer.picked(context, chosen)
        return chosen
