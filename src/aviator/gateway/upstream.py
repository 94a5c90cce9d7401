"""The request path's HTTP/1.1 client: keep-alive connections to replicas, and nothing else.

Why not aiohttp's ``ClientSession``: profiled at two cores, its per-request machinery (request
and response objects, URL building, payload registry, timers re-armed per read) took about a
quarter of the gateway's CPU per request, more than everything the gateway itself decides. What
the proxy needs is narrow — send a buffered body to a base URL it already knows, read the answer
whole or piece by piece, reuse the connection — so this is a small ``asyncio.Protocol`` that does
only that. Everything else aviator fetches (Control API, replica metrics) keeps using aiohttp.

It does: ``http`` and ``https``; answers delimited by ``Content-Length``, ``Transfer-Encoding:
chunked`` or the end of the connection; ``gzip``/``deflate`` decoding (other codings pass through
untouched, their ``Content-Encoding`` kept); a pool of keep-alive connections per origin with a
bound on connections in use; a connect timeout and a read timeout (the longest wait for the next
bytes while someone waits for them); back-pressure (reading pauses while an answer's unread bytes
pile up). It does not do redirects, cookies, proxies, ``Expect: 100-continue``, pipelining,
upgrades or HTTP/2.

A connection goes back to its pool as soon as an answer has arrived completely (the bytes are
buffered in the ``Answer``), so ``Answer.close()`` only ever closes a connection still carrying
an unfinished answer: the replica sees the request cancelled. A pooled connection that the
replica closed while idle (its keep-alive timeout) fails the next request before any byte of an
answer: that request is sent once more on a fresh connection, so a replica's idle timeout is not
taken for a failure. Idle connections are dropped after ``keepalive_s``, below uvicorn's (and so
vLLM's) 5 s keep-alive, to make that race rare.

Errors, all raised from here and nowhere else (the proxy maps them to retries and answers)::

    UpstreamError
    ├── ConnectFailed   no answer started: refused, unreachable, reset or closed before a byte
    │                   came back, or the connect timeout passed (safe to try another replica)
    ├── ReadTimeout     connected and sent, then no bytes for ``read_timeout_s``
    └── AnswerBroken    the answer was malformed, or cut off before its end
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from collections.abc import Iterable
from typing import Final, cast
from urllib.parse import urlsplit

from multidict import CIMultiDict

from aviator.api.errors import AviatorError

__all__ = [
    "HEAD_MAX_BYTES",
    "Answer",
    "AnswerBroken",
    "ConnectFailed",
    "ReadTimeout",
    "UpstreamClient",
    "UpstreamError",
]

HEAD_MAX_BYTES: Final = 64 * 1024
"""Longest status line plus headers accepted from a replica."""

_LINE_MAX: Final = 4096
"""Longest chunk-size or trailer line."""

_PAUSE_BYTES: Final = 256 * 1024
"""Unread answer bytes at which reading from the replica pauses (back-pressure)..."""
_RESUME_BYTES: Final = 64 * 1024
"""...and below which it resumes."""

_NO_BODY: Final = frozenset({204, 304})

_NOTED: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-type", "content-encoding"}
)
"""Header names the head parser looks at (lower-case)."""

_LINES_MAX: Final = 1024
"""Header lines an ``UpstreamClient`` remembers parsed (``UpstreamClient.lines``)."""
_LINE_KEPT_MAX: Final = 256
"""Longest line remembered (so the memory held stays small whatever a replica sends)."""


class UpstreamError(AviatorError):
    """Something went wrong talking to a replica (the message never holds the request)."""


class ConnectFailed(UpstreamError):
    """No answer started: the request may be sent to another replica."""


class ReadTimeout(UpstreamError):
    """The replica took the request and then sent nothing for the read timeout."""


class AnswerBroken(UpstreamError):
    """The answer was malformed, or it ended before its declared end."""


class Answer:
    """A replica's answer: status and headers at once, the body as it arrives.

    Read it with ``read()`` (whole) or ``readany()`` (whatever has arrived, ``b""`` at the end),
    then ``release()`` it; ``close()`` drops it and, if it had not fully arrived, its connection.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_decoder",
        "_done",
        "_error",
        "_headers",
        "_waiter",
        "connection",
        "content_length",
        "content_type",
        "decoded",
        "fields",
        "reason",
        "status",
    )

    def __init__(
        self,
        conn: _Connection,
        status: int,
        reason: str,
        fields: list[tuple[str, str, str]],
        content_length: int | None,
        decoder: _Decoder | None,
        content_type: str,
        connection: str | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.fields = fields
        """The header lines as received, in order: (lower-case name, name, value)."""
        self.content_type = content_type
        """The first ``Content-Type`` value ("" when there is none)."""
        self.connection = connection
        """The first ``Connection`` value, or None."""
        self._headers: CIMultiDict[str] | None = None
        self.content_length = content_length
        """The length the replica declared (None: chunked or until close). Of the encoded body
        when ``decoded``."""
        self.decoded = decoder is not None
        """The body was ``gzip``/``deflate``-encoded and is delivered decoded."""
        self._conn: _Connection | None = conn
        self._decoder = decoder
        self._chunks: list[bytes] = []  # (taken all at once: a list does)
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers, case-insensitive (built on first use: the proxy reads ``fields``)."""
        if self._headers is None:
            self._headers = CIMultiDict([(name, value) for _, name, value in self.fields])
        return self._headers

    @property
    def complete(self) -> bool:
        """All of the body has arrived (it may not all have been read yet)."""
        return self._done

    def at_eof(self) -> bool:
        """Everything was read."""
        return self._done and not self._chunks

    def ready(self) -> bytes | None:
        """The whole (rest of the) body if it has all arrived intact, without waiting; else None
        (``read()`` it)."""
        if self._done and self._error is None and len(self._chunks) <= 1:
            return self._take()
        return None

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        if self._done and self._error is None and len(self._chunks) <= 1:
            return self._take()
        parts = []
        while piece := await self.readany():
            parts.append(piece)
        return b"".join(parts)

    async def readany(self) -> bytes:
        """What has arrived and was not read yet (waiting for some), or ``b""`` at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            conn = self._conn
            assert conn is not None  # not done and no error: its connection is still attached
            self._waiter = conn.loop.create_future()
            conn.wait_for_bytes()
            try:
                await self._waiter
            finally:
                self._waiter = None
                conn.stop_waiting(self)
        return self._take()

    def release(self) -> None:
        """Done with this answer: its connection goes back to the pool if it arrived whole."""
        if not self._done:
            self.close()

    def close(self) -> None:
        """Drop the answer; an unfinished one closes its connection (the replica sees it)."""
        conn, self._conn = self._conn, None
        self._chunks.clear()
        self._buffered = 0
        if conn is not None and not self._done:
            self._done = True
            self._error = AnswerBroken("the answer was closed")
            conn.abandon()

    # -- fed by the connection ------------------------------------------------------------------

    def _take(self) -> bytes:
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self._buffered > _RESUME_BYTES and self._conn is not None:
            self._conn.resume()
        self._buffered = 0
        return data

    def _push(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data)
            except zlib.error as exc:
                self._fail(AnswerBroken(f"cannot decode the answer: {exc}"))
                return
            if not data:
                return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_BYTES and self._conn is not None:
            self._conn.pause()
        if self._waiter is not None:  # (an answer read whole has nobody waiting on it yet)
            self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                self._fail(AnswerBroken(f"cannot decode the answer: {exc}"))
                return
            if tail:
                self._chunks.append(tail)
        self._done = True
        self._conn = None
        if self._waiter is not None:
            self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._done:
            return
        self._error = error
        self._done = True
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Decoder:
    """``gzip`` or ``deflate`` (zlib-wrapped, or raw as some servers send it)."""

    __slots__ = ("_obj", "_raw_fallback")

    def __init__(self, coding: str) -> None:
        # 16 + MAX_WBITS: gzip only; MAX_WBITS: zlib-wrapped deflate (raw tried on failure).
        self._raw_fallback = coding == "deflate"
        self._obj = zlib.decompressobj(
            16 + zlib.MAX_WBITS if coding != "deflate" else zlib.MAX_WBITS
        )

    def decode(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._obj.decompress(data)

    def flush(self) -> bytes:
        out = self._obj.flush()
        if not self._obj.eof:
            raise zlib.error("the compressed body is incomplete")
        return out


# Body framing of the answer being read.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _IDLE = range(8)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, carrying one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._state = _IDLE
        self._buf = bytearray()
        """The head or an unfinished chunk-size/trailer line, across reads."""
        self._remaining = 0
        self._head_waiter: asyncio.Future[Answer] | None = None
        self._answer: Answer | None = None
        self._method_head = False
        self._keep_alive = True
        self._got_bytes = False
        self.deadline = 0.0
        """When the read timeout strikes (loop time), while someone waits for bytes; else 0."""
        self._paused = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance: uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            if self._state == _HEAD:
                self._parse_head(data)
            elif self._state == _LENGTH:
                self._feed_length(data)
            elif self._state == _UNTIL_CLOSE:
                assert self._answer is not None
                self._answer._push(data)
            elif self._state == _IDLE:
                raise AnswerBroken("the replica sent bytes nobody asked for")
            else:
                self._feed_chunked(data)
        except UpstreamError as exc:
            self._broken(exc)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self.pool.lost(self)
        if self._state == _UNTIL_CLOSE and self._answer is not None:
            answer, self._answer = self._answer, None
            self._state = _IDLE
            answer._finish()
            return
        reason = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        if self._head_waiter is not None and not self._head_waiter.done():
            if self._buf:
                error: UpstreamError = AnswerBroken(f"the connection closed mid-head{reason}")
            else:
                error = ConnectFailed(f"the connection closed before an answer{reason}")
            self._head_waiter.set_exception(error)
        if self._answer is not None:
            self._answer._fail(AnswerBroken(f"the connection closed mid-answer{reason}"))
            self._answer = None
        self._state = _IDLE

    def pause_writing(self) -> None:  # bodies are sent whole: the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # -- used by the pool and the answer --------------------------------------------------------

    @property
    def reusable_stale(self) -> bool:
        """This (reused) connection failed before a byte came back: the replica had closed it."""
        return not self._got_bytes

    def send(self, data: bytes, *, head_only: bool) -> asyncio.Future[Answer]:
        """Write one request; the future gets the answer's head."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise ConnectFailed("the connection is closed")
        self._state = _HEAD
        self._buf.clear()
        self._got_bytes = False
        self._method_head = head_only
        self._keep_alive = True
        waiter: asyncio.Future[Answer] = self.loop.create_future()
        self._head_waiter = waiter
        transport.write(data)
        # Someone waits for the answer now: the read timeout runs (``wait_for_bytes``, inline).
        self.deadline = self.loop.time() + self.pool.read_timeout_s
        self.pool.client.watch()
        return waiter

    def wait_for_bytes(self) -> None:
        """Someone waits for bytes from the replica: arm the read timeout."""
        if not self.deadline:
            self.deadline = self.loop.time() + self.pool.read_timeout_s
            self.pool.client.watch()

    def stop_waiting(self, answer: Answer) -> None:
        """``answer``'s reader got bytes (or gave up): disarm, unless the connection moved on."""
        if self._answer is answer:
            self._disarm()

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abandon(self) -> None:
        """The request was given up (client gone, answer dropped): close the connection."""
        self._answer = None
        self._head_waiter = None
        self._close()

    # -- parsing --------------------------------------------------------------------------------

    def _parse_head(self, data: bytes) -> None:
        buf = self._buf
        if buf:  # the head began in an earlier read
            buf += data
            data = bytes(buf)
            buf.clear()
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > HEAD_MAX_BYTES:
                    raise AnswerBroken("the answer's head is too long")
                buf += data  # (held: ``connection_lost`` tells a cut head by it)
                return
            if end > HEAD_MAX_BYTES:
                raise AnswerBroken("the answer's head is too long")
            rest = data[end + 4 :]
            status, reason, fields, length, chunked, content_type, coding, connection = self._head(
                data[:end]
            )
            if 100 <= status < 200:  # informational (100 Continue, 103 Early Hints): skip
                data = rest
                continue
            self._start_body(
                status, reason, fields, length, chunked, content_type, coding, connection, rest
            )
            return

    def _framing_header(self, key: str, value: str, http10: bool, chunked: bool) -> bool:
        """Note a ``Transfer-Encoding`` or ``Connection`` header (judged on its bytes); whether
        the answer is chunked now."""
        raw = value.encode("utf-8", "surrogateescape")
        if key == "transfer-encoding":
            chunked = raw.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            if not chunked:
                self._keep_alive = False  # some other coding: delimited by the close
            return chunked
        tokens = {t.strip() for t in raw.lower().split(b",")}
        if b"close" in tokens:
            self._keep_alive = False
        elif b"keep-alive" in tokens and http10:
            self._keep_alive = True
        return chunked

    def _head(
        self, head: bytes
    ) -> tuple[int, str, list[tuple[str, str, str]], int | None, bool, str, str | None, str | None]:
        """Status, reason, header lines and what of them the client needs: the framing
        (length, chunked), the first ``Content-Type``, ``Content-Encoding`` and ``Connection``.

        The head is decoded once (UTF-8, undecodable bytes kept as surrogates) and split as text:
        the delimiters are ASCII, so this is what decoding each piece would give. The framing
        headers' values are judged on their bytes, as sent.
        """
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or len(code) != 3
            or not (code.isascii() and code.isdigit())
        ):
            first = head.partition(b"\r\n")[0]
            raise AnswerBroken(f"not an HTTP/1.x status line: {first[:64]!r}")
        http10 = version == "HTTP/1.0"
        if http10:
            self._keep_alive = False
        fields: list[tuple[str, str, str]] = []
        length: int | None = None
        chunked = False
        content_type: str | None = None
        coding: str | None = None
        connection: str | None = None
        del lines[0]
        known = self.pool.client.lines
        for line in lines:
            field = known.get(line)
            if field is None:
                name, sep, value = line.partition(":")
                if not sep or not name or name[-1] in " \t" or name[0] in " \t":
                    raw = line.encode("utf-8", "surrogateescape")
                    raise AnswerBroken(f"malformed header line: {raw[:64]!r}")
                field = (name.lower(), name, value.strip(" \t"))
                if len(line) <= _LINE_KEPT_MAX:
                    if len(known) >= _LINES_MAX:
                        known.clear()
                    known[line] = field
            key = field[0]
            if key in _NOTED:
                value = field[2]
                if key == "content-length":
                    if not (value.isascii() and value.isdigit()) or (
                        length is not None and length != int(value)
                    ):
                        raise AnswerBroken("invalid Content-Length")
                    length = int(value)
                elif key == "content-type":
                    if content_type is None:
                        content_type = value
                elif key == "content-encoding":
                    if coding is None:
                        coding = value
                else:
                    if key == "connection" and connection is None:
                        connection = value
                    chunked = self._framing_header(key, value, http10, chunked)
            fields.append(field)
        if chunked and length is not None:
            length = None  # Transfer-Encoding wins (RFC 9112 §6.3); do not trust this connection
            self._keep_alive = False
        return int(code), reason, fields, length, chunked, content_type or "", coding, connection

    def _start_body(
        self,
        status: int,
        reason: str,
        fields: list[tuple[str, str, str]],
        length: int | None,
        chunked: bool,
        content_type: str,
        coding: str | None,
        connection: str | None,
        rest: bytes,
    ) -> None:
        no_body = self._method_head or status in _NO_BODY
        decoder = None
        if coding is not None and not no_body:
            coding = coding.strip().lower()
            if coding in ("gzip", "x-gzip", "deflate"):
                decoder = _Decoder(coding)
        answer = Answer(
            self,
            status,
            reason,
            fields,
            0 if no_body else length,
            decoder,
            content_type,
            connection,
        )
        waiter, self._head_waiter = self._head_waiter, None
        self.deadline = 0.0  # (``_disarm``, inline)
        if waiter is None or waiter.done():  # the request was given up meanwhile
            self._close()
            return
        self._answer = answer
        waiter.set_result(answer)
        if no_body:
            self._end_answer(rest)
        elif chunked:
            self._state = _CHUNK_SIZE
            if rest:
                self._feed_chunked(rest)
        elif length is not None:
            self._state = _LENGTH
            self._remaining = length
            if length == 0 or rest:
                self._feed_length(rest)
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
            if rest:
                answer._push(rest)

    def _feed_length(self, data: bytes) -> None:
        answer = self._answer
        assert answer is not None
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            answer._push(data)
            return
        if remaining:
            answer._push(data[:remaining] if len(data) > remaining else data)
        self._end_answer(data[remaining:])

    def _line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next line (without its CRLF) from ``pos``, joined with what was held; or None and
        the whole rest held."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self._buf += data[pos:]
            if len(self._buf) > _LINE_MAX:
                raise AnswerBroken("a chunk-size or trailer line is too long")
            return None, len(data)
        if self._buf:
            line = bytes(self._buf) + data[pos:nl]
            self._buf.clear()
        else:
            line = data[pos:nl]
        if len(line) > _LINE_MAX:
            raise AnswerBroken("a chunk-size or trailer line is too long")
        return line.rstrip(b"\r"), nl + 1

    def _feed_chunked(self, data: bytes) -> None:
        answer = self._answer
        assert answer is not None
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._remaining, n - pos)
                answer._push(data[pos : pos + take] if take < n or pos else data)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _CHUNK_END
                continue
            line, pos = self._line(data, pos)
            if line is None:
                return
            if state == _CHUNK_SIZE:
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    size = -1
                if size < 0 or not size_text or size_text[:1] in b"+-":
                    raise AnswerBroken(f"invalid chunk size {size_text[:32]!r}")
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILER
            elif state == _CHUNK_END:
                if line:
                    raise AnswerBroken("a chunk did not end where its size said")
                self._state = _CHUNK_SIZE
            elif not line:  # _TRAILER: the empty line ends the answer
                self._end_answer(data[pos:])
                return

    def _end_answer(self, extra: bytes) -> None:
        """The answer arrived whole: hand it over and make the connection idle again."""
        answer, self._answer = self._answer, None
        self._state = _IDLE
        self.deadline = 0.0  # (``_disarm``, inline)
        if extra:  # more than the answer: the framing cannot be trusted any more
            self._keep_alive = False
        if answer is not None:
            answer._finish()
        if self._keep_alive and not self.closed:
            if self._paused:
                self._resume_for_pool()
            self.pool.give_back(self)
        else:
            self._close()
            self.pool.lost(self)

    def _resume_for_pool(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    # -- failures -------------------------------------------------------------------------------

    def timed_out(self) -> None:
        self.deadline = 0.0
        self._broken(ReadTimeout(f"no bytes from the replica for {self.pool.read_timeout_s:g} s"))

    def _broken(self, error: UpstreamError) -> None:
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_exception(error)
        self._head_waiter = None
        if self._answer is not None:
            self._answer._fail(error)
            self._answer = None
        self._state = _IDLE
        self._close()
        self.pool.lost(self)

    def _disarm(self) -> None:
        self.deadline = 0.0

    def _close(self) -> None:
        self._disarm()
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """The connections to one origin (scheme, host, port)."""

    def __init__(self, client: UpstreamClient, *, scheme: str, host: str, port: int) -> None:
        self.client = client
        self.loop = client.loop
        self.read_timeout_s = client.read_timeout_s
        self.scheme = scheme
        self.host = host
        self.port = port
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()

    def reuse(self) -> _Connection | None:
        """An idle connection, if one is kept and a slot is free at once (the usual case, taken
        without awaiting anything); else None: ``acquire`` one."""
        idle = self.idle
        client = self.client
        if not idle or client._in_use >= client.limit or client._slot_waiters:
            return None
        now = time.monotonic()
        keepalive = client.keepalive_s
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < keepalive:
                if idle and now - idle[0].idle_since >= keepalive:
                    idle.pop(0)._close()  # the stalest one: one sweep step per request
                client._in_use += 1
                self.busy.add(conn)
                return conn
            conn._close()
        return None

    async def acquire(self) -> tuple[_Connection, bool]:
        """A connection (from the pool if one is idle), and whether it was reused."""
        await self.client._take_slot()
        try:
            idle = self.idle
            if idle:
                now = time.monotonic()
                keepalive = self.client.keepalive_s
                while idle:
                    conn = idle.pop()
                    if not conn.closed and now - conn.idle_since < keepalive:
                        if idle and now - idle[0].idle_since >= keepalive:
                            idle.pop(0)._close()  # the stalest one: one sweep step per request
                        self.busy.add(conn)
                        return conn, True
                    conn._close()
            conn = await self._connect()
        except BaseException:
            self.client._free_slot()
            raise
        self.busy.add(conn)
        return conn, False

    async def _connect(self) -> _Connection:
        ssl_context = self.client.ssl_context() if self.scheme == "https" else None
        try:
            async with asyncio.timeout(self.client.connect_timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=ssl_context,
                    server_hostname=self.host if ssl_context is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed(
                f"no connection within {self.client.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        return conn

    def give_back(self, conn: _Connection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            client = self.client
            if client._slot_waiters:
                client._free_slot()
            else:  # (``_free_slot`` with nobody waiting)
                client._in_use -= 1
        conn.idle_since = time.monotonic()
        if self.client.closed:
            conn._close()
        else:
            self.idle.append(conn)

    def lost(self, conn: _Connection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.client._free_slot()
        elif conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in [*self.idle, *self.busy]:
            conn._close()
        self.idle.clear()


class UpstreamClient:
    """Keep-alive HTTP/1.1 connections to replicas, at most ``limit`` in use at once."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        limit: int = 1024,
        keepalive_s: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``read_timeout_s`` bounds each wait for bytes from a replica, not the whole answer;
        ``keepalive_s`` is how long an idle connection is kept for reuse."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.loop = asyncio.get_running_loop()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self.limit = limit
        self.closed = False
        self.lines: dict[str, tuple[str, str, str]] = {}
        """Header lines as received → (lower-case name, name, value): a replica sends the same
        lines again and again (``Content-Type``, ``Server``, often ``Content-Length``), and one
        look-up costs less than splitting, checking and lowering one. At most ``_LINES_MAX`` of
        at most ``_LINE_KEPT_MAX`` characters: the memory held stays small whatever is sent."""
        self._ssl = ssl_context
        self._origins: dict[tuple[str, str, int], _Pool] = {}
        self._bases: dict[str, tuple[_Pool, str, str]] = {}
        """base URL → (its origin's pool, its path prefix, its ``Host`` header line)."""
        self._in_use = 0
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Read timeouts are checked by one sweep every ``_tick`` seconds rather than a timer per
        # wait (arming and cancelling one per request cost more than the rest of the client's
        # bookkeeping): a timeout strikes between ``read_timeout_s`` and a tick later.
        self._tick = min(1.0, max(0.005, read_timeout_s / 10))
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """A connection waits for bytes: make sure the read-timeout sweep runs."""
        if self._sweeper is None and not self.closed:
            self._sweeper = self.loop.call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        waiting = False
        for pool in self._origins.values():
            for conn in list(pool.busy):
                if not conn.deadline:
                    continue
                if conn.deadline <= now:
                    conn.timed_out()
                else:
                    waiting = True
        if waiting:
            self.watch()

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def request(
        self,
        method: str,
        base_url: str,
        target: str,
        *,
        headers: Iterable[tuple[str, str]],
        body: bytes = b"",
    ) -> Answer:
        """Send ``method base_url+target`` with ``headers`` and ``body``; the answer's head.

        ``Host`` and ``Content-Length`` are set here (do not pass them). Raises ``ConnectFailed``,
        ``ReadTimeout`` or ``AnswerBroken``. Cancelling the caller closes the connection.
        """
        if self.closed:
            raise ConnectFailed("the client is closed")
        pool, prefix, host_line = self._bases.get(base_url) or self._pool(base_url)
        fields = ""
        count = 0
        for name, value in headers:  # (a loop: cheaper than a comprehension for a few)
            fields += f"{name}: {value}\r\n"
            count += 1
        # One CR and one LF per field, or a name or value carried a line break (header injection).
        if fields.count("\n") != count or fields.count("\r") != count:
            raise ValueError("a line break in a header name or value")
        head = (
            f"{method} {prefix}{target} HTTP/1.1\r\n{host_line}{fields}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        data = head + body if len(body) < 16384 else b""
        for attempt in (0, 1):
            conn = pool.reuse()
            reused = conn is not None
            if conn is None:
                conn, reused = await pool.acquire()
            try:
                if data:
                    waiter = conn.send(data, head_only=method == "HEAD")
                else:
                    waiter = conn.send(head, head_only=method == "HEAD")
                    assert conn.transport is not None
                    conn.transport.write(body)
                return await waiter
            except ConnectFailed:
                # A reused connection the replica had closed while idle: once more, afresh.
                if attempt == 0 and reused and conn.reusable_stale:
                    continue
                raise
            except BaseException:
                conn.abandon()
                raise
        raise AssertionError("unreachable")

    def _pool(self, base_url: str) -> tuple[_Pool, str, str]:
        found = self._bases.get(base_url)
        if found is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConnectFailed(f"not an http(s) URL: {base_url!r}")
            default = 443 if parts.scheme == "https" else 80
            port = parts.port or default
            host = parts.hostname
            origin = (parts.scheme, host, port)
            pool = self._origins.get(origin)
            if pool is None:
                pool = self._origins[origin] = _Pool(
                    self, scheme=parts.scheme, host=host, port=port
                )
            shown = f"[{host}]" if ":" in host else host
            host_header = shown if port == default else f"{shown}:{port}"
            found = (pool, parts.path.rstrip("/"), f"Host: {host_header}\r\n")
            self._bases[base_url] = found
        return found

    async def _take_slot(self) -> None:
        if self._in_use < self.limit and not self._slot_waiters:
            self._in_use += 1
            return
        waiter = self.loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # it was handed a slot as it was cancelled: pass it on
            else:
                self._slot_waiters.remove(waiter)
            raise

    def _free_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter
                return
        self._in_use -= 1

    async def close(self) -> None:
        """Close every connection; requests still running fail."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self._origins.values():
            pool.close()
        self._origins.clear()
        self._bases.clear()
