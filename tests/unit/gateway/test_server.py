"""The data plane's HTTP/1.1 server on its own, over real loopback sockets.

Protocol-level cases speak raw bytes through ``asyncio.open_connection`` and read the answers
with a small parser of their own (``read_answer``), so that framing mistakes show; cases where
any well-behaved client will do use aiohttp's. Every wait has a deadline: a test that hangs
fails in seconds, never at the suite's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.gateway.server import (
    HEAD_MAX_BYTES,
    HEADERS_MAX,
    URL_MAX_BYTES,
    Handler,
    HttpServer,
    Request,
    Response,
    ResponseStream,
)

from .conftest import until

DEADLINE = 5.0
"""No single wait in these tests comes near it; a hang fails here rather than at the suite's."""


# --- a server, a client, an answer ----------------------------------------------------------


@dataclass
class Served:
    server: HttpServer
    port: int
    errors: list[tuple[int, str, Request | None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        """Close the server, and every client connection (also those of a test that failed)."""
        await self.server.close(0)
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Serve = Callable[..., Awaitable[Served]]


async def start_server(
    handler: Handler,
    *,
    max_body_bytes: int = 1024,
    keepalive_s: float = 75.0,
    request_timeout_s: float = 60.0,
    write_timeout_s: float = 60.0,
) -> Served:
    recorded: list[tuple[int, str, Request | None]] = []

    def errors(status: int, message: str, request: Request | None) -> Response:
        recorded.append((status, message, request))
        return Response(
            status,
            f"error {status}: {message}".encode(),
            headers=[("Content-Type", "text/plain"), ("X-Error-Page", "1")],
        )

    server = HttpServer(
        handler,
        errors=errors,
        max_body_bytes=max_body_bytes,
        keepalive_s=keepalive_s,
        request_timeout_s=request_timeout_s,
        write_timeout_s=write_timeout_s,
    )
    await server.start("127.0.0.1", 0)
    return Served(server, server.sockets[0].getsockname()[1], recorded)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start ``HttpServer``s on ephemeral loopback ports; all are closed after the test."""
    started: list[Served] = []

    async def start(handler: Handler, **options: float) -> Served:
        served = await start_server(handler, **options)  # type: ignore[arg-type]
        started.append(served)
        return served

    yield start
    for served in started:
        await served.close()


@dataclass
class Answer:
    version: str
    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names; a name repeated is an error of the server's (``read_answer`` fails)."""
    body: bytes
    chunks: list[bytes]
    """The body's chunks as framed, when chunked."""


async def read_answer(reader: asyncio.StreamReader, *, head: bool = False) -> Answer:
    """One response off the wire; raises ``IncompleteReadError`` if it is cut short."""
    line = (await reader.readuntil(b"\r\n")).decode("latin-1")
    version, status, reason = line.rstrip("\r\n").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := (await reader.readuntil(b"\r\n")).decode("latin-1")) != "\r\n":
        assert "\r" not in line[:-2] and "\n" not in line[:-2]
        name, colon, value = line.partition(":")
        assert colon, f"a header line without a colon: {line!r}"
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    code = int(status)
    chunks: list[bytes] = []
    if head or code in (204, 304) or code < 200:
        body = b""
    elif "content-length" in headers:
        assert "transfer-encoding" not in headers
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            chunks.append(await reader.readexactly(size))
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readexactly(2) == b"\r\n"  # no trailers
        body = b"".join(chunks)
    else:
        assert headers.get("connection") == "close", "an answer without framing must close"
        body = await reader.read()
    return Answer(version, code, reason, headers, body, chunks)


async def assert_closed(reader: asyncio.StreamReader) -> None:
    """The server ends the connection (closed, or reset) and sends nothing more."""
    try:
        rest = await reader.read()
    except ConnectionResetError:
        return
    assert rest == b""


def request(
    method: str = "GET",
    target: str = "/",
    *,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    version: str = "1.1",
) -> bytes:
    """A request with ``Content-Length`` when it has a body."""
    lines = [f"{method} {target} HTTP/{version}", "Host: test"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def echo(request: Request) -> Response:
    """Answers with the request's body, and what it was in headers."""
    return Response(
        200,
        request.body,
        headers=[
            ("X-Method", request.method),
            ("X-Target", request.target),
            ("X-Version", request.version),
            ("X-Oversized", str(request.oversized)),
        ],
    )


# --- keep-alive and pipelining --------------------------------------------------------------


async def test_one_connection_serves_several_requests(serve: Serve) -> None:
    served = await serve(echo)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        for n in range(3):
            writer.write(request("POST", f"/n/{n}", body=b"body %d" % n))
            answer = await read_answer(reader)
            assert (answer.status, answer.body) == (200, b"body %d" % n)
            assert answer.headers["x-target"] == f"/n/{n}"
            assert "connection" not in answer.headers
        writer.close()
    assert len(served.server.connections) <= 1


async def test_a_client_session_reuses_its_connection(serve: Serve) -> None:
    served = await serve(echo)
    connector = aiohttp.TCPConnector(limit=1)
    async with asyncio.timeout(DEADLINE), aiohttp.ClientSession(connector=connector) as session:
        for n in range(5):
            async with session.post(served.url + "/x", data=b"%d" % n) as resp:
                assert resp.status == 200
                assert await resp.read() == b"%d" % n
        assert len(served.server.connections) == 1


async def test_http_1_0_closes_unless_asked_to_keep_alive(serve: Serve) -> None:
    served = await serve(echo)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(version="1.0"))
        answer = await read_answer(reader)
        assert (answer.version, answer.status) == ("HTTP/1.0", 200)
        assert answer.headers["connection"] == "close"
        await assert_closed(reader)
        writer.close()

        reader, writer = await served.connect()
        for _ in range(2):
            writer.write(request(version="1.0", headers=[("Connection", "keep-alive")]))
            answer = await read_answer(reader)
            assert answer.status == 200
            assert answer.headers["connection"] == "keep-alive"
        writer.close()


async def test_connection_close_from_the_client_closes_after_the_answer(serve: Serve) -> None:
    served = await serve(echo)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        # The second request follows the one asking to close: it is not served.
        writer.write(request(headers=[("Connection", "close")]) + request(target="/after"))
        answer = await read_answer(reader)
        assert answer.headers["connection"] == "close"
        assert answer.headers["x-target"] == "/"
        await assert_closed(reader)
        writer.close()


PIPELINE = [
    request("POST", f"/p/{n}", body=b"payload-%d " % n * (n + 1))
    if n % 3
    else request("GET", f"/p/{n}?q={n}")
    for n in range(24)  # more than the server queues before it pauses reading
]


def expected(n: int) -> bytes:
    return b"payload-%d " % n * (n + 1) if n % 3 else b""


async def test_pipelined_requests_are_answered_in_order(serve: Serve) -> None:
    async def slow_for_some(request: Request) -> Response:
        if request.target.endswith("/1"):
            await asyncio.sleep(0.01)  # a slow first answer must not let later ones overtake it
        return await echo(request)

    served = await serve(slow_for_some)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(b"".join(PIPELINE))
        for n in range(len(PIPELINE)):
            answer = await read_answer(reader)
            assert answer.headers["x-target"].startswith(f"/p/{n}")
            assert answer.body == expected(n)
        writer.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(min_value=0, max_value=sum(map(len, PIPELINE[:8]))), max_size=12))
async def test_pipelined_bytes_cut_anywhere_get_the_same_answers(cuts: list[int]) -> None:
    """The pieces go straight to the connection's protocol, so each is parsed on its own (over
    the socket, the kernel could join them); the answers go back over the socket."""
    stream = b"".join(PIPELINE[:8])
    bounds = sorted({0, len(stream), *cuts})
    served = await start_server(echo)
    try:
        async with asyncio.timeout(DEADLINE):
            reader, writer = await served.connect()
            await until(lambda: len(served.server.connections) == 1)
            (connection,) = served.server.connections
            for start, end in itertools.pairwise(bounds):
                connection.data_received(stream[start:end])
                await asyncio.sleep(0)  # and a handler may run between pieces
            for n in range(8):
                answer = await read_answer(reader)
                assert answer.headers["x-target"].startswith(f"/p/{n}")
                assert answer.body == expected(n)
            writer.close()
    finally:
        await served.close()


# --- bodies ---------------------------------------------------------------------------------


async def test_chunked_bodies_arrive_whole(serve: Serve) -> None:
    seen: list[bytes] = []

    async def record(request: Request) -> Response:
        seen.append(request.body)
        return await echo(request)

    served = await serve(record)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"hello", b", ", b"world"):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        answer = await read_answer(reader)
        assert answer.body == b"hello, world"
        assert seen == [b"hello, world"]
        writer.close()


async def test_trailers_are_not_headers(serve: Serve) -> None:
    """A trailer is read past, never added to the headers (a proxy in front may not check it)."""
    seen: list[Request] = []

    async def record(request: Request) -> Response:
        seen.append(request)
        return await echo(request)

    served = await serve(record)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(
            b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-Role: user\r\n\r\n"
            b"2\r\nhi\r\n0\r\nX-Role: admin\r\nAuthorization: Bearer x\r\n\r\n"
        )
        assert (await read_answer(reader)).body == b"hi"
        writer.close()
    ((req,),) = [seen]
    assert req.headers == {"host": "t", "transfer-encoding": "chunked", "x-role": "user"}


async def test_header_names_are_lower_cased_however_often_they_come(serve: Serve) -> None:
    # (Names seen before are looked up, not decoded again: the result must not differ.)
    seen: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(200, b"ok")

    served = await serve(record)
    long_name = "X-" + "N" * 100
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        for _ in range(3):
            writer.write(
                request(headers=[("X-Thing", "1"), ("x-THING", "2"), (long_name, "3")])
                + request(headers=[("x-thing", "4"), ("X-Other", "5")])
            )
            for _ in range(2):
                assert (await read_answer(reader)).status == 200
        writer.close()
    assert (
        seen
        == [
            {"host": "test", "x-thing": "1, 2", long_name.lower(): "3"},
            {"host": "test", "x-thing": "4", "x-other": "5"},
        ]
        * 3
    )


async def test_a_body_over_the_limit_by_content_length_is_not_read(serve: Serve) -> None:
    seen: list[Request] = []

    async def refuse(request: Request) -> Response:
        seen.append(request)
        return Response(413, b"too large") if request.oversized else await echo(request)

    served = await serve(refuse, max_body_bytes=16)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request("POST", body=b"x" * 16))  # at the limit: fine
        assert (await read_answer(reader)).body == b"x" * 16
        writer.write(request("POST", body=b"x" * 17))
        answer = await read_answer(reader)
        assert (answer.status, answer.body) == (413, b"too large")
        assert answer.headers["connection"] == "close"
        await assert_closed(reader)
        writer.close()
    assert [(r.oversized, r.body) for r in seen] == [(False, b"x" * 16), (True, b"")]


async def test_a_chunked_body_over_the_limit_is_cut_off(serve: Serve) -> None:
    seen: list[Request] = []

    async def refuse(request: Request) -> Response:
        seen.append(request)
        return Response(413, b"too large")

    served = await serve(refuse, max_body_bytes=16)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"a\r\n0123456789\r\n" * 2)  # 20 bytes: over, with more to come
        answer = await read_answer(reader)
        assert (answer.status, answer.headers["connection"]) == (413, "close")
        await assert_closed(reader)
        writer.close()
    assert [(r.oversized, r.body, r.keep_alive) for r in seen] == [(True, b"", False)]


async def test_a_large_body_from_a_client_library_gets_the_413(serve: Serve) -> None:
    """A client still sending a body the server will not read must see the answer, not a reset."""

    async def refuse(request: Request) -> Response:
        return Response(413, b"too large") if request.oversized else await echo(request)

    served = await serve(refuse, max_body_bytes=1024)
    async with (
        asyncio.timeout(DEADLINE),
        aiohttp.ClientSession() as session,
        session.post(served.url, data=b"x" * 200_000) as resp,
    ):
        assert resp.status == 413
        assert await resp.read() == b"too large"


async def test_expect_100_continue_invites_the_body(serve: Serve) -> None:
    async def refuse(request: Request) -> Response:
        return Response(413, b"too large") if request.oversized else await echo(request)

    served = await serve(refuse, max_body_bytes=16)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        head = b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        writer.write(head)
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        answer = await read_answer(reader)
        assert (answer.status, answer.body) == (200, b"hello")

        # Too large: no invitation, the handler's answer straight away, then the close.
        writer.write(head.replace(b"Length: 5", b"Length: 17"))
        answer = await read_answer(reader)
        assert (answer.status, answer.body) == (413, b"too large")
        await assert_closed(reader)
        writer.close()


async def test_a_client_library_waiting_for_100_continue(serve: Serve) -> None:
    served = await serve(echo)
    async with (
        asyncio.timeout(DEADLINE),
        aiohttp.ClientSession() as session,
        session.post(served.url, data=b"abc", expect100=True) as resp,
    ):
        assert (resp.status, await resp.read()) == (200, b"abc")


# --- limits and malformed requests ----------------------------------------------------------


async def refused(served: Served, data: bytes) -> Answer:
    """The answer to ``data`` sent on a fresh connection, which the server must then close."""
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(data)
        answer = await read_answer(reader)
        assert answer.headers["connection"] == "close"
        assert answer.headers["x-error-page"] == "1"
        assert answer.body.startswith(b"error %d: " % answer.status)
        await assert_closed(reader)
        writer.close()
    return answer


async def test_a_target_too_long_is_414(serve: Serve) -> None:
    served = await serve(echo)
    ok = "/" + "a" * (URL_MAX_BYTES - 1)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(target=ok))
        assert (await read_answer(reader)).headers["x-target"] == ok
        writer.close()
    assert (await refused(served, request(target=ok + "a"))).status == 414


async def test_headers_too_large_or_too_many_are_431(serve: Serve) -> None:
    served = await serve(echo)
    big = [("X-Big", "v" * (HEAD_MAX_BYTES // 2)), ("X-Bigger", "v" * (HEAD_MAX_BYTES // 2))]
    assert (await refused(served, request(headers=big))).status == 431
    many = [(f"X-{n}", "v") for n in range(HEADERS_MAX)]
    assert (await refused(served, request(headers=many))).status == 431
    # Lines are counted, not names: one name repeated must not slip past the limit.
    repeated = [("X-Same", "v")] * (HEADERS_MAX + 1)
    assert (await refused(served, request(headers=repeated))).status == 431
    # Just under both limits is served.
    fine = [(f"X-{n}", "v") for n in range(HEADERS_MAX - 1)]  # with Host: HEADERS_MAX lines
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(headers=fine))
        assert (await read_answer(reader)).status == 200
        writer.close()


async def test_a_header_line_that_never_ends_is_431_before_it_is_buffered(
    serve: Serve,
) -> None:
    served = await serve(echo)
    limit = 64 * HEAD_MAX_BYTES  # 4 MiB: far past any header limit
    sent = 0

    async def send(writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        piece = b"v" * 16 * 1024
        while sent < limit:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)

    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sender = asyncio.create_task(send(writer))
        answer = asyncio.create_task(read_answer(reader))
        try:
            await asyncio.wait([sender, answer], return_when=asyncio.FIRST_COMPLETED)
            assert not sender.done() or sender.exception() is not None, "read without bound"
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                # (a reset can beat the answer while the client is still sending)
                assert (await answer).status == 431
        finally:
            for task in (sender, answer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        writer.close()
    assert sent < limit


async def test_garbage_is_400(serve: Serve) -> None:
    served = await serve(echo)
    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
        b"GET / HTTP/1.1\r\nHost t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\n  folded\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        assert (await refused(served, garbage)).status == 400, garbage


async def test_request_smuggling_is_refused(serve: Serve) -> None:
    """llhttp (strict) refuses framing two ways (400); a transfer coding other than chunked,
    which llhttp would take as chunked, is not implemented (501). Nothing reaches the handler."""
    handled: list[Request] = []

    async def record(request: Request) -> Response:
        handled.append(request)
        return await echo(request)

    served = await serve(record)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    for framing in (
        f"Content-Length: {len(smuggled) + 5}\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 3",
        "Content-Length: 5\r\nContent-Length: 41",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5, 41",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    ):
        head = f"POST / HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n".encode()
        answer = await refused(served, head + b"0\r\n\r\n" + smuggled)
        assert answer.status in (400, 501), framing
    assert handled == []


async def test_versions_other_than_1_0_and_1_1_are_505(serve: Serve) -> None:
    served = await serve(echo)
    for version in ("2.0", "0.9"):
        answer = await refused(served, request(version=version))
        assert (answer.version, answer.status) == ("HTTP/1.1", 505)


async def test_an_upgrade_is_answered_then_the_connection_closed(serve: Serve) -> None:
    served = await serve(echo)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        upgrade = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")]
        writer.write(request(headers=[*upgrade, ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")]))
        answer = await read_answer(reader)
        assert (answer.status, answer.headers["connection"]) == (200, "close")
        await assert_closed(reader)
        writer.close()


async def test_an_unsupported_expectation_is_417(serve: Serve) -> None:
    served = await serve(echo)
    answer = await refused(served, request(headers=[("Expect", "something-else")]))
    assert answer.status == 417
    assert served.errors[-1][0] == 417


# --- headers --------------------------------------------------------------------------------


async def test_request_header_names_are_lower_case_and_repeats_joined(serve: Serve) -> None:
    seen: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        seen.append(request.headers)
        return Response(204)

    served = await serve(record)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(headers=[("X-Tag", "a"), ("ACCEPT", "text/plain"), ("x-tag", "b, c")]))
        answer = await read_answer(reader)
        assert answer.status == 204
        writer.close()
    assert seen == [{"host": "test", "x-tag": "a, b, c", "accept": "text/plain"}]


@settings(max_examples=60, deadline=None)
@given(
    value=st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
        max_size=40,
    ).map(str.strip)
)
async def test_header_values_round_trip(value: str) -> None:
    """Any visible latin-1 value (and inner spaces) gets to the handler and back unchanged."""

    async def mirror(request: Request) -> Response:
        return Response(200, headers=[("X-Back", request.headers["x-value"])])

    served = await start_server(mirror)
    try:
        async with asyncio.timeout(DEADLINE):
            reader, writer = await served.connect()
            writer.write(request(headers=[("X-Value", value)]))
            answer = await read_answer(reader)
            assert answer.headers["x-back"] == value
            writer.close()
    finally:
        await served.close()


@pytest.mark.parametrize(
    "answer",
    [
        Response(200, b"ok", headers=[("X-Evil", "a\r\nSet-Cookie: x=1")]),
        Response(200, b"ok", headers=[("X-Evil", "a\nb")]),
        Response(200, b"ok", headers=[("X-Evil\r\nSet-Cookie", "x=1")]),
        Response(200, b"ok", headers=[("X-Evil", "\u2603")]),  # not latin-1
        Response(200, b"ok", reason="OK\r\nSet-Cookie: x=1"),
    ],
)
async def test_a_header_with_cr_or_lf_is_never_sent(serve: Serve, answer: Response) -> None:
    async def evil(request: Request) -> Response:
        return answer

    served = await serve(evil)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request() + request(target="/again"))
        for _ in range(2):  # the connection is still usable
            got = await read_answer(reader)
            assert got.status == 500
            assert got.headers["x-error-page"] == "1"
            assert "set-cookie" not in got.headers
        writer.close()
    assert [status for status, _, req in served.errors if req is not None] == [500, 500]


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        (Response(200, b"ok"), "HTTP/1.1 200 OK"),
        (Response(200, b"ok", reason="OK"), "HTTP/1.1 200 OK"),
        (Response(200, b"ok", reason="Fine"), "HTTP/1.1 200 Fine"),
        (Response(200, b"ok", reason=""), "HTTP/1.1 200 OK"),
        (Response(404, b"no", reason="Not Here"), "HTTP/1.1 404 Not Here"),
        (Response(299, b"ok"), "HTTP/1.1 299 Unknown"),
    ],
)
async def test_status_lines_carry_the_reason_given(
    serve: Serve, answer: Response, line: str
) -> None:
    async def given(request: Request) -> Response:
        return answer

    served = await serve(given)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request())
        got = await read_answer(reader)
        assert f"{got.version} {got.status} {got.reason}" == line
        writer.close()


async def test_every_answer_has_a_date_and_a_length(serve: Serve) -> None:
    async def various(request: Request) -> Response | ResponseStream:
        if request.path == "/stream":
            stream = await request.stream(200, [])
            await stream.write(b"x")
            await stream.finish()
            return stream
        if request.path == "/boom":
            raise RuntimeError("boom")
        return Response(201 if request.path == "/made" else 200, b"" if request.body else b"ok")

    served = await serve(various)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        for target in ("/", "/made", "/boom", "/stream"):
            writer.write(request(target=target))
            answer = await read_answer(reader)
            assert answer.headers["date"].endswith(" GMT")
            if target == "/stream":
                assert answer.headers["transfer-encoding"] == "chunked"
            else:
                assert answer.headers["content-length"] == str(len(answer.body))
        writer.close()
        assert (await refused(served, b"nonsense\r\n\r\n")).headers["date"]


async def test_head_answers_headers_only(serve: Serve) -> None:
    async def sized(request: Request) -> Response | ResponseStream:
        if request.path == "/stream":
            stream = await request.stream(200, [("X-Kind", "stream")])
            await stream.write(b"never sent")
            await stream.finish()
            return stream
        return Response(200, b"twelve bytes", headers=[("Content-Type", "text/plain")])

    served = await serve(sized)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request("HEAD") + request("HEAD", "/stream") + request("GET"))
        answer = await read_answer(reader, head=True)
        assert answer.headers["content-length"] == "12"
        answer = await read_answer(reader, head=True)
        assert answer.headers["x-kind"] == "stream"
        # Had any body bytes followed either, this would not parse as the GET's answer.
        answer = await read_answer(reader)
        assert answer.body == b"twelve bytes"
        writer.close()


# --- streamed answers -----------------------------------------------------------------------


async def streamer(request: Request) -> ResponseStream:
    length = request.headers.get("x-length")
    stream = await request.stream(
        200,
        [("Content-Type", "text/plain")],
        content_length=int(length) if length is not None else None,
    )
    for piece in (b"one ", b"two ", b"three"):
        await stream.write(piece)
    if "x-unfinished" not in request.headers:
        await stream.finish()
    return stream


async def test_a_stream_is_chunked_on_http_1_1(serve: Serve) -> None:
    served = await serve(streamer)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        for _ in range(2):  # and the connection stays open after it
            writer.write(request())
            answer = await read_answer(reader)
            assert answer.headers["transfer-encoding"] == "chunked"
            assert answer.chunks == [b"one ", b"two ", b"three"]
        writer.close()
    async with (
        asyncio.timeout(DEADLINE),
        aiohttp.ClientSession() as session,
        session.get(served.url) as resp,
    ):
        assert resp.headers["Transfer-Encoding"] == "chunked"
        pieces = [data async for data, _ in resp.content.iter_chunks()]
        assert b"".join(pieces) == b"one two three"


async def test_a_stream_of_known_length_uses_content_length(serve: Serve) -> None:
    served = await serve(streamer)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(headers=[("X-Length", "13")]) + request(headers=[("X-Length", "13")]))
        for _ in range(2):
            answer = await read_answer(reader)
            assert answer.headers["content-length"] == "13"
            assert answer.body == b"one two three"
        writer.close()


async def test_a_stream_on_http_1_0_ends_with_the_connection(serve: Serve) -> None:
    served = await serve(streamer)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(version="1.0", headers=[("Connection", "keep-alive")]))
        answer = await read_answer(reader)  # reads to the end of the connection
        assert answer.headers["connection"] == "close"
        assert "transfer-encoding" not in answer.headers
        assert answer.body == b"one two three"
        writer.close()


@pytest.mark.parametrize("length", [None, "20"])
async def test_an_unfinished_stream_is_cut_off(serve: Serve, length: str | None) -> None:
    served = await serve(streamer)
    headers = [("X-Unfinished", "1")]
    if length is not None:
        headers.append(("X-Length", length))
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(headers=headers))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await read_answer(reader)
        writer.close()


async def test_a_stream_broken_by_an_exception_is_cut_off(serve: Serve) -> None:
    """Once a stream's head is out, an error cannot become a 500: the connection is cut."""

    async def breaks(request: Request) -> ResponseStream:
        stream = await request.stream(200, [], content_length=None if request.path == "/" else 5000)
        await stream.write(b"partial")
        raise RuntimeError("the upstream broke")

    served = await serve(breaks)
    for target in ("/", "/sized"):
        async with asyncio.timeout(DEADLINE):
            reader, writer = await served.connect()
            writer.write(request(target=target))
            with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
                await read_answer(reader)
            writer.close()


async def test_a_client_that_does_not_read_holds_the_writer(serve: Serve) -> None:
    piece = b"x" * 256 * 1024
    total = 128 * len(piece)  # 32 MiB: more than socket buffers hold
    written = 0
    done = asyncio.Event()

    async def firehose(request: Request) -> ResponseStream:
        nonlocal written
        stream = await request.stream(200, [], content_length=total)
        while written < total:
            await stream.write(piece)
            written += len(piece)
        await stream.finish()
        done.set()
        return stream

    served = await serve(firehose)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request())
        await until(lambda: any(c.writing_paused for c in served.server.connections))
        (connection,) = served.server.connections
        with pytest.raises(TimeoutError):  # the handler waits while the client does not read
            await asyncio.wait_for(done.wait(), 0.2)
        assert written < total
        assert connection.transport is not None
        assert connection.transport.get_write_buffer_size() <= 64 * 1024 + len(piece)
        answer = await read_answer(reader)  # reading again lets the handler finish
        assert len(answer.body) == total
        await done.wait()
        writer.close()


async def test_a_client_that_reads_nothing_for_the_write_timeout_is_cut_off(
    serve: Serve,
) -> None:
    piece = b"x" * 256 * 1024
    failed: list[BaseException] = []

    async def firehose(request: Request) -> ResponseStream:
        stream = await request.stream(200, [])
        try:
            for _ in range(128):  # 32 MiB: more than socket buffers hold
                await stream.write(piece)
        except ConnectionError as exc:
            failed.append(exc)
            raise
        await stream.finish()
        return stream

    served = await serve(firehose, write_timeout_s=0.3)
    async with asyncio.timeout(DEADLINE):
        _, writer = await served.connect()
        writer.write(request())
        await until(lambda: bool(failed))  # the client never reads
        assert "read nothing" in str(failed[0])
        await until(lambda: not served.server.connections)
        writer.close()


async def test_a_stream_must_keep_to_its_announced_length(serve: Serve) -> None:
    errors: list[str] = []

    async def liar(request: Request) -> ResponseStream:
        stream = await request.stream(200, [], content_length=10)
        try:
            await stream.write(b"12345")
            if request.path == "/long":
                await stream.write(b"123456")  # one byte too many
            await stream.finish()  # five bytes short, on /short
        except ValueError as exc:
            errors.append(str(exc))
        return stream

    served = await serve(liar)
    for target in ("/long", "/short"):
        async with asyncio.timeout(DEADLINE):
            reader, writer = await served.connect()
            writer.write(request(target=target))
            with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
                await read_answer(reader)  # cut off, never a complete-looking answer
            writer.close()
    assert len(errors) == 2
    assert "6 bytes written with 5 left" in errors[0]
    assert "5 bytes short" in errors[1]


# --- cancellation and failures --------------------------------------------------------------


@dataclass
class Hanging:
    """A handler that answers nothing until it is cancelled, and says when each happened."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: Request) -> Response:
        self.started.set()
        try:
            await asyncio.sleep(DEADLINE * 2)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Response(200)


async def test_a_client_that_leaves_cancels_its_handler(serve: Serve) -> None:
    hanging = Hanging()
    started, cancelled = hanging.started, hanging.cancelled
    served = await serve(hanging)
    async with asyncio.timeout(DEADLINE):
        _, writer = await served.connect()
        writer.write(request())
        await started.wait()
        writer.close()
        await cancelled.wait()
        await until(lambda: not served.server.connections)


async def test_after_callbacks_run_once_the_answer_is_out_whatever_became_of_it(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    written: list[bytes] = []
    ran: list[tuple[str, int]] = []
    """(path, answers written when its callback ran)"""
    started = asyncio.Event()

    async def noting(request: Request) -> Response:
        connection = request._connection
        assert connection is not None
        transport: Any = connection.transport
        if not getattr(transport, "noted", False):  # count what each connection writes
            original = transport.write
            transport.write = lambda data: (written.append(bytes(data)), original(data))
            transport.noted = True
        request.after(lambda: ran.append((request.path, len(written))))
        if request.path == "/fails":
            request.after(lambda: 1 / 0)  # logged, and the callbacks after it still run
            request.after(lambda: ran.append(("/fails-2", len(written))))
            raise ValueError("no")
        if request.path == "/hangs":
            started.set()
            await asyncio.sleep(DEADLINE * 2)
        return Response(200, b"ok")

    served = await serve(noting)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(target="/ok") + request(target="/fails"))
        assert (await read_answer(reader)).status == 200
        assert (await read_answer(reader)).status == 500
        _, leaving = await served.connect()
        leaving.write(request(target="/hangs"))
        await started.wait()
        leaving.close()  # the client leaves: the handler is cancelled, the callback still runs
        await until(lambda: len(ran) == 4)
        writer.close()
    # Each ran after its own answer was written (the 200, then the 500); /hangs wrote nothing.
    assert ran == [("/ok", 1), ("/fails", 2), ("/fails-2", 2), ("/hangs", 2)]
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)


async def test_a_handler_exception_is_a_500(serve: Serve) -> None:
    async def boom(request: Request) -> Response:
        if request.path == "/boom":
            raise ValueError("boom")
        return Response(200, b"fine")

    served = await serve(boom)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request(target="/boom") + request())
        answer = await read_answer(reader)
        assert answer.status == 500
        assert answer.headers["x-error-page"] == "1"
        assert (await read_answer(reader)).body == b"fine"  # the connection goes on
        writer.close()
    ((status, _, req),) = served.errors
    assert status == 500
    assert req is not None
    assert req.path == "/boom"


async def test_a_handler_returning_none_aborts(serve: Serve) -> None:
    async def nobody(request: Request) -> None:
        return None

    served = await serve(nobody)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request())
        await assert_closed(reader)
        writer.close()


# --- timeouts -------------------------------------------------------------------------------


async def test_an_idle_connection_is_closed_after_the_keepalive(serve: Serve) -> None:
    served = await serve(echo, keepalive_s=0.2)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request())
        await read_answer(reader)
        answered = time.monotonic()
        await assert_closed(reader)
        assert time.monotonic() - answered >= 0.15
        writer.close()
        # A connection that never sends a byte goes the same way.
        reader, writer = await served.connect()
        await assert_closed(reader)
        writer.close()


async def test_a_request_that_dribbles_in_is_408(serve: Serve) -> None:
    served = await serve(echo, request_timeout_s=0.2)
    answer = await refused(served, b"GET / HTTP/1.1\r\nHost: t\r\n")
    assert answer.status == 408
    # A body that does not arrive in time goes the same way.
    answer = await refused(served, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    assert answer.status == 408


async def test_a_request_held_back_by_a_full_pipeline_is_not_late(serve: Serve) -> None:
    """Reading pauses while 16 requests queue behind a slow one; the request begun in the last
    read is not read meanwhile, so its deadline must not run (a 408 would be the server's fault)."""
    release = asyncio.Event()

    async def slow_first(request: Request) -> Response:
        if request.target == "/slow":
            await release.wait()
        return await echo(request)

    served = await serve(slow_first, request_timeout_s=0.2)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        queued = [request(target=f"/q/{n}") for n in range(17)]
        writer.write(request(target="/slow") + b"".join(queued) + b"GET /last HTTP/1.1\r\n")
        await asyncio.sleep(0.6)  # several sweeps while reading is paused
        release.set()
        writer.write(b"Host: t\r\n\r\n")
        targets = [(await read_answer(reader)).headers["x-target"] for _ in range(19)]
        assert targets == ["/slow", *(f"/q/{n}" for n in range(17)), "/last"]
        writer.close()


async def test_no_content_answers_carry_no_length(serve: Serve) -> None:
    async def nothing(request: Request) -> Response:
        return Response(204 if request.target == "/204" else 304)

    served = await serve(nothing)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        for target in ("/204", "/304"):
            writer.write(request(target=target))
            answer = await read_answer(reader)
            assert "content-length" not in answer.headers
            assert "transfer-encoding" not in answer.headers
        writer.write(request(target="/204", version="1.0", headers=[("Connection", "keep-alive")]))
        assert (await read_answer(reader)).headers["connection"] == "keep-alive"
        writer.close()


# --- shutdown -------------------------------------------------------------------------------


async def test_close_lets_requests_in_flight_finish(serve: Serve) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def held(request: Request) -> Response:
        started.set()
        await release.wait()
        return Response(200, b"done")

    served = await serve(held)
    async with asyncio.timeout(DEADLINE):
        busy_reader, busy = await served.connect()
        idle_reader, idle = await served.connect()
        busy.write(request())
        await started.wait()
        await until(lambda: len(served.server.connections) == 2)
        closing = asyncio.create_task(served.server.close(DEADLINE))
        await assert_closed(idle_reader)  # at once, while the other is still busy
        with pytest.raises(ConnectionRefusedError):
            await served.connect()
        assert not closing.done()
        release.set()
        answer = await read_answer(busy_reader)
        assert (answer.status, answer.body) == (200, b"done")
        assert answer.headers["connection"] == "close"
        await assert_closed(busy_reader)
        await closing
        busy.close()
        idle.close()


async def test_close_cuts_off_what_outlasts_the_grace(serve: Serve) -> None:
    hanging = Hanging()
    started, cancelled = hanging.started, hanging.cancelled
    served = await serve(hanging)
    async with asyncio.timeout(DEADLINE):
        reader, writer = await served.connect()
        writer.write(request())
        await started.wait()
        began = time.monotonic()
        await served.server.close(0.2)
        assert 0.15 <= time.monotonic() - began < 2.0
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await read_answer(reader)
        await cancelled.wait()
        writer.close()
