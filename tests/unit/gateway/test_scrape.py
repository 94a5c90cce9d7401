"""Scraping replica metrics: fresh samples, staleness, departed replicas forgotten."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from aviator.enginemetrics import EngineLoad
from aviator.gateway.endpoints import Endpoint
from aviator.gateway.scrape import EngineSignals, Scraper

from .conftest import until


def test_samples_go_stale() -> None:
    now = [0.0]
    signals = EngineSignals(stale_after_s=1.0, clock=lambda: now[0])
    load = EngineLoad(running=1, waiting=2, kv_cache_usage=0.5)
    signals.put("a", load)
    assert signals.fresh("a") == load and signals.age("a") == 0.0
    now[0] = 1.5
    assert signals.fresh("a") is None and signals.age("a") == 1.5
    assert signals.fresh("b") is None and signals.age("b") is None
    signals.retain([])
    assert signals.age("a") is None


async def test_the_scraper_reads_every_endpoint_and_survives_bad_ones() -> None:
    waiting = {"n": 3}

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            text=f"vllm:num_requests_waiting {waiting['n']}\nvllm:kv_cache_usage_perc 0.25\n"
        )

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    good_app, bad_app = web.Application(), web.Application()
    good_app.router.add_get("/metrics", metrics)
    bad_app.router.add_get("/metrics", broken)
    good, bad = TestServer(good_app, host="127.0.0.1"), TestServer(bad_app, host="127.0.0.1")
    await good.start_server()
    await bad.start_server()
    endpoints = [
        Endpoint("default/good", "m", str(good.make_url("")).rstrip("/")),
        Endpoint("default/bad", "m", str(bad.make_url("")).rstrip("/")),
        Endpoint("default/gone", "m", "http://127.0.0.1:9"),
    ]
    signals = EngineSignals()
    ticks: list[int] = []
    scraper = Scraper(endpoints=lambda: endpoints, signals=signals, interval_s=0.02,
                      on_tick=lambda eps: ticks.append(len(eps)))  # fmt: skip
    task = asyncio.create_task(scraper.run())
    try:
        await until(lambda: signals.fresh("default/good") is not None)
        assert signals.fresh("default/good") == EngineLoad(
            running=0, waiting=3, kv_cache_usage=0.25
        )
        waiting["n"] = 7
        await until(lambda: (signals.fresh("default/good") or EngineLoad(0, 0, 0)).waiting == 7)
        assert signals.age("default/bad") is None and signals.age("default/gone") is None
        endpoints.pop(0)
        await until(lambda: signals.age("default/good") is None)
        assert ticks and ticks[-1] == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await good.close()
        await bad.close()
