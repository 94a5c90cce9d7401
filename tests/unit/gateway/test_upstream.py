"""The request path's HTTP/1.1 client against real servers: aiohttp's, and scripted raw ones."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aviator.gateway.upstream import (
    AnswerBroken,
    ConnectFailed,
    ReadTimeout,
    UpstreamClient,
)

from .conftest import dead_url

JSON = [("Content-Type", "application/json")]


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=2.0)
    yield c
    await c.close()


@dataclass
class App:
    """An aiohttp server whose one route is ``handler``; it counts the connections it saw."""

    server: TestServer
    peers: set[tuple[str, int]] = field(default_factory=set)
    bodies: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[App]]]:
    apps: list[App] = []

    async def start(handler: Handler) -> App:
        async def route(request: web.Request) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            if peer is not None:
                found.peers.add(peer)
            found.bodies.append(await request.read())
            found.paths.append(request.path_qs)
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", route)
        found = App(TestServer(app, host="127.0.0.1"))
        await found.server.start_server()
        apps.append(found)
        return found

    yield start
    for app in apps:
        await app.server.close()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    """A TCP server that runs ``script`` per connection (for answers aiohttp would not send)."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(script: Script) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                await script(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
    for writer in writers:
        writer.close()
    for server in servers:
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body) off a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


async def post(client: UpstreamClient, url: str, body: bytes = b"{}", target: str = "/x") -> bytes:
    answer = await client.request("POST", url, target, headers=JSON, body=body)
    try:
        return await answer.read()
    finally:
        answer.release()


# -- framing --------------------------------------------------------------------------------------


async def test_a_content_length_answer_and_its_headers(client: UpstreamClient, serve) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True}, headers={"X-Up": "1"}, reason="Fine")

    app = await serve(ok)
    answer = await client.request("POST", app.url, "/v1/x?y=1", headers=JSON, body=b'{"a":1}')
    assert (answer.status, answer.reason) == (200, "Fine")
    assert answer.headers["x-up"] == "1"
    assert answer.content_length == len(b'{"ok": true}')
    assert await answer.read() == b'{"ok": true}'
    assert answer.at_eof()
    answer.release()
    assert app.bodies == [b'{"a":1}']
    assert app.paths == ["/v1/x?y=1"]


async def test_connections_are_kept_alive_and_reused(client: UpstreamClient, serve) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 100)

    app = await serve(ok)
    for _ in range(5):
        assert await post(client, app.url) == b"x" * 100
    assert len(app.peers) == 1


async def test_a_chunked_answer_arrives_piece_by_piece(client: UpstreamClient, serve) -> None:
    release = asyncio.Event()

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        await release.wait()
        await resp.write(b"data: 2\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = await serve(chunked)
    answer = await client.request("POST", app.url, "/x", headers=JSON, body=b"{}")
    assert answer.content_length is None
    # The server holds the rest until the first event was seen: no buffering in between.
    assert await asyncio.wait_for(answer.readany(), 2) == b"data: 1\n\n"
    release.set()
    rest = b""
    while piece := await answer.readany():
        rest += piece
    assert rest == b"data: 2\n\ndata: [DONE]\n\n"
    answer.release()
    assert await post(client, app.url) == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert len(app.peers) == 1  # the connection survived the chunked answer


async def test_chunked_framing_split_at_every_byte(client: UpstreamClient, raw) -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n05\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for i in range(len(wire)):
                writer.write(wire[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    url = await raw(trickle)
    assert await post(client, url) == b"hello world"
    assert await post(client, url) == b"hello world"  # and the connection is reusable


async def test_an_answer_delimited_by_the_close(client: UpstreamClient, raw) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"it")
        await writer.drain()

    url = await raw(until_close)
    assert await post(client, url) == b"all of it"
    assert await post(client, url) == b"all of it"  # a fresh connection


async def test_answers_without_a_body_and_informational_heads(client: UpstreamClient, raw) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    url = await raw(script)
    answer = await client.request("POST", url, "/x", headers=JSON)
    assert answer.status == 204
    assert await answer.read() == b""
    answer.release()
    assert await post(client, url) == b"ok"


async def test_gzip_and_deflate_are_decoded_other_codings_pass(
    client: UpstreamClient, serve
) -> None:
    payload = b'{"text": "' + b"compressible " * 50 + b'"}'

    async def encoded(request: web.Request) -> web.StreamResponse:
        coding = request.query["c"]
        body = {
            "gzip": gzip.compress(payload),
            "deflate": zlib.compress(payload),
            "br": b"not really brotli",
        }[coding]
        return web.Response(body=body, headers={"Content-Encoding": coding})

    app = await serve(encoded)
    for coding in ("gzip", "deflate"):
        answer = await client.request("GET", app.url, f"/?c={coding}", headers=())
        assert answer.decoded
        assert await answer.read() == payload
        answer.release()
    answer = await client.request("GET", app.url, "/?c=br", headers=())
    assert not answer.decoded
    assert answer.headers["Content-Encoding"] == "br"
    assert await answer.read() == b"not really brotli"
    answer.release()


async def test_a_base_url_path_prefixes_the_target(client: UpstreamClient, serve) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text=request.headers["Host"])

    app = await serve(ok)
    host = await post(client, app.url + "/prefix/", target="/v1/chat")
    assert app.paths == ["/prefix/v1/chat"]
    assert host.decode() == app.url.removeprefix("http://")


# -- failures -------------------------------------------------------------------------------------


async def test_a_refused_connection_is_connect_failed(client: UpstreamClient) -> None:
    with pytest.raises(ConnectFailed):
        await client.request("POST", dead_url(), "/x", headers=JSON)


async def test_a_replica_that_goes_quiet_is_a_read_timeout(raw) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    url = await raw(silent)
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=0.1)
    try:
        with pytest.raises(ReadTimeout):
            await client.request("POST", url, "/x", headers=JSON)
    finally:
        await client.close()


async def test_a_body_that_goes_quiet_is_a_read_timeout(raw) -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()

    url = await raw(stalls)
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=0.1)
    try:
        answer = await client.request("POST", url, "/x", headers=JSON)
        assert await answer.readany() == b"abc"
        with pytest.raises(ReadTimeout):
            await answer.readany()
        answer.release()
    finally:
        await client.close()


async def test_an_answer_cut_short_is_broken(client: UpstreamClient, raw) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"id": ')

    url = await raw(cut)
    answer = await client.request("POST", url, "/x", headers=JSON)
    with pytest.raises(AnswerBroken):
        await answer.read()
    answer.release()


@pytest.mark.parametrize(
    "wire",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_answers_are_broken(client: UpstreamClient, raw, wire: bytes) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(wire)
        await reader.read()

    async def call() -> bytes:
        answer = await client.request("POST", url, "/x", headers=JSON)
        try:
            return await answer.read()
        finally:
            answer.release()

    url = await raw(bad)
    with pytest.raises(AnswerBroken):
        await call()


async def test_a_closed_idle_connection_is_replaced_not_failed(client: UpstreamClient, raw) -> None:
    connections = 0

    async def one_answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # Closes right after, without saying so: the client only learns it on its next use.

    url = await raw(one_answer_then_close)
    for _ in range(3):
        assert await post(client, url) == b"ok"
    assert connections == 3


async def test_cancelling_the_caller_closes_the_connection(client: UpstreamClient, raw) -> None:
    gone = asyncio.Event()
    received = asyncio.Event()
    head_first = True

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        received.set()
        if head_first:  # part of an answer, then nothing; else no answer at all
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()  # returns at the client's close
        gone.set()

    url = await raw(slow)
    answer = await client.request("POST", url, "/x", headers=JSON)
    reading = asyncio.create_task(answer.read())
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    answer.close()
    await asyncio.wait_for(gone.wait(), 2)

    head_first = False
    gone.clear()
    received.clear()
    waiting = asyncio.create_task(client.request("POST", url, "/x", headers=JSON))
    # Cancelled once the replica has the request (a fixed pause could cancel it while it is
    # still connecting, on a busy machine, and then no replica would ever see it go).
    await asyncio.wait_for(received.wait(), 5)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(gone.wait(), 2)


async def test_connections_in_use_are_bounded(raw) -> None:
    gate = asyncio.Event()
    active = 0
    most = 0

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, most
        while True:
            await read_request(reader)
            active += 1
            most = max(most, active)
            await gate.wait()
            active -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    url = await raw(held)
    client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=2.0, limit=2)
    try:
        calls = [asyncio.create_task(post(client, url)) for _ in range(5)]
        await asyncio.sleep(0.1)
        assert active == 2
        gate.set()
        assert await asyncio.gather(*calls) == [b"ok"] * 5
        assert most == 2
    finally:
        await client.close()


@pytest.mark.parametrize(
    "header",
    [("X-A", "1\r\nX-Injected: 1"), ("X-A", "1\nX-Injected: 1"), ("X-A", "1\r"), ("X-\rA", "1")],
)
async def test_line_breaks_in_headers_are_refused(
    client: UpstreamClient, serve, header: tuple[str, str]
) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response()

    app = await serve(ok)
    with pytest.raises(ValueError, match="line break"):
        await client.request("POST", app.url, "/x", headers=[("X-Ok", "1"), header])
    assert app.bodies == []


async def test_a_slow_reader_pauses_the_replica(client: UpstreamClient, serve) -> None:
    sent = 0

    async def firehose(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(400):
            await resp.write(b"x" * 16384)
            sent += 16384
        await resp.write_eof()
        return resp

    app = await serve(firehose)
    answer = await client.request("GET", app.url, "/", headers=())
    first = await answer.readany()
    await asyncio.sleep(0.2)
    assert sent < 400 * 16384  # back-pressure held the server back
    total = len(first) + len(await answer.read())
    assert total == 400 * 16384
    answer.release()


def test_the_same_under_uvloop() -> None:
    """The gateway process runs on uvloop, whose transports differ from asyncio's."""
    import uvloop

    async def main() -> None:
        async def ok(request: web.Request) -> web.StreamResponse:
            await request.read()
            if request.path == "/stream":
                resp = web.StreamResponse()
                await resp.prepare(request)
                await resp.write(b"a")
                await resp.write(b"b")
                await resp.write_eof()
                return resp
            return web.Response(body=b"ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        client = UpstreamClient(connect_timeout_s=1.0, read_timeout_s=2.0)
        try:
            url = str(server.make_url("")).rstrip("/")
            assert await post(client, url) == b"ok"
            assert await post(client, url, target="/stream") == b"ab"
            assert await post(client, url) == b"ok"
            with pytest.raises(ConnectFailed):
                await client.request("POST", dead_url(), "/x", headers=JSON)
        finally:
            await client.close()
            await server.close()

    uvloop.run(main())


# -- the head as parsed ---------------------------------------------------------------------------


async def test_header_lines_are_kept_as_sent_and_the_first_values_noted(
    client: UpstreamClient, raw
) -> None:
    head = (
        b"HTTP/1.1 200 Fine Indeed\r\n"
        b"content-TYPE:  application/json \r\n"
        b"Content-Type: text/plain\r\n"
        b"X-Multi: 1\r\nx-multi: 2\r\n"
        b"Connection: keep-alive, X-Hop\r\nconnection: close\r\n"
        b"X-Text: caf\xc3\xa9\r\n"
        b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    )

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        await reader.read()

    url = await raw(script)
    answer = await client.request("POST", url, "/x", headers=JSON)
    assert (answer.status, answer.reason, answer.content_length) == (200, "Fine Indeed", 2)
    assert answer.content_type == "application/json"  # the first one, blanks stripped
    assert answer.connection == "keep-alive, X-Hop"
    assert answer.fields == [
        ("content-type", "content-TYPE", "application/json"),
        ("content-type", "Content-Type", "text/plain"),
        ("x-multi", "X-Multi", "1"),
        ("x-multi", "x-multi", "2"),
        ("connection", "Connection", "keep-alive, X-Hop"),
        ("connection", "connection", "close"),
        ("x-text", "X-Text", "café"),
        ("content-length", "Content-Length", "2"),
        ("content-length", "Content-Length", "2"),
    ]
    assert answer.headers.getall("X-MULTI") == ["1", "2"]
    assert answer.headers["content-type"] == "application/json"
    assert answer.ready() == b"ok"  # it all arrived with the head
    answer.release()


async def test_a_body_still_arriving_is_not_ready_until_it_has(client: UpstreamClient, raw) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"cd")
        await reader.read()

    url = await raw(slow)
    answer = await client.request("POST", url, "/x", headers=JSON)
    assert answer.ready() is None
    assert await answer.read() == b"abcd"
    assert answer.ready() == b""  # read: nothing left
    answer.release()


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\n",  # a digit, but not an ASCII one
        b"HTTP/1.1 \xd9\xa3\xd9\xa3\xd9\xa3 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Trailing-Blank\t: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    ],
)
async def test_heads_the_line_parser_refuses(client: UpstreamClient, raw, wire: bytes) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(wire)
        await reader.read()

    url = await raw(bad)
    with pytest.raises(AnswerBroken):
        await client.request("POST", url, "/x", headers=JSON)


async def test_a_line_seen_before_is_taken_the_same_way_again(client: UpstreamClient, raw) -> None:
    # Header lines are remembered once parsed: what a line means for the connection must still
    # apply on every answer that carries it.
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nX-Same:  1\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        )
        await reader.read()

    url = await raw(script)
    for _ in range(3):
        answer = await client.request("POST", url, "/x", headers=JSON)
        assert answer.fields[0] == ("x-same", "X-Same", "1")
        assert answer.connection == "close"
        assert await answer.read() == b"ok"
        answer.release()
    assert connections == 3  # each answer closed its connection
