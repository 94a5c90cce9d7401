from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from aviator.gateway.endpoints import Endpoint
from aviator.gateway.picking import InFlight, LeastInFlight, RouteRequest, least_inflight

REQUEST = RouteRequest(model="m", operation="chat", body={"model": "m"})


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(key=f"default/r{i}", model="m", url=f"http://h:{i}") for i in range(n)]


def loads(pairs: dict[str, int]) -> InFlight:
    stats = InFlight()
    for key, n in pairs.items():
        for _ in range(n):
            stats.acquire(key)
    return stats


def test_the_least_loaded_endpoint_wins() -> None:
    eps = endpoints(3)
    stats = loads({"default/r0": 2, "default/r1": 1, "default/r2": 3})
    assert least_inflight(eps, inflight=stats) == eps[1]
    assert least_inflight(eps, inflight=stats, exclude={"default/r1"}) == eps[0]


def test_nothing_to_pick_gives_none() -> None:
    assert least_inflight([], inflight=InFlight()) is None
    eps = endpoints(2)
    assert least_inflight(eps, inflight=InFlight(), exclude={e.key for e in eps}) is None


async def test_idle_equal_endpoints_take_turns() -> None:
    eps = endpoints(3)
    picker = LeastInFlight(InFlight())
    picks = [await picker.pick(eps, request=REQUEST) for _ in range(9)]
    assert Counter(p.key for p in picks if p is not None) == {e.key: 3 for e in eps}
    assert [p.key for p in picks[:3] if p is not None] == [e.key for e in eps]


def test_inflight_counts_go_back_to_zero() -> None:
    stats = InFlight()
    stats.acquire("a")
    stats.acquire("a")
    stats.release("a")
    assert stats.inflight("a") == 1
    stats.release("a")
    stats.release("a")
    assert stats.inflight("a") == 0
    assert stats.snapshot() == {}


@given(
    st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=8),
    st.sets(st.integers(min_value=0, max_value=7)),
    st.integers(min_value=0, max_value=1000),
)
def test_never_an_excluded_endpoint_always_a_least_loaded_one(
    load: list[int], excluded: set[int], turn: int
) -> None:
    eps = endpoints(len(load))
    stats = loads({e.key: n for e, n in zip(eps, load, strict=True)})
    exclude = {f"default/r{i}" for i in excluded}
    picked = least_inflight(eps, inflight=stats, exclude=exclude, turn=turn)
    allowed = [(e, n) for e, n in zip(eps, load, strict=True) if e.key not in exclude]
    if not allowed:
        assert picked is None
        return
    assert picked is not None
    assert picked.key not in exclude
    assert stats.inflight(picked.key) == min(n for _, n in allowed)
