"""``InferenceLane``: a remembered decision is the one ``decide`` gives for that class of values,
and anything unusual goes to ``decide`` itself."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from aviator.policy.lane import InferenceLane, among

LONGS = st.integers(min_value=0, max_value=2**63 - 1)
HOURS = st.integers(min_value=0, max_value=23)
CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6, unique=True).map(
    lambda cuts: tuple(sorted(cuts))
)
READINGS = st.one_of(st.none(), st.just(()), CUTS)


Decide = Callable[[int, int], tuple[object, ...]]


def _threshold_rule(
    tokens: tuple[int, ...] | None, hour: tuple[int, ...] | None
) -> tuple[Decide, list[tuple[int, int]]]:
    """A decision that depends on the values only as the readings say (what a Cedar slice's
    plan guarantees): comparisons with each cut, or the value itself."""

    def view(value: int, cuts: tuple[int, ...] | None) -> tuple[object, ...]:
        if cuts is None:
            return (value,)
        return tuple((value < c, value == c) for c in cuts)

    calls: list[tuple[int, int]] = []

    def decide(estimated_tokens: int, hour_of_day: int) -> tuple[object, ...]:
        calls.append((estimated_tokens, hour_of_day))
        return (view(estimated_tokens, tokens), view(hour_of_day, hour))

    return decide, calls


@given(cuts=CUTS, value=st.integers(min_value=-5, max_value=10_005))
def test_among_tells_every_comparison_with_the_cuts(cuts: tuple[int, ...], value: int) -> None:
    at = bisect_left(cuts, value)
    assert among(cuts, value) == 2 * at + (at < len(cuts) and cuts[at] == value)
    # Two values of one class compare alike with every cut.
    for other in (value - 1, value + 1):
        if among(cuts, other) == among(cuts, value):
            assert all((other < c, other == c) == (value < c, value == c) for c in cuts)


@given(
    cuts=CUTS,
    a=st.integers(min_value=-5, max_value=10_005),
    b=st.integers(min_value=-5, max_value=10_005),
)
def test_two_values_share_a_class_exactly_when_every_cut_sees_them_alike(
    cuts: tuple[int, ...], a: int, b: int
) -> None:
    alike = all((a < c, a == c) == (b < c, b == c) for c in cuts)
    assert (among(cuts, a) == among(cuts, b)) == alike


@given(
    tokens=READINGS,
    hour=READINGS,
    requests=st.lists(st.tuples(LONGS | st.integers(0, 20_000), HOURS), min_size=1, max_size=40),
)
def test_a_lane_gives_what_decide_gives(
    tokens: tuple[int, ...] | None,
    hour: tuple[int, ...] | None,
    requests: list[tuple[int, int]],
) -> None:
    decide, _ = _threshold_rule(tokens, hour)
    lane = InferenceLane("set", decide=decide, tokens=tokens, hour=hour)
    for estimate, at in requests:
        assert lane.decide(estimate, at) == decide(estimate, at)
    assert lane.compiled == "set"


def test_a_lane_asks_once_per_class() -> None:
    decide, calls = _threshold_rule((100,), ())
    lane = InferenceLane(None, decide=decide, tokens=(100,), hour=())
    first = lane.decide(5, 3)
    assert lane.decide(99, 17) is first  # below the cut at any hour: one class
    assert len(calls) == 1
    lane.decide(100, 3)  # on the cut
    lane.decide(101, 3)  # above it
    assert len(calls) == 3


def test_unusual_values_go_to_decide_every_time() -> None:
    decide, calls = _threshold_rule(None, None)
    lane = InferenceLane(None, decide=decide, tokens=None, hour=None)
    for estimate, at in [(-1, 3), (2**63, 3), (5, 24), (5, -1)]:
        lane.decide(estimate, at)
        lane.decide(estimate, at)
    assert len(calls) == 8  # none remembered: their checks and messages are decide's
