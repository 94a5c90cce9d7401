"""The gateway application end to end, against fake upstreams on ephemeral ports."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import aiohttp
import orjson
import pytest
from aiohttp import web

from aviator.gateway.app import Gateway, GatewayServer
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.proxy import CLIENT_CLOSED
from aviator.settings import GatewaySettings

from .conftest import (
    API_KEY,
    CHAT_BODY,
    COMPLETION,
    FakeUpstream,
    Harness,
    StaticFeed,
    dead_url,
    governed,
    replica,
    sample,
    until,
)

Start = Callable[..., Awaitable[FakeUpstream]]


def error_of(body: bytes) -> dict[str, object]:
    doc = orjson.loads(body)
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    error: dict[str, object] = doc["error"]
    return error


async def answer_500(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "boom"}, status=500)


async def hold_then_ok(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    await up.proceed.wait()
    return web.json_response(COMPLETION)


async def hang(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def sse(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    await resp.write(b'data: {"n": 1}\n\n')
    await up.proceed.wait()
    await resp.write(b'data: {"n": 2}\n\n')
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def first_chunk_then_hang(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b'data: {"n": 1}\n\n')
    await asyncio.Event().wait()
    return resp


async def first_chunk_then_die(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b'data: {"n": 1}\n\n')
    assert request.transport is not None
    request.transport.close()
    return resp


# -- routing and passthrough ----------------------------------------------------------------------


async def test_requests_are_routed_by_model_and_answered_verbatim(
    harness: Harness, upstreams: Start
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    harness.add("a", a, model="m1")
    harness.add("b", b, model="m2")
    status, headers, body = await harness.chat({**CHAT_BODY, "model": "m2"})
    assert status == 200
    assert orjson.loads(body) == COMPLETION
    assert headers["x-aviator-replica"] == "default/b"
    assert headers["X-Upstream"] == "b"
    assert len(headers["x-request-id"]) >= 16
    assert (len(a.hits), len(b.hits)) == (0, 1)
    sent_headers, sent_body = b.hits[0]
    assert sent_body == orjson.dumps({**CHAT_BODY, "model": "m2"})  # the original bytes
    assert sent_headers["x-request-id"] == headers["x-request-id"]


async def test_other_operations_keep_their_path_and_query(
    harness: Harness, upstreams: Start
) -> None:
    paths: list[str] = []

    async def echo_path(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
        paths.append(request.path_qs)
        return web.json_response({"object": "list", "data": []})

    up = await upstreams("a", echo_path)
    harness.add("a", up)
    for path in ("/v1/completions?x=1", "/v1/embeddings"):
        status, _, _ = await harness.chat({"model": "m", "input": "hi"}, path=path)
        assert status == 200
    assert paths == ["/v1/completions?x=1", "/v1/embeddings"]


async def test_a_given_request_id_is_propagated(harness: Harness, upstreams: Start) -> None:
    up = await upstreams("a")
    harness.add("a", up)
    status, headers, _ = await harness.chat(headers={"x-request-id": "trace-42"})
    assert status == 200
    assert headers["x-request-id"] == "trace-42"
    assert up.hits[0][0]["x-request-id"] == "trace-42"
    _, headers, _ = await harness.chat(key=None, headers={"x-request-id": "bad id\twith spaces"})
    assert headers["x-request-id"] != "bad id\twith spaces"


async def test_credentials_and_hop_by_hop_headers_stay_at_the_gateway(
    harness: Harness, upstreams: Start
) -> None:
    async def with_hop_headers(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
        return web.json_response(COMPLETION, headers={"X-Upstream": "a", "Keep-Alive": "timeout=5"})

    up = await upstreams("a", with_hop_headers)
    harness.add("a", up)
    status, headers, _ = await harness.chat(
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "TE": "trailers",
            "X-Custom": "kept",
        }
    )
    assert status == 200
    sent = {k.lower(): v for k, v in up.hits[0][0].items()}
    assert "authorization" not in sent
    assert "x-hop" not in sent
    assert "te" not in sent
    assert sent["x-custom"] == "kept"
    assert "Keep-Alive" not in headers
    assert headers["X-Upstream"] == "a"


async def test_compressed_answers_arrive_decoded_without_their_encoding(
    harness: Harness, upstreams: Start
) -> None:
    payload = orjson.dumps(COMPLETION)

    async def gzipped(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(payload),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    up = await upstreams("a", gzipped)
    harness.add("a", up)
    status, headers, body = await harness.chat()
    assert status == 200
    assert body == payload
    assert "Content-Encoding" not in headers


async def test_server_sent_events_stream_through_unbuffered(
    harness: Harness, upstreams: Start
) -> None:
    up = await upstreams("a", sse)
    harness.add("a", up)
    async with harness.client.post(
        "/v1/chat/completions",
        data=orjson.dumps({**CHAT_BODY, "stream": True}),
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        # The upstream holds its second event until we have seen the first: a buffering proxy
        # would deadlock here.
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b'data: {"n": 1}\n\n'
        up.proceed.set()
        rest = await resp.content.read()
    assert rest == b'data: {"n": 2}\n\ndata: [DONE]\n\n'


# -- refusals -------------------------------------------------------------------------------------


async def test_malformed_bodies_are_400(harness: Harness, upstreams: Start) -> None:
    up = await upstreams("a")
    harness.add("a", up)
    for body, param in ((b"{oops", None), (b"[]", None), (b'{"messages": []}', "model")):
        status, headers, raw = await harness.chat(body)
        assert status == 400
        error = error_of(raw)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert "x-request-id" in headers
    assert up.hits == []


async def test_missing_or_wrong_keys_are_401(harness: Harness, upstreams: Start) -> None:
    up = await upstreams("a")
    harness.add("a", up)
    for key, challenge in (
        (None, 'Bearer realm="aviator"'),
        (
            "sk-wrong",
            'Bearer realm="aviator", error="invalid_token", error_description="malformed"',
        ),
    ):
        status, headers, raw = await harness.chat(key=key)
        assert status == 401
        assert headers["WWW-Authenticate"] == challenge
        assert error_of(raw)["code"] == "invalid_api_key"
        assert "sk-wrong" not in raw.decode()
    # An API key is a principal subject to policy: with no policy, nothing is permitted.
    status, _, raw = await harness.chat(key="sk-other")
    assert status == 403
    assert error_of(raw)["code"] == "policy_denied"
    assert (await harness.chat())[0] == 200  # the admin token
    async with harness.client.get("/v1/models") as resp:
        assert resp.status == 401
    assert len(up.hits) == 1


async def test_unknown_models_are_404_and_unready_ones_503(
    harness: Harness, upstreams: Start
) -> None:
    status, _, raw = await harness.chat({**CHAT_BODY, "model": "nope"})
    assert status == 404
    assert error_of(raw)["code"] == "model_not_found"
    harness.table.apply("ADDED", replica("a", ready=False))
    status, headers, raw = await harness.chat()
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert error_of(raw)["type"] == "server_error"


async def test_bodies_over_the_limit_are_413(harness: Harness, upstreams: Start) -> None:
    up = await upstreams("a")
    harness.add("a", up)
    big = orjson.dumps({**CHAT_BODY, "pad": "x" * (64 * 1024)})
    status, _, raw = await harness.chat(big)
    assert status == 413
    assert error_of(raw)["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(80):
            yield b" " * 1024

    async with harness.client.post(
        "/v1/chat/completions", data=chunked(), headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        assert resp.status == 413
    assert up.hits == []


async def test_unknown_paths_and_methods_answer_in_openai_shape(harness: Harness) -> None:
    async with harness.client.get("/v1/nothing") as resp:
        assert resp.status == 404
        assert error_of(await resp.read())["code"] == "unknown_url"
        assert "x-request-id" in resp.headers
    async with harness.client.get("/v1/chat/completions") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"


# -- failures upstream ----------------------------------------------------------------------------


async def test_a_refused_connection_is_retried_on_another_replica(
    harness: Harness, upstreams: Start
) -> None:
    b = await upstreams("b")
    harness.add("a", dead_url())  # sorts first: the first pick
    harness.add("b", b)
    for _ in range(2):
        status, headers, _ = await harness.chat()
        assert status == 200
        assert headers["x-aviator-replica"] == "default/b"
    text = await harness.metrics()
    assert (sample(text, "aviator_gateway_upstream_retries_total") or 0) >= 1


async def test_a_failed_replica_is_not_tried_twice_even_when_it_looks_least_loaded(
    harness: Harness, upstreams: Start
) -> None:
    b = await upstreams("b", hold_then_ok)
    harness.add("a", dead_url())
    harness.add("b", b)
    first = asyncio.create_task(harness.chat())
    await until(lambda: len(b.hits) == 1)  # b is busy now, dead a looks idle
    second = asyncio.create_task(harness.chat())
    await until(lambda: len(b.hits) == 2)
    b.proceed.set()
    for status, headers, _ in await asyncio.gather(first, second):
        assert (status, headers["x-aviator-replica"]) == (200, "default/b")


async def test_a_retry_sees_replicas_that_left_the_table_meanwhile(
    harness: Harness, upstreams: Start
) -> None:
    ups = {name: await upstreams(name) for name in "bcd"}

    async def unready_c_then_500(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
        harness.table.apply("MODIFIED", replica("c", url=ups["c"].url, ready=False))
        return web.json_response({"error": "boom"}, status=500)

    harness.add("a", await upstreams("a", unready_c_then_500))
    for name, up in ups.items():
        harness.add(name, up)
    status, headers, _ = await harness.chat()
    assert status == 200
    assert headers["x-aviator-replica"] != "default/c"
    assert ups["c"].hits == []


async def test_a_5xx_before_the_first_byte_is_retried(harness: Harness, upstreams: Start) -> None:
    a, b = await upstreams("a", answer_500), await upstreams("b")
    harness.add("a", a)
    harness.add("b", b)
    status, headers, _ = await harness.chat()
    assert status == 200
    assert headers["x-aviator-replica"] == "default/b"
    assert (len(a.hits), len(b.hits)) == (1, 1)


async def test_when_every_replica_fails_the_answer_is_502_after_bounded_attempts(
    harness: Harness, upstreams: Start
) -> None:
    failing = [await upstreams(f"r{i}", answer_500) for i in range(5)]
    for i, up in enumerate(failing):
        harness.add(f"r{i}", up)
    status, headers, raw = await harness.chat()
    assert status == 502
    error = error_of(raw)
    assert error["code"] == "upstream_error"
    assert "answered 500" in str(error["message"])
    assert sum(len(up.hits) for up in failing) == 3  # max_attempts
    assert headers["x-aviator-replica"].startswith("default/r")
    text = await harness.metrics()
    assert sample(text, "aviator_gateway_requests_total", model="m", code="502") == 1


async def test_nothing_is_retried_once_bytes_were_streamed(
    harness: Harness, upstreams: Start
) -> None:
    a, b = await upstreams("a", first_chunk_then_die), await upstreams("b")
    harness.add("a", a)
    harness.add("b", b)
    async with harness.client.post(
        "/v1/chat/completions",
        data=orjson.dumps(CHAT_BODY),
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert b.hits == []
    assert harness.gateway.inflight.snapshot() == {}


async def test_a_short_answer_cut_before_its_end_is_a_clean_502(
    harness: Harness, upstreams: Start
) -> None:
    async def short_body(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"id": ')
        assert request.transport is not None
        request.transport.close()
        return resp

    a, b = await upstreams("a", short_body), await upstreams("b")
    harness.add("a", a)
    harness.add("b", b)
    status, headers, raw = await harness.chat()
    assert status == 502  # nothing had reached the client: it gets an error, not a torn body
    assert error_of(raw)["code"] == "upstream_error"
    assert headers["x-aviator-replica"] == "default/a"
    assert b.hits == []  # the replica may have done the work: no second try


# -- load spreading and cancellation --------------------------------------------------------------


async def test_concurrent_requests_spread_by_least_inflight(
    harness: Harness, upstreams: Start
) -> None:
    a, b, c = (
        await upstreams("a", hold_then_ok),
        await upstreams("b", hold_then_ok),
        await upstreams("c"),
    )
    harness.add("a", a)
    harness.add("b", b)
    tasks = [asyncio.create_task(harness.chat()) for _ in range(6)]
    await until(lambda: len(a.hits) + len(b.hits) == 6)
    assert (len(a.hits), len(b.hits)) == (3, 3)
    assert harness.gateway.inflight.snapshot() == {"default/a": 3, "default/b": 3}
    # A third, idle replica takes the next requests while the others are busy.
    harness.add("c", c)
    status, headers, _ = await harness.chat()
    assert (status, headers["x-aviator-replica"]) == (200, "default/c")
    text = await harness.metrics()
    assert sample(text, "aviator_gateway_inflight_requests", model="m") == 6
    a.proceed.set()
    b.proceed.set()
    assert [status for status, _, _ in await asyncio.gather(*tasks)] == [200] * 6
    assert harness.gateway.inflight.snapshot() == {}


@pytest.mark.parametrize("handler", [hang, first_chunk_then_hang])
async def test_a_client_that_goes_away_cancels_the_upstream_request(
    harness: Harness,
    upstreams: Start,
    handler: Callable[[FakeUpstream, web.Request], Awaitable[web.StreamResponse]],
) -> None:
    up = await upstreams("a", handler)
    harness.add("a", up)
    async with aiohttp.ClientSession() as session:

        async def call() -> None:
            async with session.post(
                harness.client.make_url("/v1/chat/completions"),
                data=orjson.dumps(CHAT_BODY),
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                await resp.content.readuntil(b"\n\n")
                await asyncio.Event().wait()

        task = asyncio.create_task(call())
        await asyncio.wait_for(up.started.wait(), 5)
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(up.cancelled.wait(), 5)
    await until(lambda: harness.gateway.inflight.snapshot() == {})
    text = await harness.metrics()
    assert sample(text, "aviator_gateway_requests_total", model="m", code=str(CLIENT_CLOSED)) == 1
    assert sample(text, "aviator_gateway_inflight_requests", model="m") == 0


async def test_a_replica_that_turns_unready_gets_no_more_traffic(
    harness: Harness, upstreams: Start
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    harness.add("a", a)
    harness.add("b", b)
    harness.table.apply("MODIFIED", replica("a", url=a.url, ready=False))
    for _ in range(4):
        status, headers, _ = await harness.chat()
        assert (status, headers["x-aviator-replica"]) == (200, "default/b")
    assert a.hits == []


# -- models, health, metrics ----------------------------------------------------------------------


async def test_models_lists_every_known_model(harness: Harness) -> None:
    harness.table.apply("ADDED", replica("a", model="m2"))
    harness.table.apply("ADDED", replica("b", model="m1", ready=False))
    async with harness.client.get(
        "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["object"] == "list"
    assert [m["id"] for m in doc["data"]] == ["m1", "m2"]


async def test_health_waits_for_the_first_sync(harness: Harness) -> None:
    harness.feed.synced.clear()
    async with harness.client.get("/health") as resp:
        assert resp.status == 503
        assert "x-request-id" in resp.headers
    harness.feed.synced.set()
    async with harness.client.get("/health") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"


async def test_metrics_move(harness: Harness, upstreams: Start) -> None:
    up = await upstreams("a")
    harness.add("a", up)
    harness.table.apply("ADDED", replica("x", model="idle", ready=False))
    for _ in range(3):
        await harness.chat()
    await harness.chat({**CHAT_BODY, "model": "made-up"})
    text = await harness.metrics()
    assert sample(text, "aviator_gateway_requests_total", model="m", code="200") == 3
    assert sample(text, "aviator_gateway_requests_total", model="", code="404") == 1
    assert (
        sample(
            text,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_operation_name="chat",
            gen_ai_provider_name="aviator",
            gen_ai_request_model="m",
            error_type="",
        )
        == 3
    )
    assert (
        sample(
            text,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_request_model="",
            error_type="404",
        )
        == 1
    )
    assert sample(text, "aviator_gateway_endpoints", model="m") == 1
    assert sample(text, "aviator_gateway_endpoints", model="idle") == 0
    assert sample(text, "aviator_gateway_inflight_requests", model="m") == 0
    assert "made-up" not in text


# -- the server -----------------------------------------------------------------------------------


async def test_the_server_lets_requests_in_flight_finish_when_stopped(
    settings: GatewaySettings, upstreams: Start
) -> None:
    up = await upstreams("a", hold_then_ok)
    table = EndpointTable()
    table.apply("ADDED", replica("a", url=up.url))
    credentials, governance = governed(insecure=True)
    server = GatewayServer(
        Gateway(
            settings=replace(settings, port=0),
            table=table,
            feed=StaticFeed(),
            authenticator=credentials,
            governance=governance,
        ),
        shutdown_grace_s=5.0,
    )
    await server.start()
    async with aiohttp.ClientSession() as session:
        call = asyncio.create_task(
            session.post(f"{server.url}/v1/chat/completions", data=orjson.dumps(CHAT_BODY))
        )
        await asyncio.wait_for(up.started.wait(), 5)
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.1)
        assert not stopping.done()  # waiting for the request in flight
        up.proceed.set()
        resp = await asyncio.wait_for(call, 5)
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == COMPLETION
        await asyncio.wait_for(stopping, 5)
    with pytest.raises(RuntimeError):
        _ = server.port
