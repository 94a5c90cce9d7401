"""The load reader: concurrent /metrics reads, a short cache, silence for what does not answer."""

from __future__ import annotations

import httpx

from aviator.controllers.load import LoadReader
from aviator.enginemetrics import EngineLoad


def exposition(waiting: int) -> str:
    return f"vllm:num_requests_running 1\nvllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc 0.5\n"


async def test_reads_each_endpoint_and_skips_the_unreadable() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        host = request.url.host
        if host == "ok":
            return httpx.Response(200, text=exposition(3))
        if host == "down":
            raise httpx.ConnectError("refused", request=request)
        if host == "broken":
            return httpx.Response(500, text="boom")
        return httpx.Response(200, text="hello")  # not an engine

    reader = LoadReader(transport=httpx.MockTransport(handler))
    try:
        loads = await reader.read(
            ["http://ok:1/", "http://down:1", "http://broken:1", "http://web:1"]
        )
    finally:
        await reader.aclose()
    assert loads == {"http://ok:1/": EngineLoad(running=1.0, waiting=3.0, kv_cache_usage=0.5)}
    assert sorted(seen) == ["http://broken:1/metrics", "http://down:1/metrics",
                            "http://ok:1/metrics", "http://web:1/metrics"]  # fmt: skip


async def test_recent_reads_are_reused() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, text=exposition(calls))

    reader = LoadReader(transport=httpx.MockTransport(handler), max_age_s=60)
    try:
        first = await reader.read(["http://a:1"])
        again = await reader.read(["http://a:1", "http://a:1"])
    finally:
        await reader.aclose()
    assert calls == 1 and first == again


async def test_zero_max_age_reads_every_time() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, text=exposition(calls))

    reader = LoadReader(transport=httpx.MockTransport(handler), max_age_s=0)
    try:
        await reader.read(["http://a:1"])
        second = await reader.read(["http://a:1"])
    finally:
        await reader.aclose()
    assert calls == 2 and second["http://a:1"].waiting == 2.0
