"""Circuit breakers per replica: the state machine, cool-downs, and what the proxy may pick."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.gateway.breaker import BreakerPolicy, BreakerState, CircuitBreakers
from aviator.gateway.endpoints import Endpoint
from aviator.settings import GatewaySettings

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
POLICY = BreakerPolicy(failures=3, cooldown_s=1.0, cooldown_max_s=8.0)


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(key=f"default/r{i}", model="m", url=f"http://h:{i}") for i in range(n)]


def opened(breakers: CircuitBreakers, key: str, now: float) -> None:
    for _ in range(breakers.policy.failures):
        breakers.failed(key, now)
    assert breakers.state(key, now) is OPEN


def test_an_unknown_replica_is_closed_and_all_candidates_are_usable() -> None:
    breakers = CircuitBreakers(POLICY)
    eps = endpoints(3)
    assert breakers.state("default/r0", 0) is CLOSED
    assert breakers.allows("default/r0", 0)
    assert breakers.usable(eps, now=0) is eps  # nothing tracked: no copy on the request path
    assert list(breakers.states(0)) == []


def test_n_consecutive_failures_open_the_breaker() -> None:
    breakers = CircuitBreakers(POLICY)
    assert breakers.failed("a", 0) is False
    assert breakers.failed("a", 0) is False
    assert breakers.state("a", 0) is CLOSED
    assert breakers.allows("a", 0)
    assert breakers.failed("a", 0) is True
    assert breakers.state("a", 0) is OPEN
    assert not breakers.allows("a", 0)
    assert list(breakers.states(0)) == [("a", OPEN)]


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breakers = CircuitBreakers(POLICY)
    breakers.failed("a", 0)
    breakers.failed("a", 0)
    assert breakers.succeeded("a") is False  # it was closed
    breakers.failed("a", 0)
    breakers.failed("a", 0)
    assert breakers.state("a", 0) is CLOSED


def test_after_the_cool_down_one_trial_goes_through() -> None:
    breakers = CircuitBreakers(POLICY)
    opened(breakers, "a", 10.0)
    assert breakers.state("a", 10.99) is OPEN
    assert breakers.attempt("a", 10.5) is False  # an open breaker has no trial
    assert breakers.state("a", 11.0) is HALF_OPEN
    assert breakers.allows("a", 11.0)
    assert breakers.attempt("a", 11.0) is True
    assert not breakers.allows("a", 11.0)  # one trial at a time
    assert breakers.attempt("a", 11.0) is False
    assert breakers.succeeded("a") is True
    assert breakers.state("a", 11.0) is CLOSED
    assert list(breakers.states(11.0)) == []


def test_a_failed_trial_reopens_for_twice_as_long_up_to_the_maximum() -> None:
    breakers = CircuitBreakers(POLICY)
    now = 0.0
    opened(breakers, "a", now)
    cooldowns = []
    for _ in range(6):
        retry_at = now
        while breakers.state("a", retry_at) is OPEN:
            retry_at += 0.25
        cooldowns.append(retry_at - now)
        now = retry_at
        assert breakers.attempt("a", now)
        assert breakers.failed("a", now) is True
    assert cooldowns == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # Closing resets the cool-down to its base.
    breakers.succeeded("a")
    opened(breakers, "a", now)
    assert breakers.state("a", now + 1.0) is HALF_OPEN


def test_failures_while_open_change_nothing() -> None:
    # Requests sent before it opened fail late; they must not push the retry further away.
    breakers = CircuitBreakers(POLICY)
    opened(breakers, "a", 0.0)
    for _ in range(10):
        assert breakers.failed("a", 0.5) is False
    assert breakers.state("a", 1.0) is HALF_OPEN


def test_a_success_closes_the_breaker_whatever_its_state() -> None:
    breakers = CircuitBreakers(POLICY)
    opened(breakers, "a", 0.0)
    assert breakers.succeeded("a") is True  # a straggler answered: the replica works
    assert breakers.state("a", 0.0) is CLOSED


def test_an_abandoned_trial_lets_the_next_request_try() -> None:
    breakers = CircuitBreakers(POLICY)
    opened(breakers, "a", 0.0)
    assert breakers.attempt("a", 1.0)
    breakers.abandoned("a")
    assert breakers.allows("a", 1.0)
    assert breakers.attempt("a", 1.0)
    breakers.abandoned("unknown")  # harmless


def test_open_replicas_are_left_out_of_the_candidates() -> None:
    breakers = CircuitBreakers(POLICY)
    eps = endpoints(3)
    opened(breakers, eps[1].key, 0.0)
    assert breakers.usable(eps, now=0.5) == [eps[0], eps[2]]
    assert breakers.usable(eps, now=0.5, exclude={eps[0].key}) == [eps[2]]
    assert breakers.usable(eps, now=1.0) == eps  # half-open: the trial may go


def test_when_every_replica_is_open_the_one_due_soonest_is_tried() -> None:
    breakers = CircuitBreakers(POLICY)
    eps = endpoints(3)
    opened(breakers, eps[0].key, 0.3)
    opened(breakers, eps[1].key, 0.1)
    opened(breakers, eps[2].key, 0.2)
    assert breakers.usable(eps, now=0.5) == (eps[1],)
    assert breakers.usable(eps, now=0.5, exclude={eps[1].key}) == (eps[2],)
    assert breakers.usable(eps, now=0.5, exclude={e.key for e in eps}) == []
    # A half-open replica whose trial is under way counts as unavailable too.
    assert breakers.attempt(eps[1].key, 1.1)
    assert breakers.usable(eps, now=1.15) == (eps[1],)
    assert breakers.usable(eps, now=1.25) == [eps[2]]  # half-open, trial free


def test_only_so_many_replicas_are_tracked() -> None:
    breakers = CircuitBreakers(POLICY, max_tracked=2)
    breakers.failed("a", 0)
    breakers.failed("b", 0)
    breakers.failed("c", 0)
    assert [key for key, _ in breakers.states(0)] == ["b", "c"]


def test_policy_checks_and_settings() -> None:
    with pytest.raises(ValueError, match="failures"):
        BreakerPolicy(failures=0)
    with pytest.raises(ValueError, match="cooldown"):
        BreakerPolicy(cooldown_s=0)
    with pytest.raises(ValueError, match="cooldown"):
        BreakerPolicy(cooldown_s=5, cooldown_max_s=1)
    assert BreakerPolicy(cooldown_s=1, cooldown_max_s=1e9).cooldown(10_000) == 1e9
    built = CircuitBreakers.from_settings(
        GatewaySettings(breaker_failures=7, breaker_cooldown_s=0.5, breaker_cooldown_max_s=4)
    )
    assert built.policy == BreakerPolicy(failures=7, cooldown_s=0.5, cooldown_max_s=4)
    defaults = GatewaySettings()
    assert built.policy != CircuitBreakers.from_settings(defaults).policy
    assert CircuitBreakers.from_settings(defaults).policy == BreakerPolicy()


KEYS = [e.key for e in endpoints(4)]
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["fail", "succeed", "attempt", "abandon", "wait"]),
        st.sampled_from(KEYS),
        st.floats(min_value=0.0, max_value=3.0),
    ),
    max_size=80,
)


@given(EVENTS, st.sets(st.sampled_from(KEYS)))
@settings(max_examples=300, deadline=None)
def test_never_an_open_replica_while_a_closed_one_is_there(
    events: list[tuple[str, str, float]], exclude: set[str]
) -> None:
    """Whatever happened before: the usable candidates hold no open replica when some eligible
    candidate is closed; all of them allow a request when any does; and they are empty only when
    every candidate is excluded."""
    breakers = CircuitBreakers(BreakerPolicy(failures=2, cooldown_s=0.5, cooldown_max_s=2.0))
    eps = endpoints(4)
    now = 0.0
    for op, key, dt in events:
        if op == "fail":
            breakers.failed(key, now)
        elif op == "succeed":
            breakers.succeeded(key)
        elif op == "attempt":
            breakers.attempt(key, now)
        elif op == "abandon":
            breakers.abandoned(key)
        else:
            now += dt
        usable = breakers.usable(eps, now=now, exclude=exclude)
        eligible = [e for e in eps if e.key not in exclude]
        states = {e.key: breakers.state(e.key, now) for e in eps}
        assert all(e.key not in exclude for e in usable)
        if any(states[e.key] is CLOSED for e in eligible):
            assert all(states[e.key] is not OPEN for e in usable)
            assert all(e in usable for e in eligible if states[e.key] is CLOSED)
        if any(breakers.allows(e.key, now) for e in eligible):
            assert usable
            assert all(breakers.allows(e.key, now) for e in usable)
        assert bool(usable) == bool(eligible)
