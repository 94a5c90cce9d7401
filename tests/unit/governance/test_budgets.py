"""Per-agent budgets: reservations, settling, sliding windows, Retry-After, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aviator.governance.budgets import (
    DAY,
    MINUTE,
    Budgets,
    Limits,
    Refusal,
    Reservation,
    WindowShape,
)

AGENT = "team/bot"


def admitted(outcome: Reservation | Refusal) -> Reservation:
    assert isinstance(outcome, Reservation), outcome
    return outcome


def refused(outcome: Reservation | Refusal) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    return outcome


def test_limits_come_from_the_agent_spec_and_junk_is_no_limit() -> None:
    limits = Limits.from_spec(
        {"tokensPerMinute": 100, "tokensPerDay": 0, "maxConcurrentRequests": "2"}
    )
    assert limits == Limits(tokens_per_minute=100)
    assert Limits.from_spec(None).unlimited
    assert not limits.unlimited


def test_in_flight_estimates_count_and_settling_replaces_them_with_usage() -> None:
    budgets = Budgets()
    limits = Limits(tokens_per_minute=100)
    first = admitted(budgets.admit(AGENT, limits, estimate=60, now=1000.0))
    assert budgets.used(AGENT, now=1000.0) == (60, 60, 1)
    no_room = refused(budgets.admit(AGENT, limits, estimate=50, now=1001.0))
    assert no_room.budget == "tokensPerMinute"
    assert (no_room.used, no_room.requested, no_room.limit) == (60, 50, 100)
    assert "60 of 100 tokens per minute" in no_room.message
    budgets.settle(first, used=20, now=1002.0)  # it used less than it might have
    assert budgets.used(AGENT, now=1002.0) == (20, 20, 0)
    second = admitted(budgets.admit(AGENT, limits, estimate=50, now=1002.0))
    budgets.settle(second, used=None, now=1003.0)  # no usage reported: the estimate stands
    assert budgets.used(AGENT, now=1003.0) == (70, 70, 0)


def test_tokens_leave_the_minute_window_but_stay_in_the_day() -> None:
    budgets = Budgets()
    limits = Limits(tokens_per_minute=100, tokens_per_day=150)
    budgets.settle(admitted(budgets.admit(AGENT, limits, estimate=90, now=0.0)), used=90, now=0.5)
    wait = refused(budgets.admit(AGENT, limits, estimate=20, now=10.0))
    assert wait.budget == "tokensPerMinute" and wait.retry_after_s == 50
    assert isinstance(budgets.admit(AGENT, limits, estimate=20, now=59.9), Refusal)
    admitted(budgets.admit(AGENT, limits, estimate=20, now=60.0))
    day = refused(budgets.admit(AGENT, limits, estimate=50, now=61.0))
    assert day.budget == "tokensPerDay" and "per day" in day.message
    assert day.retry_after_s == DAY.length_s - 61


def test_a_request_larger_than_the_budget_never_fits() -> None:
    budgets = Budgets()
    too_big = refused(budgets.admit(AGENT, Limits(tokens_per_minute=100), estimate=101, now=5.0))
    assert too_big.retry_after_s == MINUTE.length_s
    assert "alone" in too_big.message
    assert len(budgets) == 0  # a refusal leaves nothing behind


def test_concurrency_is_capped_and_freed_when_requests_end() -> None:
    budgets = Budgets()
    limits = Limits(max_concurrent_requests=2)
    held = [admitted(budgets.admit(AGENT, limits, estimate=1, now=0.0)) for _ in range(2)]
    busy = refused(budgets.admit(AGENT, limits, estimate=1, now=0.0))
    assert busy.budget == "maxConcurrentRequests" and busy.retry_after_s == 1
    assert "2 requests" in busy.message
    admitted(budgets.admit("team/other", limits, estimate=1, now=0.0))  # per agent
    budgets.settle(held[0], used=1, now=0.1)
    admitted(budgets.admit(AGENT, limits, estimate=1, now=0.1))


def test_bad_estimates_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Budgets().admit(AGENT, Limits(), estimate=-1, now=0.0)


SMALL = WindowShape(bucket_s=1.0, buckets=10)
steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=4.0),  # time passing
        st.sampled_from(["admit", "settle"]),
        st.integers(min_value=0, max_value=60),  # estimate or usage
        st.booleans(),  # usage reported
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, limit=st.integers(min_value=1, max_value=120), cap=st.integers(1, 4))
def test_admission_never_overdraws_and_memory_stays_bounded(
    steps: list[tuple[float, str, int, bool]], limit: int, cap: int
) -> None:
    budgets = Budgets(minute=SMALL, day=WindowShape(bucket_s=5.0, buckets=4))
    limits = Limits(tokens_per_minute=limit, max_concurrent_requests=cap)
    now = 0.0
    open_: list[Reservation] = []
    for elapsed, op, amount, reported in steps:
        now += elapsed
        if op == "admit":
            before, _, inflight = budgets.used(AGENT, now=now)
            outcome = budgets.admit(AGENT, limits, estimate=amount, now=now)
            if isinstance(outcome, Reservation):
                open_.append(outcome)
                minute, _, count = budgets.used(AGENT, now=now)
                assert minute == before + amount <= limit
                assert count == inflight + 1 <= cap
            else:
                assert outcome.retry_after_s >= 1
                if outcome.budget == "maxConcurrentRequests":
                    assert inflight == cap
                else:
                    assert before + amount > limit
        elif open_:
            budgets.settle(open_.pop(0), used=amount if reported else None, now=now)
        state = budgets._agents.get(AGENT)
        if state is not None:
            assert len(state.minute) <= SMALL.buckets
            assert len(state.day) <= 4
            assert state.inflight == len(open_)
    for reservation in open_:
        budgets.settle(reservation, used=0, now=now)
    assert budgets.used(AGENT, now=now + 100)[0] == 0
    assert len(budgets) == 0  # nothing left to count: the agent is forgotten


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=3.0), st.integers(0, 40)), max_size=25
    ),
    estimate=st.integers(min_value=0, max_value=100),
)
@example(history=[(1.9999999999999996, 1), (1.9999999999999996, 0)], estimate=100)
def test_retry_after_is_when_the_request_first_fits(
    history: list[tuple[float, int]], estimate: int
) -> None:
    limits = Limits(tokens_per_minute=100)
    budgets = Budgets(minute=SMALL, day=SMALL)
    now = 0.0
    for elapsed, used in history:
        now += elapsed
        outcome = budgets.admit(AGENT, limits, estimate=used, now=now)
        if isinstance(outcome, Reservation):
            budgets.settle(outcome, used=used, now=now)
    outcome = budgets.admit(AGENT, limits, estimate=estimate, now=now)
    if isinstance(outcome, Reservation):
        return
    later = budgets.admit(AGENT, limits, estimate=estimate, now=now + outcome.retry_after_s)
    assert isinstance(later, Reservation)
    if outcome.retry_after_s > 1:
        budgets.settle(later, used=0, now=now + outcome.retry_after_s)
        # A second earlier it would not have fitted: the wait is not longer than needed. (Checked
        # a microsecond before that second: `now + wait` is a float sum that can round onto the
        # very bucket boundary the exact wait falls just after.)
        fresh = Budgets(minute=SMALL, day=SMALL)
        now2 = 0.0
        for elapsed, used in history:
            now2 += elapsed
            again = fresh.admit(AGENT, limits, estimate=used, now=now2)
            if isinstance(again, Reservation):
                fresh.settle(again, used=used, now=now2)
        early = fresh.admit(
            AGENT, limits, estimate=estimate, now=now2 + outcome.retry_after_s - 1 - 1e-6
        )
        assert isinstance(early, Refusal)
