"""Forwarding one request to a replica: retry before the first byte, stream after it.

The original request bytes go upstream unchanged (the body was parsed once, only to route it).
An open-ended or large answer comes back chunk by chunk as the replica sends it, so server-sent
events pass through unbuffered; a small answer of known length (the usual non-streaming
completion) is read whole first and sent in one write.

Until the client has been sent anything, a connection failure or a 5xx from a replica means: pick
another ready replica (each at most once, ``max_attempts`` in all). Once a byte has been sent
there is no going back: a replica that breaks off mid-stream gets the client connection aborted,
so the client sees a truncated response rather than a falsely complete one.

Each attempt's outcome before the first byte (a connect error, a 5xx or a read timeout is a
failure; any other answer a success) feeds the replica's circuit breaker (``breaker``), and
replicas whose breaker is open are left out of the candidates.

A request admitted on a grant carries a ``Lease``: once its grant is revoked or expires, the next
chunk is not relayed and the client connection is aborted (the check is one attribute read and
one clock read per chunk).

A client that goes away cancels the handler (see ``server``), which closes the upstream
connection, which the replica sees as a cancellation.

Requests go out through ``upstream.UpstreamClient`` (a lean keep-alive HTTP/1.1 client; see
there why not aiohttp's), whose three errors map onto the rules above: ``ConnectFailed`` and a
malformed head (``AnswerBroken`` before the answer started) try another replica, ``ReadTimeout``
ends the attempts, and a failure while relaying the body is a 502 or an aborted client connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aviator.gateway import openai
from aviator.gateway.breaker import CircuitBreakers
from aviator.gateway.endpoints import Endpoint, EndpointTable
from aviator.gateway.metrics import AnswerMeter, GatewayMetrics
from aviator.gateway.picking import InFlight, Picker, RouteRequest
from aviator.gateway.server import Request, Response, ResponseStream
from aviator.gateway.upstream import Answer, ReadTimeout, UpstreamClient, UpstreamError
from aviator.gateway.usage import Usage

__all__ = [
    "CLIENT_CLOSED",
    "Forwarded",
    "Lease",
    "Proxy",
    "error_response",
    "request_headers",
    "response_headers",
]

REQUEST_ID = "x-request-id"
REPLICA = "x-aviator-replica"

CLIENT_CLOSED = 499
"""Status recorded in metrics when the client went away before the answer was complete (nginx's
convention; never sent on the wire)."""

BUFFER_MAX_BYTES = 64 * 1024
"""Answers with a known length up to this size are read whole and sent in one write; longer or
open-ended ones (server-sent events) are streamed chunk by chunk."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection and MUST NOT be forwarded (RFC 9110 §7.6.1)."""

_DROP_UPSTREAM = HOP_BY_HOP | {"host", "authorization", "content-length", "expect", REQUEST_ID}
"""Never forwarded to a replica: the client's credentials stay at the gateway (the upstream client
sets ``Host`` and ``Content-Length`` itself)."""

_DROP_DOWNSTREAM = HOP_BY_HOP | {"content-length", REQUEST_ID, REPLICA}
"""The body's length is re-derived when it is sent; ``Content-Encoding`` goes too when the upstream
client decoded the body (``gzip``, ``deflate``)."""

_DROP_DOWNSTREAM_DECODED = _DROP_DOWNSTREAM | {"content-encoding"}


def _dropped(headers: Mapping[str, str], always: frozenset[str]) -> frozenset[str]:
    """``always`` plus the headers the ``Connection`` header names (hop-by-hop by declaration)."""
    value = headers.get("connection")
    if not value:
        return always
    return always | {token.strip().lower() for token in value.split(",")}


def request_headers(headers: Mapping[str, str], *, request_id: str) -> list[tuple[str, str]]:
    """The client's headers (lower-case names, as ``server.Request`` has them) as a replica
    should see them."""
    connection = headers.get("connection")
    drop = _DROP_UPSTREAM if not connection else _dropped(headers, _DROP_UPSTREAM)
    out: list[tuple[str, str]] = []
    for k, v in headers.items():  # (a loop: cheaper than a comprehension for a few)
        if k not in drop:
            out.append((k, v))
    if "content-type" not in headers:
        out.append(("content-type", "application/json"))
    out.append((REQUEST_ID, request_id))
    return out


def response_headers(
    headers: Mapping[str, str], *, request_id: str, replica: str, decoded: bool = True
) -> list[tuple[str, str]]:
    """A replica's response headers (any case, e.g. the upstream client's ``CIMultiDict``) as
    the client should see them (``decoded``: the body is relayed decoded, so its
    ``Content-Encoding`` does not apply any more)."""
    drop = _dropped(headers, _DROP_DOWNSTREAM_DECODED if decoded else _DROP_DOWNSTREAM)
    out = [(k, v) for k, v in headers.items() if k.lower() not in drop]
    out.append((REQUEST_ID, request_id))
    out.append((REPLICA, replica))
    return out


def _relayed_headers(upstream: Answer, *, request_id: str, replica: str) -> list[tuple[str, str]]:
    """``response_headers`` of an upstream answer, from its header lines as parsed (their
    lower-case names are known already)."""
    drop = _DROP_DOWNSTREAM_DECODED if upstream.decoded else _DROP_DOWNSTREAM
    if upstream.connection:
        drop = drop | {token.strip().lower() for token in upstream.connection.split(",")}
    out: list[tuple[str, str]] = []
    for key, name, value in upstream.fields:  # (a loop: cheaper than a comprehension for a few)
        if key not in drop:
            out.append((name, value))
    out.append((REQUEST_ID, request_id))
    out.append((REPLICA, replica))
    return out


def error_response(
    err: openai.OpenAIError, *, request_id: str, replica: str | None = None
) -> Response:
    """An OpenAI-shaped error with the gateway's headers."""
    headers = [("content-type", "application/json"), (REQUEST_ID, request_id)]
    if err.retry_after_s is not None:
        headers.append(("retry-after", str(err.retry_after_s)))
    if err.status == 401:
        headers.append(("www-authenticate", err.challenge or 'Bearer realm="aviator"'))
    if replica is not None:
        headers.append((REPLICA, replica))
    return Response(err.status, err.body(), headers=headers)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    text = text if len(text) <= 200 else text[:200] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Lease(Protocol):
    """The right a request was admitted on, checked while its answer is relayed."""

    def ended(self) -> str | None:
        """Why the request may no longer be served (its grant was revoked, expired), or None.
        Called per chunk: must be cheap."""
        ...


@dataclass(slots=True)
class Forwarded:
    """What became of a forwarded request (made per request: not frozen, which costs twice as
    much to make; never change one)."""

    response: Response | ResponseStream | None
    """What the client gets: an answer to send, the stream already sent, or None (the client
    has gone: nothing to send)."""
    code: int
    """Status for metrics: what was sent, ``CLIENT_CLOSED`` if the client left, 502 if the
    replica broke off mid-stream, 403 if the request's grant ended while it was answered."""
    replica: str | None
    usage: Usage | None = None
    """The usage the answer reported, if it was relayed completely and reported one (see
    ``settled`` for an answer sent whole)."""
    cut: str | None = None
    """Why the answer was cut off (its lease ended), or None."""
    whole: tuple[AnswerMeter, bytes] | None = None
    """An answer sent whole, whose metering (time to first byte, usage) waits until it has been
    sent: ``settled`` does it."""

    def settled(self) -> Usage | None:
        """The usage the answer reported; meters a whole answer first (call it once, after the
        answer was sent)."""
        if self.whole is None:
            return self.usage
        meter, body = self.whole
        meter.whole(body)
        return meter.usage


class Proxy:
    """Sends requests to replicas through one pooled ``UpstreamClient``."""

    def __init__(
        self,
        *,
        client: UpstreamClient,
        table: EndpointTable,
        picker: Picker,
        stats: InFlight,
        metrics: GatewayMetrics,
        max_attempts: int = 3,
        breakers: CircuitBreakers | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        """``breakers`` keep requests away from failing replicas (see ``breaker``); ``clock``
        is the monotonic time they are given."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._table = table
        self._picker = picker
        self._stats = stats
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._breakers = breakers if breakers is not None else CircuitBreakers()
        self._clock = clock
        self._log = logger or logging.getLogger("aviator.gateway.proxy")

    async def forward(
        self,
        request: Request,
        *,
        route: RouteRequest,
        candidates: Sequence[Endpoint],
        body: bytes,
        request_id: str,
        lease: Lease | None = None,
    ) -> Forwarded:
        """Send ``body`` to a replica among ``candidates`` and relay its answer.

        A retry looks the model up again, so a replica that left the table while an attempt
        failed is not tried next. ``lease``: the answer is cut off once it ends.
        """
        headers = request_headers(request.headers, request_id=request_id)
        target = request.target
        tried: set[str] = set()
        # Why the last attempt failed, safe to tell the client (no addresses, no internals).
        outcome = "no replica was available"
        replica: str | None = None
        for attempt in range(self._max_attempts):
            if attempt:
                candidates = self._table.lookup(route.model) or ()
            # Replicas whose breaker is open are left out (if all are, the one due soonest).
            now = self._clock()
            candidates = self._breakers.usable(candidates, now=now, exclude=tried)
            endpoint = await self._picker.pick(candidates, request=route, exclude=tried)
            if endpoint is None:
                break
            if attempt:
                self._metrics.retried()
            tried.add(endpoint.key)
            self._metrics.routed(route.model, endpoint.key)
            replica = endpoint.key
            self._stats.acquire(endpoint.key)
            trial = self._breakers.attempt(endpoint.key, now)
            try:
                try:
                    upstream = await self._client.request(
                        request.method, endpoint.url, target, headers=headers, body=body
                    )
                except ReadTimeout as exc:
                    # The replica took the request and went quiet: sending it elsewhere would
                    # double the work of a slow replica, not route around a dead one.
                    outcome = f"{endpoint.key} did not answer in time"
                    self._log.warning("request %s: %s (%s)", request_id, outcome, _describe(exc))
                    self._failed(endpoint.key)
                    break
                except UpstreamError as exc:  # no answer, or a malformed head: try another
                    outcome = f"{endpoint.key} could not be reached"
                    self._log.info("request %s: %s (%s)", request_id, outcome, _describe(exc))
                    self._failed(endpoint.key)
                    continue
                except BaseException:  # no outcome (the client left): free the trial slot
                    if trial:
                        self._breakers.abandoned(endpoint.key)
                    raise
                if upstream.status >= 500:
                    outcome = f"{endpoint.key} answered {upstream.status}"
                    self._log.info("request %s: %s", request_id, outcome)
                    upstream.close()
                    self._failed(endpoint.key)
                    continue
                if self._breakers.succeeded(endpoint.key):
                    self._log.info("replica %s answers again: circuit breaker closed", endpoint.key)
                meter = self._metrics.answer(
                    operation=route.operation,
                    model=route.model,
                    status=upstream.status,
                    content_type=upstream.content_type,
                    started=request.started,
                )
                return self._relay(
                    upstream, meter, route.model, endpoint.key, request_id, lease
                ) or await self._relay_rest(
                    request, upstream, meter, route.model, endpoint.key, request_id, lease
                )
            finally:
                self._stats.release(endpoint.key)
        self._log.warning(
            "request %s for %s failed after %d attempt(s): %s",
            request_id,
            route.model,
            len(tried),
            outcome,
        )
        err = openai.upstream_error(route.model, f"{len(tried)} tried, last: {outcome}")
        return Forwarded(
            error_response(err, request_id=request_id, replica=replica), err.status, replica
        )

    def _failed(self, key: str) -> None:
        if self._breakers.failed(key, self._clock()):
            self._metrics.flow.breaker_opened(key)
            self._log.warning(
                "replica %s keeps failing: circuit breaker open, requests go elsewhere", key
            )

    def _relay(
        self,
        upstream: Answer,
        meter: AnswerMeter,
        model: str,
        replica: str,
        request_id: str,
        lease: Lease | None,
    ) -> Forwarded | None:
        """The answer to send, if it is a small one that arrived whole (the non-streaming case,
        dealt with here without awaiting anything); else None: ``_relay_rest`` relays it."""
        length = upstream.content_length
        if length is None or length > BUFFER_MAX_BYTES or upstream.decoded:
            return None
        body = upstream.ready()
        if body is None:  # not all there yet
            return None
        upstream.release()  # (arrived whole: its connection is back in the pool already)
        return self._whole(upstream, body, meter, model, replica, request_id, lease)

    def _whole(
        self,
        upstream: Answer,
        body: bytes,
        meter: AnswerMeter,
        model: str,
        replica: str,
        request_id: str,
        lease: Lease | None,
    ) -> Forwarded:
        """A small, complete answer, read whole: sent in one write."""
        if lease is not None and (why := lease.ended()) is not None:
            # Nothing was sent yet: the client gets a clean refusal instead.
            self._log.info("request %s: not relayed, %s", request_id, why)
            err = openai.grant_ended(why)
            return Forwarded(
                error_response(err, request_id=request_id, replica=replica),
                err.status,
                replica,
                cut=why,
            )
        headers = _relayed_headers(upstream, request_id=request_id, replica=replica)
        # Metered once sent (``Forwarded.settled``): reading the usage out of the body need not
        # delay it.
        return Forwarded(
            Response(upstream.status, body, headers=headers, reason=upstream.reason),
            upstream.status,
            replica,
            None,
            None,
            (meter, body),
        )

    async def _relay_rest(
        self,
        request: Request,
        upstream: Answer,
        meter: AnswerMeter,
        model: str,
        replica: str,
        request_id: str,
        lease: Lease | None,
    ) -> Forwarded:
        """Relay an answer ``_relay`` did not: a small one still arriving, or a stream."""
        try:
            length = upstream.content_length
            if length is not None and length <= BUFFER_MAX_BYTES and not upstream.decoded:
                # A small, complete answer (the non-streaming case): read it whole and send it in
                # one write. Nothing has reached the client yet, so a failure is still a clean 502.
                try:
                    body = await upstream.read()
                except UpstreamError as exc:
                    self._log.warning(
                        "request %s: %s broke off its answer (%s)",
                        request_id,
                        replica,
                        _describe(exc),
                    )
                    err = openai.upstream_error(model, f"{replica} broke off its answer")
                    return Forwarded(
                        error_response(err, request_id=request_id, replica=replica), 502, replica
                    )
                return self._whole(upstream, body, meter, model, replica, request_id, lease)
            headers = _relayed_headers(upstream, request_id=request_id, replica=replica)
            return await self._stream(
                request,
                upstream,
                headers=headers,
                meter=meter,
                replica=replica,
                request_id=request_id,
                lease=lease,
            )
        finally:
            # Arrived whole: its connection is back in the pool already. Otherwise it is closed,
            # and the replica sees the request cancelled.
            upstream.release()

    async def _stream(
        self,
        request: Request,
        upstream: Answer,
        *,
        headers: list[tuple[str, str]],
        meter: AnswerMeter,
        replica: str,
        request_id: str,
        lease: Lease | None,
    ) -> Forwarded:
        length = upstream.content_length if not upstream.decoded else None
        try:
            response = await request.stream(
                upstream.status, headers, reason=upstream.reason, content_length=length
            )
        except ConnectionError:
            return Forwarded(None, CLIENT_CLOSED, replica)
        try:
            while True:
                try:
                    chunk = await upstream.readany()
                except UpstreamError as exc:
                    self._log.warning(
                        "request %s: %s broke off its answer (%s); aborting the client connection",
                        request_id,
                        replica,
                        _describe(exc),
                    )
                    request.abort()
                    return Forwarded(response, 502, replica)
                if not chunk:
                    break
                if lease is not None and (why := lease.ended()) is not None:
                    self._log.info(
                        "request %s: %s; aborting the client connection", request_id, why
                    )
                    request.abort()
                    return Forwarded(response, 403, replica, cut=why)
                meter.chunk(chunk)
                await response.write(chunk)
            await response.finish()
            meter.end()
        except ConnectionError:
            return Forwarded(response, CLIENT_CLOSED, replica)
        return Forwarded(response, upstream.status, replica, meter.usage)
