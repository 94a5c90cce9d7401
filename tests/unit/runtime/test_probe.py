"""The shared probe coalesces concurrent probes of one URL and reuses fresh answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aviator.runtime.probe import SharedProbe


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[int]]]:
    hits: list[int] = []

    async def models(request: web.Request) -> web.Response:
        hits.append(1)
        await asyncio.sleep(0.05)
        return web.json_response({"data": []}, status=200 if len(hits) < 3 else 503)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    srv = TestServer(app)
    await srv.start_server()
    yield srv, hits
    await srv.close()


async def test_concurrent_checks_share_one_request_and_fresh_answers_are_reused(
    server: tuple[TestServer, list[int]],
) -> None:
    srv, hits = server
    url = str(srv.make_url("/v1/models"))
    async with aiohttp.ClientSession() as session:
        shared = SharedProbe(session, timeout=1.0, max_age=60)
        answers = await asyncio.gather(*(shared.check(url) for _ in range(20)))
        assert answers == [None] * 20
        assert len(hits) == 1
        assert await shared.check(url) is None
        assert len(hits) == 1


async def test_stale_answers_are_probed_again_and_failures_reported(
    server: tuple[TestServer, list[int]],
) -> None:
    srv, hits = server
    url = str(srv.make_url("/v1/models"))
    async with aiohttp.ClientSession() as session:
        shared = SharedProbe(session, timeout=1.0, max_age=0)
        assert await shared.check(url) is None
        assert await shared.check(url) is None
        assert await shared.check(url) == "HTTP 503"
        assert len(hits) == 3


async def test_a_cancelled_caller_does_not_cancel_the_others(
    server: tuple[TestServer, list[int]],
) -> None:
    srv, hits = server
    url = str(srv.make_url("/v1/models"))
    async with aiohttp.ClientSession() as session:
        shared = SharedProbe(session, timeout=1.0, max_age=60)
        first = asyncio.create_task(shared.check(url))
        second = asyncio.create_task(shared.check(url))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second is None
        assert first.cancelled()
        assert len(hits) == 1
