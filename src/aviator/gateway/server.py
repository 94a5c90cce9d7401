"""The data plane's HTTP/1.1 server: connections in, ``Request`` objects to one handler, answers out.

Why not aiohttp's ``web``: measured on this project's machine with the same fixed answer
(``bench/http_server.py``), this server takes about 74 µs of CPU and 89k instructions per request
where aiohttp's took about 182 µs and 192k — its request and response objects, multidicts,
middleware machinery and per-request timers were the largest part of the gateway's CPU once the
rest had been trimmed. The gateway needs little of that: a handful of routes, bodies read whole,
answers sent whole or streamed. Under this one is ``httptools`` (llhttp, Node.js's parser, also
uvicorn's). aiohttp stays everywhere else (the Control API, the simulator, clients of both).

What it does: HTTP/1.1 and 1.0 with keep-alive and pipelining (requests on one connection are
answered in order; reading pauses while one waits); bodies by ``Content-Length`` or chunked,
read whole before the handler runs, bounded by ``max_body_bytes`` (the handler is told, as
``Request.oversized``, and the connection closes after its answer); ``Expect: 100-continue``;
bounded request lines (``URL_MAX_BYTES``) and header blocks (``HEAD_MAX_BYTES``, ``HEADERS_MAX``);
answers whole (``Response``, with ``Content-Length``) or streamed (``Request.stream``, chunked
on HTTP/1.1; a stream of announced length is held to it) with back-pressure, and a client that
reads nothing for ``write_timeout_s`` is cut off; ``HEAD``; a ``Date`` on every answer; an idle
keep-alive timeout and a deadline for a request to arrive completely (a slow sender cannot hold a
connection);
header injection refused (a CR or LF in a name or value is a bug, never sent). A client that goes
away cancels its handler (so the proxy's upstream request is cancelled too). ``close(grace)``
stops listening, closes idle connections, lets requests in flight finish within the grace, then
cancels them.

What it does not: TLS (the gateway binds to loopback or sits behind a terminating proxy, as in a
cluster), HTTP/2, upgrades (a request asking for one is answered normally and the connection
closed), trailers, ``CONNECT``.

Protocol errors (a malformed request, a line or header block too long, a deadline missed) are
answered by the ``errors`` callback the server is given, so their bodies look like the
application's own, then the connection is closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from typing import Final, cast

import httptools

__all__ = [
    "HEADERS_MAX",
    "HEAD_MAX_BYTES",
    "URL_MAX_BYTES",
    "HttpServer",
    "Request",
    "Response",
    "ResponseStream",
]

URL_MAX_BYTES: Final = 8 * 1024
"""Longest request target accepted (414 beyond)."""

HEAD_MAX_BYTES: Final = 64 * 1024
"""Largest header block accepted, names and values together (431 beyond)."""

HEADERS_MAX: Final = 128
"""Most header lines accepted in one request (431 beyond)."""

_PIPELINE_MAX: Final = 16
"""Complete requests waiting behind the one being answered, beyond which reading pauses."""

_SILENT_MAX_BYTES: Final = 2 * HEAD_MAX_BYTES
"""Bytes read without the parser reporting anything, beyond which the request is refused (431):
httptools holds a header line until it ends, so a line that never ends is bounded here."""

_REASONS: Final = {
    100: "Continue",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

_NAMES_MAX: Final = 1024
"""Header names an ``HttpServer`` remembers lowered (``HttpServer.header_names``)."""
_NAME_KEPT_MAX: Final = 64
"""Longest name remembered (the memory held stays small whatever clients send)."""

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY: Final = frozenset({204, 304})
"""Answers that have no body, and no ``Content-Length`` (RFC 9110 §8.6)."""
_LAST_CHUNK: Final = b"0\r\n\r\n"

log = logging.getLogger("aviator.gateway.server")


class Response:
    """An answer sent whole, with ``Content-Length``.

    ``headers`` are (name, value) pairs sent as given (names in any case, repeats allowed); the
    server adds ``Content-Length``, ``Date`` and, when the connection ends, ``Connection: close``.
    """

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        headers: list[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        self.reason = reason

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class Request:
    """One request, read whole (the handler never waits for its body).

    ``headers`` maps lower-case names to values; a header sent more than once has its values
    joined with ``", "`` (RFC 9110 §5.3). ``target`` is the request target as sent (path and
    query), ``path`` the part before ``?``. ``oversized``: the body was longer than the server's
    limit and was not read (``body`` is empty); answer 413, and the connection will be closed.
    """

    __slots__ = (
        "_after",
        "_connection",
        "body",
        "headers",
        "keep_alive",
        "method",
        "oversized",
        "path",
        "remote",
        "started",
        "target",
        "version",
    )

    def __init__(
        self,
        *,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes = b"",
        version: str = "1.1",
        keep_alive: bool = True,
        remote: str | None = None,
        started: float = 0.0,
        oversized: bool = False,
        connection: _Connection | None = None,
    ) -> None:
        self.method = method
        self.target = target
        query = target.find("?")
        self.path = target if query < 0 else target[:query]
        self.headers = headers
        self.body = body
        self.version = version
        self.keep_alive = keep_alive
        self.remote = remote
        self.started = started
        """``time.perf_counter()`` when the request's first byte was parsed."""
        self.oversized = oversized
        self._connection = connection
        self._after: list[Callable[[], object]] | None = None

    def after(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the answer has been sent (or given up: the client left, the
        handler failed). For bookkeeping that need not delay the answer; it runs before the
        connection's next request, and an exception in it is logged, not raised."""
        if self._after is None:
            self._after = [callback]
        else:
            self._after.append(callback)

    def _run_after(self) -> None:
        callbacks, self._after = self._after, None
        if callbacks is not None and len(callbacks) == 1:  # (the usual case: one, run at once)
            try:
                callbacks[0]()
            except Exception:
                log.exception("after %s %s", self.method, self.path)
            return
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("after %s %s", self.method, self.path)

    async def stream(
        self,
        status: int,
        headers: list[tuple[str, str]],
        *,
        reason: str | None = None,
        content_length: int | None = None,
    ) -> ResponseStream:
        """Start an answer whose body follows in pieces (``ResponseStream.write``).

        With ``content_length`` the body must be exactly that long; without, it is sent chunked
        (HTTP/1.1) or delimited by closing the connection (HTTP/1.0). Raises ``ConnectionError``
        if the client has gone.
        """
        connection = self._connection
        if connection is None or connection.transport is None:
            raise ConnectionResetError("the client connection is closed")
        return await connection.start_stream(
            self, status, headers, reason=reason, content_length=content_length
        )

    def abort(self) -> None:
        """Close the client connection at once (an answer broken off mid-way must not look
        complete to the client)."""
        if self._connection is not None:
            self._connection.abort()


class ResponseStream:
    """The body of a streamed answer, written piece by piece with back-pressure."""

    __slots__ = ("_chunked", "_connection", "_discard", "_remaining", "finished")

    def __init__(
        self,
        connection: _Connection,
        *,
        chunked: bool,
        discard: bool = False,
        length: int | None = None,
    ) -> None:
        self._connection = connection
        self._chunked = chunked
        self._discard = discard  # the answer to a HEAD: headers only
        self._remaining = length
        """Bytes still owed when the head announced a ``Content-Length``."""
        self.finished = False

    async def write(self, data: bytes) -> None:
        """Send ``data`` (waits while the client reads slower than the answer comes). Raises
        ``ConnectionError`` once the client has gone, and ``ValueError`` (the connection
        aborted) for more bytes than the announced length."""
        if not data or self._discard:
            return
        connection = self._connection
        transport = connection.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        if self._remaining is not None:
            if len(data) > self._remaining:
                # More would read as the start of another answer: cut the connection instead.
                connection.abort()
                raise ValueError(
                    f"{len(data)} bytes written with {self._remaining} left of the announced length"
                )
            self._remaining -= len(data)
        if self._chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            transport.write(data)
        if connection.writing_paused:
            await connection.drain()

    async def finish(self) -> None:
        """End the body (the last chunk, when chunked). A body shorter than its announced length
        cannot be ended: the connection is aborted (``ValueError``), so the client sees it cut."""
        if self.finished:
            return
        if self._remaining and not self._discard:
            self._connection.abort()
            raise ValueError(f"the answer ended {self._remaining} bytes short of its length")
        self.finished = True
        transport = self._connection.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        if self._chunked and not self._discard:
            transport.write(_LAST_CHUNK)
        if self._connection.writing_paused:
            await self._connection.drain()


Handler = Callable[[Request], Awaitable["Response | ResponseStream | None"]]
"""The application: answer a request whole (``Response``), return the ``ResponseStream`` it
started and finished, or None when there is no one to answer (the client has gone)."""

ErrorPage = Callable[[int, str, Request | None], Response]
"""The answer to a protocol error: status, what was wrong, and the request if it was parsed."""


class _Refused(Exception):
    """A request the server answers itself (too long, malformed), then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Dates:
    """The ``Date`` header, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def header(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self._value


def _status_line(version: str, status: int, reason: str | None) -> str:
    return f"HTTP/{version} {status} {reason or _REASONS.get(status, 'Unknown')}\r\n"


_STATUS_LINES: Final = {
    (version, status, reason): _status_line(version, status, None).encode("latin-1")
    for version in ("1.1", "1.0")
    for status, standard in _REASONS.items()
    for reason in (None, standard)
}
"""The status lines with the standard reasons, by (version, status, reason as given: None or the
standard one), encoded (and free of CR and LF: checked once, here)."""


def _head(
    version: str,
    status: int,
    reason: str | None,
    headers: Iterable[tuple[str, str]],
    framing: bytes,
    date: bytes,
) -> bytes:
    """The status line and header block; refuses CR or LF inside the reason, a name or a
    value."""
    line = _STATUS_LINES.get((version, status, reason))
    if line is None:
        text = _status_line(version, status, reason)
        if text.count("\n") != 1 or text.count("\r") != 1:
            raise ValueError("a response status line or header holds CR or LF")
        line = text.encode("latin-1")
    block = ""
    count = 0
    for name, value in headers:
        block += f"{name}: {value}\r\n"
        count += 1
    # Each line has exactly one CR and one LF, its own terminator: any other is an injection.
    if block.count("\n") != count or block.count("\r") != count:
        raise ValueError("a response status line or header holds CR or LF")
    return line + block.encode("latin-1") + framing + date + b"\r\n"


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each in turn, writes."""

    __slots__ = (
        "_body",
        "_body_size",
        "_continue",
        "_head_size",
        "_header_lines",
        "_headers",
        "_heard",
        "_in_body",
        "_loop",
        "_oversized",
        "_parser",
        "_queue",
        "_reading_paused",
        "_refused",
        "_remote",
        "_request_started",
        "_server",
        "_silent",
        "_stopped",
        "_streaming",
        "_task",
        "_url",
        "_waiter",
        "closing",
        "idle_since",
        "receiving_since",
        "transport",
        "writing_paused",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._queue: collections.deque[Request] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._stopped = False
        """Reading stopped for good: the rest of the connection's bytes are not read."""
        self._heard = False
        """The parser reported something (a callback ran) while fed the last piece."""
        self._silent = 0
        """Bytes fed since the parser last reported anything (``_SILENT_MAX_BYTES``)."""
        self._streaming = False
        """The answer being served is a stream whose head has been sent."""
        self.writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.closing = False
        """Answer what is in flight, then close (server shutdown, or the client asked)."""
        self.idle_since: float | None = time.monotonic()
        """When the last answer ended with nothing else pending (None while busy)."""
        self.receiving_since: float | None = None
        """When the request now being received began (None between requests)."""
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_size = 0
        self._header_lines = 0
        self._in_body = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._oversized = False
        self._continue = False
        self._refused: _Refused | None = None
        self._request_started = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not subclasses of asyncio's, hence no isinstance check.)
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._remote = str(peer[0])
        # (asyncio and uvloop both set TCP_NODELAY on accepted TCP sockets.)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._server.connections.discard(self)
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: stop working on its answer
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client connection was lost"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._heard = False
        try:
            self._parser.feed_data(data)
            if self._heard:
                self._silent = 0
            else:
                self._silent += len(data)
                if self._silent > _SILENT_MAX_BYTES:
                    self._refuse(
                        _Refused(
                            431, f"A request header line is longer than {HEAD_MAX_BYTES} bytes."
                        )
                    )
        except httptools.HttpParserUpgrade:
            # Upgrades are not offered: what was parsed is answered, then the connection closes.
            self._stop_reading()
            self.closing = True
        except httptools.HttpParserError as exc:
            refused = self._refused
            if refused is None:
                refused = _Refused(400, f"Malformed HTTP request: {_parser_reason(exc)}.")
            self._refuse(refused)

    def eof_received(self) -> bool | None:
        # A client that shuts its side has gone, as far as its answers go (aiohttp and uvicorn
        # see it that way too): the transport closes, and a handler in flight is cancelled.
        return None

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self._heard = True
        self._request_started = time.perf_counter()
        self.receiving_since = time.monotonic()
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self._heard = True
        self._url += url
        if len(self._url) > URL_MAX_BYTES:
            self._refused = _Refused(
                414, f"The request target is longer than {URL_MAX_BYTES} bytes."
            )
            raise self._refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._heard = True
        self._head_size += len(name) + len(value)
        self._header_lines += 1
        if self._head_size > HEAD_MAX_BYTES or self._header_lines > HEADERS_MAX:
            self._refused = _Refused(
                431,
                f"The request's headers exceed {HEAD_MAX_BYTES} bytes or {HEADERS_MAX} lines.",
            )
            raise self._refused
        if self._in_body:
            return  # a trailer (after a chunked body): not one of the request's headers
        names = self._server.header_names
        key = names.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(names) < _NAMES_MAX and len(name) <= _NAME_KEPT_MAX:
                names[name] = key
        text = value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"

    def on_headers_complete(self) -> None:
        self._heard = True
        self._in_body = True
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):  # (llhttp also takes 0.9 and 2.0)
            self._refused = _Refused(505, f"HTTP/{version} is not supported.")
            raise self._refused
        headers = self._headers
        limit = self._server.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._oversized = True
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.lower() != "chunked":
            # (llhttp accepts any coding list ending in chunked, and would pass the rest on.)
            self._refused = _Refused(501, f"Unsupported Transfer-Encoding {coding[:64]!r}.")
            raise self._refused
        expect = headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                self._refused = _Refused(417, f"Unsupported Expect header {expect[:64]!r}.")
                raise self._refused
            # Only invite a body that will be read; an oversized one is answered 413 unread.
            self._continue = not self._oversized
        if self._oversized:
            self._deliver_oversized()
        if self._continue and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._heard = True
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            # Chunked and longer than the limit: answer 413 without reading the rest.
            self._body.clear()
            self._deliver_oversized()
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._heard = True
        self._deliver(oversized=False)

    # --- requests and answers ---------------------------------------------------------------

    def _deliver(self, *, oversized: bool) -> None:
        """The request just parsed is queued, and served at once if nothing is in flight."""
        parser = self._parser
        body = self._body
        request = Request(
            method=parser.get_method().decode("ascii"),
            target=self._url.decode("latin-1"),
            headers=self._headers,
            body=b"" if oversized or not body else body[0] if len(body) == 1 else b"".join(body),
            version=parser.get_http_version(),
            keep_alive=parser.should_keep_alive() and not oversized,
            remote=self._remote,
            started=self._request_started,
            oversized=oversized,
            connection=self,
        )
        self.receiving_since = None
        if self._task is None and not self._queue:  # the usual case: served at once
            self._task = self._loop.create_task(self._serve(request))
            return
        self._queue.append(request)
        if self._task is None:
            self._next()
        elif len(self._queue) > _PIPELINE_MAX and not self._reading_paused:
            self._pause_reading()

    def _deliver_oversized(self) -> None:
        """The handler answers (413) a request whose body is not read; parsing stops here."""
        self._deliver(oversized=True)
        self._refused = _Refused(413, "the body is not read")
        raise self._refused

    def _next(self) -> None:
        """Serve the next queued request, if any."""
        if not self._queue or self.transport is None:
            self._task = None
            if self.transport is not None:
                if self.closing:
                    self.transport.close()
                else:
                    self.idle_since = time.monotonic()
                    if self._reading_paused and not self._stopped:
                        self._resume_reading()
            return
        request = self._queue.popleft()
        self._task = self._loop.create_task(self._serve(request))

    async def _serve(self, request: Request) -> None:
        server = self._server
        self._streaming = False
        try:
            try:
                answer = await server.handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unhandled error answering %s %s", request.method, request.path)
                answer = server.errors(500, "The gateway failed to answer.", request)
            if answer is None:
                self.abort()
                return
            if isinstance(answer, ResponseStream):
                if not answer.finished:
                    self.abort()  # a stream left unfinished must not look complete
                    return
            elif self._streaming:
                # A stream's head is out (the handler then failed): no other answer can follow.
                self.abort()
                return
            else:
                self._send(request, answer)
        except asyncio.CancelledError:
            # The client left (or shutdown ran out of grace): there is no one to answer.
            self.abort()
            return
        except ConnectionError:
            self.abort()
            return
        finally:
            self._task = None  # (this coroutine only ever runs as the connection's task)
            if request._after is not None:
                request._run_after()
        if not request.keep_alive or self.closing:
            # The answer said "connection: close": nothing after it on this connection is served.
            self.closing = True
            self._queue.clear()
        self._next()

    def _send(self, request: Request, response: Response) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        close = not request.keep_alive or self.closing
        date = self._server.dates.header()
        body = response.body
        try:
            head = _head(
                request.version,
                response.status,
                response.reason,
                response.headers,
                _framing(request, close, None if response.status in _NO_BODY else len(body)),
                date,
            )
        except (ValueError, UnicodeEncodeError):
            log.exception("refusing a malformed answer to %s %s", request.method, request.path)
            response = self._server.errors(500, "The gateway failed to answer.", request)
            body = response.body
            head = _head(
                request.version,
                500,
                None,
                response.headers,
                _framing(request, close, None if response.status in _NO_BODY else len(body)),
                date,
            )
        if request.method == "HEAD" or response.status in _NO_BODY:
            transport.write(head)
        else:
            transport.write(head + body)
        if close:
            self.closing = True

    async def start_stream(
        self,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
        *,
        reason: str | None,
        content_length: int | None,
    ) -> ResponseStream:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        close = not request.keep_alive or self.closing
        if content_length is not None:
            framing = b"content-length: %d\r\n" % content_length
            chunked = False
        elif request.version == "1.1":
            framing = b"transfer-encoding: chunked\r\n"
            chunked = True
        else:  # HTTP/1.0: the end of the body is the end of the connection
            framing = b""
            chunked = False
            close = True
        if close:
            framing += b"connection: close\r\n"
            self.closing = True
        elif request.version == "1.0":
            framing += b"connection: keep-alive\r\n"
        transport.write(
            _head(request.version, status, reason, headers, framing, self._server.dates.header())
        )
        self._streaming = True
        if self.writing_paused:
            await self.drain()
        return ResponseStream(
            self, chunked=chunked, discard=request.method == "HEAD", length=content_length
        )

    async def drain(self) -> None:
        """Wait until the transport's buffer has room again; a client that reads nothing for
        the server's ``write_timeout_s`` is cut off (``ConnectionResetError``)."""
        if self.transport is None:
            raise ConnectionResetError("the client connection was lost")
        if self._waiter is None or self._waiter.done():
            self._waiter = self._server.loop.create_future()
        try:
            async with asyncio.timeout(self._server.write_timeout_s):
                await asyncio.shield(self._waiter)
        except TimeoutError:
            self.abort()
            raise ConnectionResetError(
                f"the client read nothing for {self._server.write_timeout_s:g} s"
            ) from None

    def _refuse(self, refused: _Refused) -> None:
        """Answer a protocol error (if nothing is in flight) and close."""
        self._stop_reading()
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # (answered already: the deadline is checked again while the answer drains)
        if refused.status == 413:
            return  # already delivered to the handler as an oversized request
        if self._task is not None or self._queue:
            # Earlier requests are still being answered: their answers go first, then close.
            return
        response = self._server.errors(refused.status, refused.message, None)
        framing = b"content-length: %d\r\nconnection: close\r\n" % len(response.body)
        transport.write(
            _head(
                "1.1", refused.status, None, response.headers, framing, self._server.dates.header()
            )
            + response.body
        )
        transport.close()

    def _stop_reading(self) -> None:
        self._stopped = True
        if not self._reading_paused:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._reading_paused = True

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self.receiving_since is not None:
            # The request behind the queue was not read while paused: its deadline starts now.
            self.receiving_since = time.monotonic()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    @property
    def reading_paused(self) -> bool:
        """Reading waits for the queue to drain (a request arriving meanwhile is not late)."""
        return self._reading_paused and not self._stopped

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> bool:
        """Close the connection if no request is in flight or waiting; True if it was closed."""
        if self._task is None and not self._queue and self.receiving_since is None:
            if self.transport is not None:
                self.transport.close()
            return True
        return False

    def timed_out(self, status: int, message: str) -> None:
        """A request did not arrive in time: answer ``status`` (nothing is in flight) and close."""
        self._refuse(_Refused(status, message))


def _framing(request: Request, close: bool, length: int | None) -> bytes:
    """``Content-Length`` (None: none, as for 204 and 304) and, when it matters,
    ``Connection`` for a whole answer."""
    out = b"" if length is None else b"content-length: %d\r\n" % length
    if close:
        return out + b"connection: close\r\n"
    if request.version == "1.0":
        return out + b"connection: keep-alive\r\n"
    return out


def _parser_reason(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text[:120] if text else type(exc).__name__


class HttpServer:
    """Serves ``handler`` on a listening socket: ``start()``, then ``close(grace_s)``."""

    def __init__(
        self,
        handler: Handler,
        *,
        errors: ErrorPage,
        max_body_bytes: int,
        keepalive_s: float = 75.0,
        request_timeout_s: float = 60.0,
        write_timeout_s: float = 60.0,
    ) -> None:
        """``errors`` shapes the server's own answers (protocol errors, an unhandled exception);
        ``keepalive_s``: idle connections are closed after it; ``request_timeout_s``: a request
        must arrive completely within it once its first byte came (408 otherwise);
        ``write_timeout_s``: the longest an answer waits for a client that reads nothing (then
        the connection is cut)."""
        self.handler = handler
        self.errors = errors
        self.max_body_bytes = max_body_bytes
        self.keepalive_s = keepalive_s
        self.request_timeout_s = request_timeout_s
        self.write_timeout_s = write_timeout_s
        self.connections: set[_Connection] = set()
        self.dates = _Dates()
        self.header_names: dict[bytes, str] = {}
        """Header names as sent → as ``Request.headers`` has them (lower-case): clients send the
        same few names again and again, and one look-up costs less than decoding and lowering."""
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (empty until started)."""
        if self._server is None:
            return ()
        return tuple(self._server.sockets)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop serving (kept: ``get_running_loop()`` costs a ``getpid()`` system call)."""
        if self._loop is None:
            raise RuntimeError("the server has not been started")
        return self._loop

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        self._sweeper = loop.create_task(self._sweep(), name="aviator-http-sweeper")

    async def _sweep(self) -> None:
        """Once a second: close connections idle past the keep-alive, and refuse requests still
        arriving past their deadline (one timer for all connections, none per request)."""
        interval = min(1.0, self.keepalive_s / 2, self.request_timeout_s / 2)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                idle = connection.idle_since
                if idle is not None and now - idle > self.keepalive_s:
                    connection.close_if_idle()
                    continue
                receiving = connection.receiving_since
                if (
                    receiving is not None
                    and now - receiving > self.request_timeout_s
                    and not connection.reading_paused
                ):
                    connection.timed_out(
                        408, f"The request did not arrive within {self.request_timeout_s:g} s."
                    )

    def stop_listening(self) -> None:
        """Accept no more connections (those open are served on)."""
        if self._server is not None:
            self._server.close()

    async def close(self, grace_s: float) -> None:
        """Stop listening, close idle connections, give requests in flight ``grace_s`` to be
        answered, then cut the rest off."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.closing = True
            connection.close_if_idle()
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        await server.wait_closed()
