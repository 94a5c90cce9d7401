"""The autoscaler's pure rules: HPA-style recommendation, stabilization windows, bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aviator.api.modeldeployment import Autoscaling
from aviator.controllers.scaling import Recommendation, bound, prune, recommend, stabilize
from aviator.enginemetrics import EngineLoad

POLICY = Autoscaling(
    target_queue_depth=2, target_kv_cache_usage=0.8,
    scale_up_stabilization_seconds=0, scale_down_stabilization_seconds=60,
)  # fmt: skip


def load(waiting: float = 0, kv: float = 0.0) -> EngineLoad:
    return EngineLoad(running=0, waiting=waiting, kv_cache_usage=kv)


def test_queue_above_target_scales_up_proportionally() -> None:
    # mean waiting 6 against a target of 2: three times the replicas
    assert recommend(2, [load(waiting=4), load(waiting=8)], policy=POLICY) == 6


def test_kv_usage_counts_when_it_is_the_larger_ratio() -> None:
    assert recommend(4, [load(kv=1.0)] * 4, policy=POLICY) == 5  # ceil(4 * 1.25)


def test_within_tolerance_nothing_changes() -> None:
    assert recommend(3, [load(waiting=2.1, kv=0.5)] * 3, policy=POLICY) == 3
    assert recommend(3, [load(waiting=1.85)] * 3, policy=POLICY) == 3


def test_idle_replicas_recommend_scaling_to_zero_which_bounds_then_raise() -> None:
    assert recommend(5, [load()] * 5, policy=POLICY) == 0
    assert bound(0, floor=1, ceiling=4) == 1


def test_no_reports_means_no_recommendation() -> None:
    assert recommend(3, [], policy=POLICY) is None
    assert recommend(0, [load(waiting=9)], policy=POLICY) is None


def test_scale_up_is_immediate_with_a_zero_window() -> None:
    history = [Recommendation(at=0.0, replicas=2), Recommendation(at=10.0, replicas=5)]
    assert stabilize(history, now=10.0, current=2, policy=POLICY) == 5


def test_scale_up_takes_the_lowest_recommendation_of_its_window() -> None:
    policy = POLICY.model_copy(update={"scale_up_stabilization_seconds": 30})
    history = [Recommendation(at=0.0, replicas=3), Recommendation(at=20.0, replicas=6)]
    assert stabilize(history, now=20.0, current=2, policy=policy) == 3
    assert stabilize(history, now=40.0, current=3, policy=policy) == 6  # the 3 left the window


def test_scale_down_waits_for_the_window_to_forget_higher_recommendations() -> None:
    history = [Recommendation(at=0.0, replicas=6), Recommendation(at=30.0, replicas=1)]
    assert stabilize(history, now=30.0, current=6, policy=POLICY) == 6
    assert stabilize(history, now=61.0, current=6, policy=POLICY) == 1


def test_a_lull_inside_the_window_only_lowers_to_the_window_maximum() -> None:
    history = [Recommendation(at=0.0, replicas=4), Recommendation(at=10.0, replicas=2),
               Recommendation(at=20.0, replicas=1)]  # fmt: skip
    assert stabilize(history, now=20.0, current=6, policy=POLICY) == 4


def test_prune_keeps_only_what_a_window_can_still_see() -> None:
    history = [Recommendation(at=0.0, replicas=4), Recommendation(at=50.0, replicas=2)]
    assert prune(history, now=100.0, policy=POLICY) == [history[1]]


recommendations = st.lists(
    st.builds(Recommendation, at=st.floats(0, 100), replicas=st.integers(0, 50)), max_size=20
)


@given(recommendations, st.integers(0, 50), st.floats(0, 100), st.floats(0, 100), st.floats(0, 100))
def test_stabilized_count_never_overshoots_its_windows(
    history: list[Recommendation], current: int, now: float, up: float, down: float
) -> None:
    policy = Autoscaling(scale_up_stabilization_seconds=up, scale_down_stabilization_seconds=down)
    history = [r for r in history if r.at <= now]
    result = stabilize(history, now=now, current=current, policy=policy)
    in_up = [r.replicas for r in history if now - r.at <= up]
    in_down = [r.replicas for r in history if now - r.at <= down]
    if result > current:
        # up only as far as every recommendation of the up window agrees
        assert in_up and result == min(in_up)
    elif result < current:
        # down only as far as every recommendation of the down window agrees
        assert in_down and result == max(in_down)
    else:
        # it holds only when neither window agrees on a move
        assert not (in_up and min(in_up) > current)
        assert not (in_down and max(in_down) < current)


@given(st.integers(1, 100), st.lists(st.floats(0, 50), min_size=1, max_size=10), st.floats(0, 1))
def test_recommendation_follows_the_load_direction(
    current: int, waits: list[float], kv: float
) -> None:
    loads = [load(waiting=w, kv=kv) for w in waits]
    result = recommend(current, loads, policy=POLICY)
    assert result is not None
    ratio = max(sum(waits) / len(waits) / 2, kv / 0.8)
    if ratio > 1 + 0.1:
        assert result > current
    elif ratio < 1 - 0.1:
        assert result <= current
    else:
        assert result == current
