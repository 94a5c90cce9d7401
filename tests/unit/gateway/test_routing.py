"""The routing pipeline: each scorer, the weighted sum, ties, presets from the model directory."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.enginemetrics import EngineLoad
from aviator.gateway.endpoints import Endpoint
from aviator.gateway.models import ModelDirectory, ModelRoute
from aviator.gateway.picking import InFlight, RouteRequest
from aviator.gateway.prefix import PrefixIndex
from aviator.gateway.routing import (
    InFlightScorer,
    KvCacheScorer,
    PrefixCacheScorer,
    QueueDepthScorer,
    RouteContext,
    Router,
    SessionScorer,
)
from aviator.gateway.scrape import EngineSignals

SYSTEM = "Answer as the ACME support desk would, politely and precisely. " * 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(key=f"default/r{i}", model="m", url=f"http://h:{i}") for i in range(n)]


def chat(question: str, *, session: str | None = None) -> RouteRequest:
    body = {"model": "m", "messages": [{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": question}]}  # fmt: skip
    return RouteRequest(model="m", operation="chat", body=body, session=session)


def context(request: RouteRequest | None = None) -> RouteContext:
    return RouteContext(request=request or chat("hi"))


class Pipeline:
    """A router with every scorer over shared state, routed by a fixed route."""

    def __init__(self, scorers: tuple[tuple[str, float], ...]) -> None:
        self.clock = Clock()
        self.signals = EngineSignals(stale_after_s=1.0, clock=self.clock)
        self.inflight = InFlight()
        self.index = PrefixIndex()
        self.sessions = SessionScorer(clock=self.clock)
        route = ModelRoute(
            deployment="default/m", preset="custom", scorers=scorers, priority="standard"
        )
        self.router = Router(
            scorers=[PrefixCacheScorer(self.index), QueueDepthScorer(self.signals),
                     KvCacheScorer(self.signals), InFlightScorer(self.inflight), self.sessions],
            routes=lambda model: route,
        )  # fmt: skip

    def load(self, key: str, *, waiting: float = 0, kv: float = 0.0) -> None:
        self.signals.put(key, EngineLoad(running=0, waiting=waiting, kv_cache_usage=kv))


async def test_queue_depth_is_min_max_scaled_and_stale_counts_as_saturated() -> None:
    p = Pipeline((("queue-depth", 1.0),))
    eps = endpoints(4)
    p.load("default/r0", waiting=0)
    p.load("default/r1", waiting=5)
    p.load("default/r2", waiting=10)
    scorer = QueueDepthScorer(p.signals)
    assert await scorer.score(context(), eps) == [1.0, 0.5, 0.0, 0.0]  # r3: never sampled
    p.clock.now += 2  # every sample is stale now
    assert await scorer.score(context(), eps) == [0.0] * 4
    p.load("default/r0", waiting=3)
    p.load("default/r1", waiting=3)
    assert await scorer.score(context(), eps[:2]) == [1.0, 1.0]  # all equal


async def test_kv_cache_scores_free_cache() -> None:
    p = Pipeline((("kv-cache", 1.0),))
    p.load("default/r0", kv=0.25)
    p.load("default/r1", kv=1.5)  # clamped
    assert await KvCacheScorer(p.signals).score(context(), endpoints(3)) == [0.75, 0.0, 0.0]


async def test_in_flight_prefers_the_idle() -> None:
    p = Pipeline((("in-flight", 1.0),))
    for _ in range(4):
        p.inflight.acquire("default/r1")
    p.inflight.acquire("default/r2")
    assert await InFlightScorer(p.inflight).score(context(), endpoints(3)) == [1.0, 0.0, 0.75]


async def test_prefix_affinity_sends_a_shared_system_prompt_back_to_the_same_replica() -> None:
    p = Pipeline((("prefix-cache", 3.0), ("in-flight", 1.0)))
    eps = endpoints(4)
    first = await p.router.pick(eps, request=chat("Where is my parcel?"))
    assert first is not None
    for question in ("Cancel my order.", "Do you ship to Norway?", "Reset my password."):
        assert await p.router.pick(eps, request=chat(question)) == first
    # Load shifts the balance only when it outweighs the prefix: 3 x ~0.95 vs 1 x 1.0.
    for _ in range(10):
        p.inflight.acquire(first.key)
    assert await p.router.pick(eps, request=chat("Another question")) == first


async def test_short_prompts_have_no_blocks_and_fall_back_to_load() -> None:
    p = Pipeline((("prefix-cache", 3.0), ("in-flight", 1.0)))
    short = RouteRequest(
        model="m", operation="chat", body={"messages": [{"role": "user", "content": "hi"}]}
    )
    p.inflight.acquire("default/r0")
    assert await p.router.pick(endpoints(2), request=short) == endpoints(2)[1]


async def test_session_affinity_follows_x_session_id_until_it_expires() -> None:
    p = Pipeline((("session", 2.0), ("in-flight", 1.0)))
    eps = endpoints(3)
    p.inflight.acquire("default/r0")
    first = await p.router.pick(eps, request=chat("a", session="s-1"))
    assert first is not None and first.key != "default/r0"
    for _ in range(3):
        p.inflight.acquire(first.key)  # the busiest now: 2 x 1 + 0 still beats 0 + 1
    p.inflight.release("default/r0")
    assert await p.router.pick(eps, request=chat("b", session="s-1")) == first
    p.clock.now += 301
    assert p.sessions.owner("s-1") is None


async def test_round_robin_takes_turns_and_respects_exclusions() -> None:
    p = Pipeline(())
    eps = endpoints(3)
    picks = [await p.router.pick(eps, request=chat("x")) for _ in range(6)]
    assert Counter(e.key for e in picks if e) == {e.key: 2 for e in eps}
    assert await p.router.pick(eps, request=chat("x"), exclude={e.key for e in eps}) is None
    only = await p.router.pick(eps, request=chat("x"), exclude={"default/r0", "default/r1"})
    assert only == eps[2]


async def test_the_directory_route_applies_per_request() -> None:
    directory = ModelDirectory()
    inflight = InFlight()
    router = Router(scorers=[InFlightScorer(inflight)], routes=directory.route)
    eps = endpoints(2)
    inflight.acquire("default/r0")
    # No ModelDeployment seen: the default route (prefix-aware, with in-flight) applies.
    assert await router.pick(eps, request=chat("x")) == eps[1]
    directory.apply("ADDED", {"metadata": {"name": "m", "namespace": "default"},
                              "spec": {"model": {"name": "m"}, "routing": {"preset": "round-robin"}}})  # fmt: skip
    picks = {(await router.pick(eps, request=chat("x"))).key for _ in range(2)}  # type: ignore[union-attr]
    assert picks == {"default/r0", "default/r1"}


@settings(max_examples=50)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=6),
    st.lists(st.floats(0, 1), min_size=6, max_size=6),
    st.sets(st.integers(0, 5)),
)
async def test_the_pick_maximises_the_weighted_sum_and_never_an_excluded_replica(
    waiting: list[int], kv: list[float], excluded: set[int]
) -> None:
    p = Pipeline((("queue-depth", 2.0), ("kv-cache", 2.0), ("in-flight", 1.0)))
    eps = endpoints(len(waiting))
    for e, w, k in zip(eps, waiting, kv, strict=False):
        p.load(e.key, waiting=w, kv=k)
    exclude = {f"default/r{i}" for i in excluded}
    chosen = await p.router.pick(eps, request=chat("q"), exclude=exclude)
    allowed = [e for e in eps if e.key not in exclude]
    if not allowed:
        assert chosen is None
        return
    assert chosen is not None and chosen.key not in exclude
    ctx = context()
    queue = await QueueDepthScorer(p.signals).score(ctx, allowed)
    cache = await KvCacheScorer(p.signals).score(ctx, allowed)
    totals = {e.key: 2 * q + 2 * c + 1.0 for e, q, c in zip(allowed, queue, cache, strict=True)}
    assert totals[chosen.key] >= max(totals.values()) - 1e-9


class _Recording:
    """A scorer (score 0) that counts ``picked``; ``learns`` as given (None: not declared)."""

    def __init__(self, name: str, learns: bool | None) -> None:
        self.name = name
        if learns is not None:
            self.learns = learns
        self.picks = 0

    async def score(self, context: RouteContext, candidates: object) -> list[float]:
        return [0.0] * len(candidates)  # type: ignore[arg-type]

    def picked(self, context: RouteContext, endpoint: Endpoint) -> None:
        self.picks += 1


class _Keep:
    """A filter that keeps the candidates whose key ends with ``suffix``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.calls = 0

    async def filter(self, context: RouteContext, candidates: list[Endpoint]) -> list[Endpoint]:
        self.calls += 1
        return [c for c in candidates if c.key.endswith(self.suffix)]


async def test_only_scorers_that_learn_are_told_the_pick_and_routes_follow_their_own_scorers() -> (
    None
):
    quiet = _Recording("quiet", learns=False)
    learning = _Recording("learning", learns=True)
    undeclared = _Recording("undeclared", learns=None)  # learns, as far as anyone knows
    routes = {
        "m": ModelRoute(deployment="", preset="custom", priority="standard",
                        scorers=(("quiet", 1.0), ("learning", 1.0), ("undeclared", 1.0))),
        "n": ModelRoute(deployment="", preset="custom", priority="standard",
                        scorers=(("learning", 1.0), ("missing", 1.0))),
    }  # fmt: skip
    router = Router(scorers=[quiet, learning, undeclared], routes=routes.get)
    eps = endpoints(2)
    for _ in range(2):
        assert await router.pick(eps, request=chat("hi")) is not None
    assert (quiet.picks, learning.picks, undeclared.picks) == (0, 2, 2)
    other = RouteRequest(model="n", operation="chat", body={}, session=None)
    assert await router.pick(eps, request=other) is not None
    assert (quiet.picks, learning.picks, undeclared.picks) == (0, 3, 2)


async def test_filters_run_with_and_without_exclusions() -> None:
    keep = _Keep("1")
    router = Router(scorers=[], routes=lambda model: None, filters=[keep])
    eps = endpoints(3)
    assert (await router.pick(eps, request=chat("hi"))) == eps[1]
    assert await router.pick(eps, request=chat("hi"), exclude={"default/r1"}) is None
    assert await router.pick([], request=chat("hi")) is None
    assert keep.calls == 2  # (no candidates: nothing to filter)
    assert (
        await Router(scorers=[], routes=lambda m: None).pick(
            eps, request=chat("hi"), exclude={"default/r0", "default/r1"}
        )
        == eps[2]
    )
