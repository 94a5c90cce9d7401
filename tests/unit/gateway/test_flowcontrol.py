"""Flow control: priorities, saturation, the fair bounded queue (pure), and its asyncio shell."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.api.modeldeployment import Priority
from aviator.api.principal import ANONYMOUS, Principal
from aviator.enginemetrics import EngineLoad
from aviator.gateway import flowcontrol as fc
from aviator.gateway.openai import OpenAIError
from aviator.gateway.scrape import EngineSignals
from aviator.settings import GatewaySettings

from .conftest import until

POOL = ("default/r0", "default/r1")


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Source:
    """A ``SignalSource`` the test sets per replica."""

    def __init__(self, **by_key: fc.ReplicaSignals | None) -> None:
        self.by_key: dict[str, fc.ReplicaSignals | None] = dict(by_key)

    def signals(self, key: str) -> fc.ReplicaSignals | None:
        return self.by_key.get(key)

    def set_all(self, *, waiting: float, kv: float = 0.1, keys: tuple[str, ...] = POOL) -> None:
        for key in keys:
            self.by_key[key] = fc.Signals(waiting=waiting, kv_cache_usage=kv, age_s=0.1)


def busy() -> Source:
    source = Source()
    source.set_all(waiting=9)
    return source


def idle() -> Source:
    source = Source()
    source.set_all(waiting=0)
    return source


# --- priorities -----------------------------------------------------------------------------------


def test_the_priorities_are_the_apis_most_important_first() -> None:
    assert fc.PRIORITIES == get_args(Priority) == ("critical", "standard", "sheddable")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("critical", "critical"),
        ("Standard", "standard"),
        (" SHEDDABLE ", "sheddable"),
        ("sheddable\t", "sheddable"),
    ],
)
def test_a_priority_header_names_a_priority_in_any_case(header: str, expected: str) -> None:
    assert fc.request_priority(header, default="standard") == expected


def test_without_the_header_the_models_default_applies() -> None:
    assert fc.request_priority(None, default="sheddable") == "sheddable"
    assert fc.request_priority(None, default="critical") == "critical"


@pytest.mark.parametrize("header", ["", " ", "urgent", "high", "0", "critical,standard"])
def test_a_bad_priority_header_is_a_400_naming_the_header_and_the_choices(header: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        fc.request_priority(header, default="standard")
    err = caught.value
    assert err.status == 400
    assert err.param == "x-aviator-priority"
    assert err.code == "invalid_priority"
    assert "x-aviator-priority" in err.message
    assert "critical, standard, sheddable" in err.message


def test_a_long_bad_header_is_not_echoed_whole() -> None:
    with pytest.raises(OpenAIError) as caught:
        fc.request_priority("x" * 5000, default="standard")
    assert len(caught.value.message) < 300


def test_the_default_priority_comes_from_the_models_deployment() -> None:
    defaults = {"crit": "critical", "shed": "sheddable", "odd": "platinum"}
    flow = fc.FlowControl(
        policy=fc.FlowPolicy(source=None),
        pool=lambda model: POOL,
        recorder=Rec(),
        defaults=defaults.get,
    )
    assert flow.priority("crit", None) == "critical"
    assert flow.priority("shed", None) == "sheddable"
    assert flow.priority("odd", None) == "standard"  # unknown values fall back to standard
    assert flow.priority("unknown", None) == "standard"  # no ModelDeployment seen
    assert flow.priority("shed", "critical") == "critical"  # the header wins
    with pytest.raises(OpenAIError):
        flow.priority("crit", "nope")


def test_clients_are_principals_or_else_addresses() -> None:
    key = Principal(id="apikey:0123abcd", kind="apikey")
    assert fc.client_of(key, "10.0.0.1") == "apikey:0123abcd"
    assert fc.client_of(ANONYMOUS, "10.0.0.1") == "addr/10.0.0.1"
    assert fc.client_of(ANONYMOUS, None) == "anonymous"


# --- saturation -----------------------------------------------------------------------------------

SAT = fc.Saturation()


def sig(waiting: float = 0, kv: float = 0.0, age: float | None = 0.1) -> fc.Signals:
    return fc.Signals(waiting=waiting, kv_cache_usage=kv, age_s=age)


def test_llm_d_defaults() -> None:
    assert (SAT.queue_depth, SAT.kv_cache_usage) == (5, 0.8)
    settings_ = GatewaySettings()
    assert settings_.saturation_queue_depth == 5
    assert settings_.saturation_kv_cache_usage == 0.8


@pytest.mark.parametrize(
    ("signals", "saturated"),
    [
        (sig(), False),
        (sig(waiting=4.9, kv=0.79), False),
        (sig(waiting=5), True),
        (sig(waiting=50), True),
        (sig(kv=0.8), True),
        (sig(kv=1.0), True),
        (sig(age=1.0), False),  # exactly at the limit is still fresh
        (sig(age=1.01), True),  # stale: fail-closed
        (sig(age=None), True),  # never scraped
        (None, True),  # unknown
        (sig(waiting=math.nan), True),
        (sig(kv=math.nan), True),
        (sig(age=math.nan), True),
    ],
)
def test_when_a_replica_is_saturated(signals: fc.Signals | None, saturated: bool) -> None:
    assert SAT.replica(signals) is saturated


def test_a_pool_is_saturated_only_when_every_replica_is() -> None:
    source = Source(a=sig(waiting=9), b=sig(waiting=1), c=sig(kv=0.95))
    assert SAT.headroom(["a", "b", "c"], source) == 1
    assert SAT.headroom(["a", "c"], source) == 0
    assert SAT.headroom([], source) == 0


def test_a_pool_nobody_could_scrape_is_never_saturated() -> None:
    # Engines that publish no metrics (or the first moments after start): nothing to detect with.
    source = Source()
    assert SAT.headroom(["a", "b"], source) == 2
    source.by_key["a"] = sig(age=None)
    assert SAT.headroom(["a", "b"], source) == 2


def test_once_one_replica_has_signals_unknown_ones_count_as_saturated() -> None:
    source = Source(a=sig(waiting=9))
    assert SAT.headroom(["a", "b"], source) == 0
    source.by_key["a"] = sig(waiting=0)
    assert SAT.headroom(["a", "b"], source) == 1
    source.by_key["a"] = sig(waiting=0, age=30.0)  # stale, but it was once scraped
    assert SAT.headroom(["a", "b"], source) == 0


SIGNALS = st.one_of(
    st.none(),
    st.builds(
        fc.Signals,
        waiting=st.sampled_from([0.0, 4.0, 5.0, 9.0, math.nan]),
        kv_cache_usage=st.sampled_from([0.0, 0.79, 0.8, 1.0]),
        age_s=st.sampled_from([None, 0.0, 0.5, 1.0, 2.0]),
    ),
)


@given(st.lists(SIGNALS, max_size=6))
def test_saturated_is_headroom_zero(pool: list[fc.Signals | None]) -> None:
    source = Source(**{f"r{i}": s for i, s in enumerate(pool)})
    keys = [f"r{i}" for i in range(len(pool))]
    headroom = SAT.headroom(keys, source)
    assert SAT.saturated(keys, source) is (headroom == 0)
    assert 0 <= headroom <= len(keys)


def test_scraped_signals_adapt_the_scrapers_samples() -> None:
    clock = Clock(10.0)
    samples = EngineSignals(stale_after_s=1.0, clock=clock)
    source = fc.ScrapedSignals(samples)
    assert source.signals("a") is None
    samples.put("a", EngineLoad(running=2, waiting=3, kv_cache_usage=0.5))
    clock.now = 10.25
    got = source.signals("a")
    assert got is not None
    assert (got.waiting, got.kv_cache_usage, got.age_s) == (3, 0.5, 0.25)
    assert not SAT.replica(got)
    clock.now = 12.0  # stale
    got = source.signals("a")
    assert got is not None
    assert got.age_s == 2.0
    assert SAT.replica(got)


# --- the policy -----------------------------------------------------------------------------------


def policy(source: Source | None, *, capacity: int = 8, max_wait_s: float = 5.0) -> fc.FlowPolicy:
    return fc.FlowPolicy(source=source, capacity=capacity, max_wait_s=max_wait_s)


def arrive(
    p: fc.FlowPolicy,
    priority: Priority,
    *,
    client: str = "c",
    model: str = "m",
    now: float = 0.0,
) -> fc.Decision:
    return p.arrive(model=model, client=client, priority=priority, pool=POOL, now=now)


def queued(decision: fc.Decision) -> fc.Waiter:
    assert isinstance(decision, fc.Queued), decision
    return decision.waiter


def test_without_a_signal_source_everything_is_admitted() -> None:
    p = policy(None, capacity=1)
    assert not p.enabled
    for _ in range(5):
        for priority in fc.PRIORITIES:
            assert arrive(p, priority) is fc.ADMIT
    assert p.waiting() == 0


def test_a_pool_with_room_admits_every_priority() -> None:
    p = policy(idle())
    for priority in fc.PRIORITIES:
        assert arrive(p, priority) is fc.ADMIT


def test_a_saturated_pool_sheds_sheddable_and_queues_the_rest() -> None:
    p = policy(busy())
    assert arrive(p, "sheddable") == fc.Shed("saturated")
    queued(arrive(p, "standard"))
    queued(arrive(p, "critical"))
    assert p.waiting("m") == 2
    assert (p.depth("m", "critical"), p.depth("m", "standard")) == (1, 1)
    assert p.depth("m", "sheddable") == 0
    assert p.depth("other", "standard") == 0


def test_queues_are_per_model() -> None:
    source = busy()
    p = policy(source)
    queued(arrive(p, "standard", model="a"))
    source.set_all(waiting=0)
    assert arrive(p, "standard", model="b") is fc.ADMIT  # b's pool has room, a's queue is a's
    assert arrive(p, "standard", model="a") != fc.ADMIT  # nobody overtakes a's waiters


def test_nobody_overtakes_waiters_even_when_the_pool_has_room_again() -> None:
    source = busy()
    p = policy(source)
    first = queued(arrive(p, "standard"))
    source.set_all(waiting=0)
    assert arrive(p, "sheddable") == fc.Shed("saturated")
    second = queued(arrive(p, "standard"))
    assert p.release("m", POOL) == [first, second]
    assert arrive(p, "sheddable") is fc.ADMIT


def test_release_gives_one_waiter_per_replica_with_room() -> None:
    source = busy()
    p = policy(source)
    waiters = [queued(arrive(p, "standard", client=f"c{i}")) for i in range(5)]
    assert p.release("m", POOL) == []
    source.by_key["default/r0"] = sig(waiting=1)
    assert p.release("m", POOL) == waiters[:1]
    source.set_all(waiting=0)
    assert p.release("m", POOL) == waiters[1:3]
    assert p.release("m", POOL, limit=1) == waiters[3:4]
    assert p.release("m", POOL, limit=0) == []
    assert p.release("m", POOL) == waiters[4:]
    assert p.waiting() == 0
    assert p.models_waiting() == []
    assert p.release("m", POOL) == []


def test_critical_is_released_before_standard_whatever_the_arrival_order() -> None:
    source = busy()
    p = policy(source)
    standard = [queued(arrive(p, "standard", client=f"s{i}")) for i in range(3)]
    critical = [queued(arrive(p, "critical", client=f"c{i}")) for i in range(2)]
    source.set_all(waiting=0)
    out = p.release("m", POOL) + p.release("m", POOL) + p.release("m", POOL)
    assert out == critical + standard


def test_clients_take_turns_within_a_priority() -> None:
    source = busy()
    p = policy(source, capacity=100)
    noisy = [queued(arrive(p, "standard", client="noisy")) for _ in range(4)]
    quiet = queued(arrive(p, "standard", client="quiet"))
    later = queued(arrive(p, "standard", client="later"))
    source.set_all(waiting=0, keys=POOL[:1])
    order = [w for _ in range(6) for w in p.release("m", POOL)]
    assert order == [noisy[0], quiet, later, noisy[1], noisy[2], noisy[3]]


def test_a_full_queue_refuses_standard() -> None:
    p = policy(busy(), capacity=2)
    queued(arrive(p, "standard"))
    queued(arrive(p, "standard"))
    assert arrive(p, "standard") == fc.Shed("queue_full")
    assert p.waiting("m") == 2


def test_critical_displaces_the_youngest_standard_waiter_from_a_full_queue() -> None:
    p = policy(busy(), capacity=3)
    oldest = queued(arrive(p, "standard", client="a", now=1))
    youngest = queued(arrive(p, "standard", client="b", now=2))
    crit = queued(arrive(p, "critical", client="c", now=3))
    decision = arrive(p, "critical", client="d", now=4)
    assert isinstance(decision, fc.Queued)
    assert decision.evicted is youngest
    assert p.cancel(youngest) is False  # already gone
    decision = arrive(p, "critical", client="e", now=5)
    assert isinstance(decision, fc.Queued)
    assert decision.evicted is oldest
    # Only critical waiters left: a critical arrival is refused like any other.
    assert arrive(p, "critical", client="f", now=6) == fc.Shed("queue_full")
    assert arrive(p, "standard", client="g", now=6) == fc.Shed("queue_full")
    assert p.depth("m", "critical") == 3
    assert p.depth("m", "standard") == 0
    assert crit in p.drain()


def test_waiters_time_out_at_their_deadline() -> None:
    p = policy(busy(), max_wait_s=5.0)
    a = queued(arrive(p, "standard", client="a", now=10.0))
    b = queued(arrive(p, "critical", client="b", now=11.0))
    c = queued(arrive(p, "standard", client="c", now=12.5))
    assert a.deadline == 15.0
    assert p.expire(14.99) == []
    assert p.expire(15.0) == [a]  # the deadline itself is too late
    assert p.expire(16.5) == [b]
    assert p.waiting() == 1
    assert p.expire(100.0) == [c]
    assert p.waiting() == 0
    assert p.models_waiting() == []


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    source = busy()
    p = policy(source)
    a = queued(arrive(p, "standard", client="a"))
    b = queued(arrive(p, "standard", client="a"))
    assert p.cancel(a) is True
    assert p.cancel(a) is False
    assert p.waiting("m") == 1
    assert p.expire(1e9) == [b]
    assert p.cancel(b) is False


def test_drain_empties_everything() -> None:
    p = policy(busy())
    a = queued(arrive(p, "standard", model="x"))
    b = queued(arrive(p, "critical", model="y"))
    assert p.drain() == [a, b]
    assert p.waiting() == 0
    assert p.models_waiting() == []


def test_bad_policy_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        fc.FlowPolicy(source=None, capacity=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        fc.FlowPolicy(source=None, max_wait_s=0)


def test_sheddable_never_waits() -> None:
    with pytest.raises(ValueError, match="never wait"):
        fc.ModelQueue().push(
            fc.Waiter(model="m", client="c", priority="sheddable", enqueued_at=0, deadline=1, seq=1)
        )


# --- properties -----------------------------------------------------------------------------------

CLIENTS = st.sampled_from(["a", "b", "c", "d"])
QUEUED_PRIORITIES = st.sampled_from(["critical", "standard"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), CLIENTS, QUEUED_PRIORITIES),
        st.tuples(st.just("pop"), st.just(""), st.just("")),
        st.tuples(st.just("cancel"), CLIENTS, QUEUED_PRIORITIES),
    ),
    max_size=120,
)


@given(OPS)
@settings(max_examples=300, deadline=None)
def test_fairness_no_client_waits_behind_two_requests_of_another(
    ops: list[tuple[str, str, str]],
) -> None:
    """Within a priority, while clients A and B both have requests queued, B is never served
    twice without A being served in between (k = 1); critical always goes before standard; and
    each client's own requests leave in the order they came."""
    queue = fc.ModelQueue()
    waiting: dict[tuple[str, str], list[fc.Waiter]] = defaultdict(list)
    # owed[(band, a)][b]: requests of b served since a was last served (or began to wait).
    owed: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    seq = 0
    for op, client, priority in ops:
        if op == "push":
            seq += 1
            waiter = fc.Waiter(
                model="m",
                client=client,
                priority=priority,  # type: ignore[arg-type]
                enqueued_at=seq,
                deadline=seq + 10,
                seq=seq,
            )
            if not waiting[(priority, client)]:
                owed[(priority, client)] = {}
            waiting[(priority, client)].append(waiter)
            queue.push(waiter)
        elif op == "cancel":
            mine = waiting[(priority, client)]
            if mine:
                victim = mine.pop(len(mine) // 2)
                assert queue.remove(victim)
                assert not queue.remove(victim)
        else:
            got = queue.pop()
            if got is None:
                assert not any(waiting.values())
                continue
            band, who = got.priority, got.client
            if band == "standard":
                assert not any(w for (b, _), w in waiting.items() if b == "critical")
            mine = waiting[(band, who)]
            assert mine[0] is got  # FIFO per client
            mine.pop(0)
            for (b, other), others in waiting.items():
                if b != band or other == who or not others:
                    continue
                count = owed[(b, other)].get(who, 0) + 1
                assert count <= 1, f"{other} waited behind {count} requests of {who}"
                owed[(b, other)][who] = count
            owed[(band, who)] = {}
        assert len(queue) == sum(len(w) for w in waiting.values())
        for priority_ in ("critical", "standard"):
            expected = sum(len(w) for (b, _), w in waiting.items() if b == priority_)
            assert queue.depth(priority_) == expected


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["arrive", "release", "tick", "cancel", "toggle"]),
            CLIENTS,
            st.sampled_from(fc.PRIORITIES),
        ),
        max_size=150,
    ),
    st.integers(min_value=1, max_value=6),
)
@settings(max_examples=200, deadline=None)
def test_the_policy_keeps_its_bounds_and_its_books(
    ops: list[tuple[str, str, str]], capacity: int
) -> None:
    """Whatever happens: the queue never exceeds its capacity, sheddable never waits nor is
    admitted while the pool is saturated, nobody waits past its deadline after a tick, and every
    waiter leaves exactly once (released, expired, cancelled or evicted)."""
    source = busy()
    saturated = True
    p = policy(source, capacity=capacity, max_wait_s=3.0)
    now = 0.0
    live: list[fc.Waiter] = []
    gone: set[int] = set()

    def leave(waiters: list[fc.Waiter]) -> None:
        for w in waiters:
            assert w.seq not in gone
            gone.add(w.seq)
            live.remove(w)

    for op, client, priority in ops:
        if op == "arrive":
            decision = arrive(p, priority, client=client, now=now)  # type: ignore[arg-type]
            if priority == "sheddable":
                assert isinstance(decision, fc.Admit | fc.Shed)
                if saturated:
                    assert decision == fc.Shed("saturated")
            if isinstance(decision, fc.Queued):
                live.append(decision.waiter)
                if decision.evicted is not None:
                    assert priority == "critical"
                    assert decision.evicted.priority == "standard"
                    leave([decision.evicted])
            elif isinstance(decision, fc.Shed) and decision.reason == "queue_full":
                assert p.waiting("m") == capacity
        elif op == "release":
            released = p.release("m", POOL)
            if saturated:
                assert released == []
            leave(released)
        elif op == "tick":
            now += 1.0
            leave(p.expire(now))
            assert all(w.deadline > now for w in live)
        elif op == "cancel" and live:
            victim = live[len(live) // 2]
            assert p.cancel(victim)
            leave([victim])
        elif op == "toggle":
            saturated = not saturated
            source.set_all(waiting=9 if saturated else 0)
        assert p.waiting("m") == len(live) <= capacity
        assert p.depth("m", "sheddable") == 0


# --- the asyncio shell ----------------------------------------------------------------------------


class Rec:
    """A ``FlowRecorder`` that keeps every call."""

    def __init__(self) -> None:
        self.sheds: list[tuple[str, str, str]] = []
        self.waits: list[tuple[str, str, str, float]] = []
        self.depths: dict[tuple[str, str], int] = {}

    def shed(self, *, model: str, priority: str, reason: str) -> None:
        self.sheds.append((model, priority, reason))

    def queue_wait(self, *, model: str, priority: str, outcome: str, wait_s: float) -> None:
        self.waits.append((model, priority, outcome, wait_s))

    def queue_depth(self, *, model: str, priority: str, depth: int) -> None:
        self.depths[(model, priority)] = depth

    def outcomes(self) -> list[str]:
        return [w[2] for w in self.waits]


@dataclass
class Shell:
    flow: fc.FlowControl
    source: Source
    clock: Clock
    rec: Rec

    def admit(self, priority: Priority = "standard", client: str = "c") -> asyncio.Task[bool]:
        return asyncio.create_task(self.flow.admit(model="m", client=client, priority=priority))


@pytest.fixture
async def shell() -> Shell:
    source = busy()
    clock = Clock()
    rec = Rec()
    flow = fc.FlowControl(
        policy=fc.FlowPolicy(source=source, capacity=3, max_wait_s=5.0),
        pool=lambda model: POOL,
        recorder=rec,
        recheck_s=3600.0,  # the tests re-check by hand (one test lets the tick run)
        retry_after_s=2,
        clock=clock,
    )
    return Shell(flow, source, clock, rec)


async def parked(shell: Shell, n: int) -> None:
    await until(lambda: shell.flow.policy.waiting() == n)


async def test_a_disabled_flow_control_admits_at_once() -> None:
    flow = fc.FlowControl(policy=fc.FlowPolicy(source=None), pool=lambda m: (), recorder=Rec())
    assert not flow.enabled
    assert await flow.admit(model="m", client="c", priority="sheddable") is False
    flow.finished("m")
    await flow.close()


async def test_sheddable_gets_429_with_retry_after_while_saturated(shell: Shell) -> None:
    with pytest.raises(OpenAIError) as caught:
        await shell.flow.admit(model="m", client="c", priority="sheddable")
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 2
    assert caught.value.code == "model_overloaded"
    assert shell.rec.sheds == [("m", "sheddable", "saturated")]


async def test_a_pool_with_room_admits_without_waiting(shell: Shell) -> None:
    shell.source.set_all(waiting=0)
    assert await shell.flow.admit(model="m", client="c", priority="sheddable") is False
    assert shell.rec.waits == []


async def test_waiters_go_on_once_the_pool_has_room(shell: Shell) -> None:
    standard = shell.admit("standard")
    critical = shell.admit("critical")
    await parked(shell, 2)
    assert shell.rec.depths[("m", "standard")] == 1
    assert shell.rec.depths[("m", "critical")] == 1
    shell.flow.recheck()
    assert shell.flow.policy.waiting() == 2
    shell.source.by_key["default/r0"] = sig(waiting=0)  # room for one: critical goes first
    shell.flow.recheck()
    assert await asyncio.wait_for(critical, 5) is True
    assert not standard.done()
    shell.source.set_all(waiting=0)
    shell.flow.recheck()
    assert await asyncio.wait_for(standard, 5) is True
    assert shell.rec.outcomes() == ["released", "released"]
    assert shell.rec.depths[("m", "standard")] == 0
    await shell.flow.close()


async def test_the_tick_rechecks_by_itself_and_stops_when_nobody_waits() -> None:
    source = busy()
    flow = fc.FlowControl(
        policy=fc.FlowPolicy(source=source),
        pool=lambda model: POOL,
        recorder=Rec(),
        recheck_s=0.005,
    )
    task = asyncio.create_task(flow.admit(model="m", client="c", priority="standard"))
    await until(lambda: flow.policy.waiting() == 1)
    ticker = flow._ticker
    assert ticker is not None
    assert not ticker.done()
    source.set_all(waiting=0)
    assert await asyncio.wait_for(task, 5) is True
    await until(ticker.done)
    # The next waiter starts a new tick.
    source.set_all(waiting=9)
    task = asyncio.create_task(flow.admit(model="m", client="c", priority="standard"))
    await until(lambda: flow.policy.waiting() == 1)
    assert flow._ticker is not ticker
    assert flow._ticker is not None
    assert not flow._ticker.done()
    source.set_all(waiting=0)
    assert await asyncio.wait_for(task, 5) is True
    await flow.close()


async def test_a_finished_request_releases_the_next_waiter(shell: Shell) -> None:
    # No tick here: only the end of a request hands over its slot...
    first = shell.admit(client="a")
    second = shell.admit(client="b")
    await parked(shell, 2)
    shell.flow.finished("m")  # ...when the signals show room, one waiter per finished request.
    assert not first.done()
    shell.source.set_all(waiting=0)
    shell.flow.finished("m")
    assert await asyncio.wait_for(first, 5) is True
    assert not second.done()
    shell.flow.finished("m")
    assert await asyncio.wait_for(second, 5) is True
    await shell.flow.close()


async def test_a_waiter_times_out_with_503_and_retry_after(shell: Shell) -> None:
    task = shell.admit()
    await parked(shell, 1)
    shell.clock.now += 4.9
    shell.flow.recheck()
    assert not task.done()
    shell.clock.now += 0.2
    shell.flow.recheck()
    with pytest.raises(OpenAIError) as caught:
        await asyncio.wait_for(task, 5)
    assert caught.value.status == 503
    assert caught.value.retry_after_s == 2
    assert caught.value.code == "queue_timeout"
    ((model, priority, outcome, waited),) = shell.rec.waits
    assert (model, priority, outcome) == ("m", "standard", "timeout")
    assert waited == pytest.approx(5.1)


async def test_a_full_queue_answers_standard_429(shell: Shell) -> None:
    tasks = [shell.admit(client=f"c{i}") for i in range(3)]
    await parked(shell, 3)
    with pytest.raises(OpenAIError) as caught:
        await shell.flow.admit(model="m", client="late", priority="standard")
    assert caught.value.status == 429
    assert caught.value.code == "queue_full"
    assert shell.rec.sheds == [("m", "standard", "queue_full")]
    await shell.flow.close()
    for task in tasks:
        with pytest.raises(OpenAIError) as caught:
            await task
        assert caught.value.status == 503


async def test_critical_evicts_the_youngest_standard_waiter_with_429(shell: Shell) -> None:
    old = shell.admit(client="a")
    await parked(shell, 1)
    mid = shell.admit(client="b")
    await parked(shell, 2)
    young = shell.admit(client="c")
    await parked(shell, 3)
    crit = shell.admit("critical", client="d")
    with pytest.raises(OpenAIError) as caught:
        await asyncio.wait_for(young, 5)
    assert caught.value.status == 429
    assert caught.value.code == "queue_full"
    assert ("m", "standard", "evicted") in shell.rec.sheds
    assert "evicted" in shell.rec.outcomes()
    assert not old.done()
    assert not mid.done()
    shell.source.set_all(waiting=0)
    shell.flow.recheck()
    shell.flow.recheck()
    assert await asyncio.wait_for(crit, 5) is True
    assert await asyncio.wait_for(old, 5) is True
    assert await asyncio.wait_for(mid, 5) is True


async def test_a_client_that_leaves_is_taken_out_of_the_queue(shell: Shell) -> None:
    task = shell.admit()
    await parked(shell, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shell.flow.policy.waiting() == 0
    assert shell.rec.outcomes() == ["cancelled"]
    assert shell.rec.depths[("m", "standard")] == 0
    await shell.flow.close()


async def test_closing_answers_every_waiter_503(shell: Shell) -> None:
    tasks = [shell.admit(client="a"), shell.admit("critical", client="b")]
    await parked(shell, 2)
    await shell.flow.close()
    for task in tasks:
        with pytest.raises(OpenAIError) as caught:
            await task
        assert caught.value.status == 503
        assert caught.value.code == "shutting_down"
        assert caught.value.retry_after_s == 1
    assert shell.rec.outcomes() == ["shutdown", "shutdown"]
    assert shell.flow.policy.waiting() == 0
    assert shell.rec.depths[("m", "standard")] == shell.rec.depths[("m", "critical")] == 0


async def test_settings_shape_the_flow_control() -> None:
    settings_ = GatewaySettings(
        queue_size=7,
        queue_max_wait_s=3.0,
        queue_recheck_s=0.01,
        shed_retry_after_s=4,
        saturation_queue_depth=2,
        saturation_kv_cache_usage=0.5,
        metrics_stale_after_s=0.5,
    )
    flow = fc.FlowControl.from_settings(
        settings_, signals=Source(), pool=lambda m: (), recorder=Rec()
    )
    assert flow.enabled
    assert flow.policy.capacity == 7
    assert flow.policy.max_wait_s == 3.0
    assert flow.policy.saturation == fc.Saturation(queue_depth=2, kv_cache_usage=0.5, stale_s=0.5)
    assert not fc.FlowControl.from_settings(
        settings_, signals=None, pool=lambda m: (), recorder=Rec()
    ).enabled
    assert settings_.queue_recheck_s <= 0.05
    assert GatewaySettings().queue_recheck_s <= 0.05
