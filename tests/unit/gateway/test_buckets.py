"""Buckets: one histogram series' counts, as Prometheus buckets them ("less or equal")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aviator.gateway.buckets import Buckets

BOUNDS = (0.00001, 0.0002, 0.1, 1.0)


def test_a_value_lands_in_the_first_bucket_whose_bound_is_at_least_it() -> None:
    series = Buckets(BOUNDS)
    for value in (0.000004, 0.00001, 0.00015, 0.0002, 0.3, 2.5):
        series.observe(value)
    # 10 us and 200 us land in their own buckets (less or equal); 2.5 s only in +Inf.
    assert series.counts == [2, 2, 0, 1, 1]
    assert series.sum == pytest.approx(2.800364)


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=50))
def test_counts_and_sum_agree_with_counting_by_hand(values: list[float]) -> None:
    series = Buckets(BOUNDS)
    for value in values:
        series.observe(value)
    expected = [0] * (len(BOUNDS) + 1)
    for value in values:
        expected[next((i for i, b in enumerate(BOUNDS) if value <= b), len(BOUNDS))] += 1
    assert series.counts == expected
    assert series.sum == pytest.approx(sum(values))
