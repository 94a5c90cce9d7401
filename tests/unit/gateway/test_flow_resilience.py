"""Flow control and circuit breakers end to end: the gateway in front of fake replicas whose
``/metrics`` say how loaded they are, scraped by the gateway as in production."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import aiohttp
import orjson
import pytest
from aiohttp import web

from aviator.gateway.app import Gateway, GatewayServer
from aviator.gateway.auth import Credentials
from aviator.gateway.breaker import BreakerState
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.governance import Governance
from aviator.settings import GatewaySettings

from .conftest import (
    CHAT_BODY,
    FakeUpstream,
    Harness,
    StaticFeed,
    answer_ok,
    replica,
    sample,
    until,
)

Start = Callable[..., Awaitable[FakeUpstream]]

BASE = GatewaySettings(
    max_body_bytes=64 * 1024,
    connect_timeout_s=1.0,
    read_timeout_s=5.0,
    metrics_interval_s=0.02,
    metrics_stale_after_s=1.0,
    queue_recheck_s=0.01,
    queue_max_wait_s=5.0,
)
"""Scraping on (every 20 ms), so saturation detection is on."""


@dataclass
class Engine:
    """What a fake replica reports on ``/metrics`` (vLLM names)."""

    waiting: float = 0.0
    kv: float = 0.1
    metrics: bool = True
    fail: bool = False
    """Answer inference requests 500."""

    def exposition(self) -> str:
        return (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="m"}} {self.waiting}\n'
            f'vllm:num_requests_running{{model_name="m"}} 1\n'
            f'vllm:kv_cache_usage_perc{{model_name="m"}} {self.kv}\n'
        )

    async def handle(self, up: FakeUpstream, request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            if not self.metrics:
                return web.Response(status=503)
            return web.Response(text=self.exposition())
        if self.fail:
            return web.json_response({"error": "engine exploded"}, status=500)
        return await answer_ok(up, request)


def inference_hits(up: FakeUpstream) -> int:
    return sum(1 for _, body in up.hits if body)  # scrapes are GETs without a body


async def replicas(
    harness: Harness, upstreams: Start, engine: Engine, n: int = 2
) -> list[FakeUpstream]:
    """``n`` replicas of model ``m`` sharing ``engine``, once the gateway has scraped them all."""
    ups = []
    for i in range(n):
        up = await upstreams(f"r{i}", engine.handle)
        harness.add(f"r{i}", up)
        ups.append(up)
    signals = harness.gateway.signals
    await until(lambda: all(signals.fresh(f"default/r{i}") is not None for i in range(n)))
    return ups


def prompt(i: int) -> dict[str, object]:
    return {**CHAT_BODY, "messages": [{"role": "user", "content": f"question {i}"}]}


async def chat(harness: Harness, i: int, priority: str | None) -> tuple[str | None, int, str]:
    headers = {} if priority is None else {"x-aviator-priority": priority}
    status, got, body = await harness.chat(prompt(i), headers=headers)
    code = orjson.loads(body)["error"]["code"] if status >= 400 else ""
    if status in (429, 503):
        retry_after = got.get("Retry-After")
        assert retry_after is not None
        assert retry_after.isdigit()
        assert int(retry_after) >= 1
    return priority, status, code


@pytest.mark.parametrize("settings", [BASE])
async def test_shedding_only_ever_hits_sheddable_traffic(
    harness: Harness, upstreams: Start
) -> None:
    engine = Engine(waiting=12)  # every replica has a long queue: the pool is saturated
    await replicas(harness, upstreams, engine)
    cycle = itertools.cycle(["sheddable", "standard", "critical", "sheddable", "standard"])
    priorities = [next(cycle) for _ in range(40)]
    load = [asyncio.create_task(chat(harness, i, p)) for i, p in enumerate(priorities)]
    flow = harness.gateway.flow.policy
    await until(lambda: flow.waiting("m") == 24)  # every standard and critical request waits
    await until(lambda: sum(t.done() for t in load) == 16)  # every sheddable one was refused
    assert all(p == "sheddable" and s == 429 for p, s, _ in (t.result() for t in load if t.done()))

    engine.waiting = 0  # the replicas catch up: everyone who waited is served
    results = await asyncio.gather(*load)
    by_outcome = Counter((p, s) for p, s, _ in results)
    assert by_outcome == {("sheddable", 429): 16, ("standard", 200): 16, ("critical", 200): 8}
    assert {code for p, s, code in results if s == 429} == {"model_overloaded"}

    text = await harness.metrics()
    shed = dict(model="m", priority="sheddable", reason="saturated")
    assert sample(text, "aviator_gateway_shed_requests_total", **shed) == 16
    released = dict(model="m", priority="standard", outcome="released")
    assert sample(text, "aviator_gateway_queue_wait_seconds_count", **released) == 16
    depth = dict(model="m", priority="standard")
    assert sample(text, "aviator_gateway_queue_depth", **depth) == 0


@pytest.mark.parametrize("settings", [replace(BASE, queue_max_wait_s=0.3)])
async def test_a_pool_that_stays_saturated_times_out_waiters_with_503(
    harness: Harness, upstreams: Start
) -> None:
    engine = Engine(kv=0.95)  # KV cache nearly full everywhere
    ups = await replicas(harness, upstreams, engine)
    started = time.monotonic()
    results = await asyncio.gather(
        chat(harness, 1, "standard"), chat(harness, 2, "critical"), chat(harness, 3, "sheddable")
    )
    assert list(results) == [
        ("standard", 503, "queue_timeout"),
        ("critical", 503, "queue_timeout"),
        ("sheddable", 429, "model_overloaded"),
    ]
    assert time.monotonic() - started >= 0.3
    assert [inference_hits(up) for up in ups] == [0, 0]
    text = await harness.metrics()
    timeout = dict(model="m", priority="critical", outcome="timeout")
    assert sample(text, "aviator_gateway_queue_wait_seconds_count", **timeout) == 1


@pytest.mark.parametrize("settings", [replace(BASE, metrics_stale_after_s=0.2)])
async def test_replicas_whose_metrics_go_dark_count_as_saturated(
    harness: Harness, upstreams: Start
) -> None:
    engine = Engine()
    await replicas(harness, upstreams, engine)
    assert (await chat(harness, 1, "sheddable"))[1] == 200
    engine.metrics = False
    signals = harness.gateway.signals
    await until(lambda: signals.fresh("default/r0") is None and signals.fresh("default/r1") is None)
    assert (await chat(harness, 2, "sheddable"))[1:] == (429, "model_overloaded")
    engine.metrics = True
    await until(lambda: signals.fresh("default/r0") is not None)
    assert (await chat(harness, 3, "sheddable"))[1] == 200


@pytest.mark.parametrize("settings", [BASE])
async def test_the_models_deployment_sets_the_default_priority(
    harness: Harness, upstreams: Start
) -> None:
    engine = Engine(waiting=7)
    await replicas(harness, upstreams, engine)
    harness.gateway.directory.apply(
        "ADDED",
        {
            "metadata": {"namespace": "default", "name": "batch"},
            "spec": {"model": {"name": "m"}, "priority": "sheddable"},
        },
    )
    assert (await chat(harness, 1, None))[1:] == (429, "model_overloaded")
    engine.waiting = 0
    await until(lambda: harness.gateway.flow.policy.headroom(["default/r0"]) > 0)
    assert (await chat(harness, 2, None))[1] == 200


@pytest.mark.parametrize("settings", [BASE])
async def test_a_bad_priority_header_is_a_400(harness: Harness, upstreams: Start) -> None:
    await replicas(harness, upstreams, Engine())
    status, _, body = await harness.chat(headers={"x-aviator-priority": "urgent"})
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error["param"] == "x-aviator-priority"
    assert "critical, standard, sheddable" in error["message"]


BREAKER = replace(
    BASE, metrics_interval_s=0, breaker_failures=2, breaker_cooldown_s=0.5, breaker_cooldown_max_s=5
)


@pytest.mark.parametrize("settings", [BREAKER])
async def test_a_failing_replica_is_cut_off_until_its_cool_down(
    harness: Harness, upstreams: Start
) -> None:
    bad_engine = Engine(fail=True)
    bad = await upstreams("bad", bad_engine.handle)
    good = await upstreams("good", Engine().handle)
    harness.add("bad", bad)
    harness.add("good", good)
    breakers = harness.gateway.breakers

    # Requests keep succeeding (retried on the good replica) while the bad one collects failures.
    i = 0
    while breakers.state("default/bad", time.monotonic()) is not BreakerState.OPEN:
        assert (await chat(harness, i, None))[1] == 200
        i += 1
        assert i < 50, "the breaker never opened"
    assert inference_hits(bad) == 2
    text = await harness.metrics()
    assert sample(text, "aviator_gateway_breaker_state", replica="default/bad") == 1
    assert sample(text, "aviator_gateway_breaker_opened_total", replica="default/bad") == 1

    # While open, nothing goes to it.
    sent = 0
    while sent < 20 and breakers.state("default/bad", time.monotonic()) is BreakerState.OPEN:
        assert (await chat(harness, 100 + sent, None))[1] == 200
        sent += 1
    assert sent >= 5  # (the cool-down is 0.5 s, a request takes milliseconds)
    assert inference_hits(bad) == 2
    assert inference_hits(good) == i + sent

    # After the cool-down one trial goes through; it fails, and the breaker re-opens for longer.
    await until(lambda: breakers.state("default/bad", time.monotonic()) is BreakerState.HALF_OPEN)
    harness.table.apply("DELETED", {"metadata": {"namespace": "default", "name": "good"}})
    _, status, code = await chat(harness, 200, None)
    assert (status, code) == (502, "upstream_error")
    assert inference_hits(bad) == 3
    assert breakers.state("default/bad", time.monotonic()) is BreakerState.OPEN

    # Once it works again, the next trial closes the breaker.
    bad_engine.fail = False
    await until(lambda: breakers.state("default/bad", time.monotonic()) is BreakerState.HALF_OPEN)
    assert (await chat(harness, 201, None))[1] == 200
    assert breakers.state("default/bad", time.monotonic()) is BreakerState.CLOSED
    text = await harness.metrics()
    assert sample(text, "aviator_gateway_breaker_state", replica="default/bad") is None
    assert sample(text, "aviator_gateway_breaker_opened_total", replica="default/bad") == 2


@pytest.mark.parametrize("settings", [BREAKER])
async def test_when_every_replica_is_open_one_is_still_tried(
    harness: Harness, upstreams: Start
) -> None:
    engine = Engine(fail=True)
    up = await upstreams("only", engine.handle)
    harness.add("only", up)
    for i in range(2):
        assert (await chat(harness, i, None))[1] == 502
    assert harness.gateway.breakers.state("default/only", time.monotonic()) is BreakerState.OPEN
    engine.fail = False
    # Open, cool-down not over: the gateway still tries the only replica rather than refusing.
    assert (await chat(harness, 3, None))[1] == 200
    assert harness.gateway.breakers.state("default/only", time.monotonic()) is BreakerState.CLOSED


async def test_stopping_the_gateway_answers_queued_requests_503_at_once(upstreams: Start) -> None:
    table = EndpointTable()
    gateway = Gateway(
        settings=replace(BASE, port=0),
        table=table,
        feed=StaticFeed(),
        authenticator=Credentials(insecure=True),
        governance=Governance(view=None, insecure=True),
    )
    server = GatewayServer(gateway, shutdown_grace_s=30.0)
    await server.start()
    try:
        up = await upstreams("r0", Engine(waiting=9).handle)
        table.apply("ADDED", replica("r0", url=up.url))
        await until(lambda: gateway.signals.fresh("default/r0") is not None)
        async with aiohttp.ClientSession() as session:
            sent = asyncio.create_task(
                session.post(f"{server.url}/v1/chat/completions", json=CHAT_BODY)
            )
            await until(lambda: gateway.flow.policy.waiting() == 1)
            started = time.monotonic()
            stopping = asyncio.create_task(server.stop())
            async with await sent as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
                assert (await resp.json())["error"]["code"] == "shutting_down"
            await stopping
            assert time.monotonic() - started < 10  # not the 30 s grace
    finally:
        await server.stop()
