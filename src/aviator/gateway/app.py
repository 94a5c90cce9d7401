"""The gateway's application and ``GatewayServer``, the one place it is composed.

Routes::

    POST /v1/chat/completions, /v1/completions, /v1/embeddings   proxied to a replica
    GET  /v1/models                                             models the table knows
    GET  /health                                                200 once the feed and the
                                                                policies have synced
    GET  /metrics                                               Prometheus text format

The application is one handler (``build_app``) for the data plane's HTTP server (``server``),
routing by method and path. Every dependency lives in one typed ``Gateway`` object; the upstream
client, the feed, the policy view, the audit log and any ``background`` task (the JWKS refresher)
are opened and closed by ``Gateway.running``, so a server (or a test) owns all it starts. Every
response carries ``x-request-id``.

A proxied request goes: authenticate (401) → parse (400, 404 unknown model, 503 no ready replica)
→ governance (403 policy, 429 budget, 503 audit; ``governance``) → flow control → proxy, and
governance records it when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

import orjson

from aviator.gateway import openai
from aviator.gateway.auth import Authenticator, Unauthenticated
from aviator.gateway.breaker import CircuitBreakers
from aviator.gateway.discovery import Feed
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.flowcontrol import PRIORITY_HEADER, FlowControl, ScrapedSignals, client_of
from aviator.gateway.governance import INTENT_HEADER, Admission, Governance
from aviator.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from aviator.gateway.models import ModelDirectory
from aviator.gateway.picking import InFlight, Picker
from aviator.gateway.prefix import PrefixIndex
from aviator.gateway.proxy import CLIENT_CLOSED, REQUEST_ID, Forwarded, Proxy, error_response
from aviator.gateway.routing import (
    InFlightScorer,
    KvCacheScorer,
    PrefixCacheScorer,
    QueueDepthScorer,
    Router,
    SessionScorer,
)
from aviator.gateway.scrape import EngineSignals, Scraper
from aviator.gateway.server import Handler, HttpServer, Request, Response, ResponseStream
from aviator.gateway.upstream import UpstreamClient
from aviator.settings import GatewaySettings

__all__ = ["Gateway", "GatewayServer", "build_app"]

log = logging.getLogger("aviator.gateway")

Answer = Response | ResponseStream | None

_REQUEST_ID_MAX = 128
SESSION_ID = "x-session-id"


class _RequestIds:
    """Fresh request ids: a random per-process prefix and a counter (unique, and cheap)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def take(self, request: Request | None) -> str:
        """The client's ``x-request-id`` if it is sane (visible ASCII, bounded), else a new one."""
        given = request.headers.get(REQUEST_ID) if request is not None else None
        if (
            given
            and len(given) <= _REQUEST_ID_MAX
            and given.isascii()
            and given.isprintable()
            and " " not in given
        ):
            return given
        return f"{self._prefix}{next(self._counter):010x}"


class Gateway:
    """Everything the handlers use, built once per application."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        table: EndpointTable,
        feed: Feed,
        authenticator: Authenticator,
        governance: Governance,
        directory: ModelDirectory | None = None,
        picker: Picker | None = None,
        max_attempts: int = 3,
        upstream_connections: int = 1024,
        background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        """``directory`` (ModelDeployments) gives routing configuration and priorities; without
        one every model is routed with the defaults. ``picker`` replaces the routing pipeline.
        ``background``: more tasks to run as long as the application (e.g. a JWKS refresher)."""
        self.settings = settings
        self.table = table
        self.feed = feed
        self.authenticator = authenticator
        self.governance = governance
        self.background = tuple(background)
        self.directory = directory if directory is not None else ModelDirectory()
        self.inflight = InFlight()
        self.signals = EngineSignals(stale_after_s=settings.metrics_stale_after_s)
        self.prefixes = PrefixIndex(capacity=settings.prefix_blocks_per_replica)
        self.picker: Picker = picker or Router(
            scorers=[
                PrefixCacheScorer(self.prefixes),
                QueueDepthScorer(self.signals),
                KvCacheScorer(self.signals),
                InFlightScorer(self.inflight),
                SessionScorer(ttl_s=settings.session_ttl_s),
            ],
            routes=self.directory.route,
        )
        self.metrics = GatewayMetrics(table=table)
        self.metrics.governance.insecure(governance.insecure)
        governance.recorder = self.metrics.governance.decided  # how long policy decisions take
        self.breakers = CircuitBreakers.from_settings(settings)
        self.metrics.flow.watch_breakers(lambda: self.breakers.states(time.monotonic()))
        self.flow = FlowControl.from_settings(
            settings,
            # Saturation detection needs scraped metrics; without a scraper it stays off.
            signals=ScrapedSignals(self.signals) if settings.metrics_interval_s > 0 else None,
            pool=self.table.keys,
            defaults=self._default_priority,
            recorder=self.metrics.flow,
        )
        self.request_ids = _RequestIds()
        self.max_attempts = max_attempts
        self.upstream_connections = upstream_connections
        """Pooled connections to all replicas together; requests beyond it wait for one."""
        self._proxy: Proxy | None = None

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the gateway application has not been started")
        return self._proxy

    def _default_priority(self, model: str) -> str | None:
        """``spec.priority`` of the ModelDeployment serving ``model``, if the gateway knows it."""
        route = self.directory.route(model)
        return None if route is None else route.priority

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The upstream client, the feed, the policy view, the audit log and the background
        tasks, for as long as the gateway serves."""
        await self.governance.start()
        client = UpstreamClient(
            connect_timeout_s=self.settings.connect_timeout_s,
            read_timeout_s=self.settings.read_timeout_s,
            limit=self.upstream_connections,
        )
        self._proxy = Proxy(
            client=client,
            table=self.table,
            picker=self.picker,
            stats=self.inflight,
            metrics=self.metrics,
            max_attempts=self.max_attempts,
            breakers=self.breakers,
        )
        feed_task = asyncio.create_task(self.feed.run(), name="aviator-gateway-feed")
        feed_task.add_done_callback(_report_feed_exit)
        tasks = [feed_task]
        view = self.governance.view
        if view is not None:
            view_task = asyncio.create_task(view.run(), name="aviator-gateway-policies")
            view_task.add_done_callback(_report_view_exit)
            tasks.append(view_task)
        for run in self.background:
            tasks.append(asyncio.create_task(run()))
        if self.settings.metrics_interval_s > 0:
            scraper = Scraper(
                endpoints=self.table.endpoints,
                signals=self.signals,
                interval_s=self.settings.metrics_interval_s,
                on_tick=lambda endpoints: self.prefixes.retain(e.key for e in endpoints),
            )
            tasks.append(asyncio.create_task(scraper.run(), name="aviator-gateway-scraper"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)  # never raises: how the feed ended was reported already
            self._proxy = None
            await client.close()
            # Last: requests cut short by the shutdown grace are recorded before it closes.
            await self.governance.aclose()


def _report_view_exit(task: asyncio.Task[None]) -> None:
    """The policy view only ends when cancelled; otherwise decisions stay on the last compiled
    set (grant expiries still end leases by their deadline), so say so loudly."""
    if task.cancelled():
        return
    exc = task.exception()
    log.error(
        "the policy watch stopped (%s); decisions use the last compiled policies",
        repr(exc) if exc is not None else "returned",
    )


def _report_feed_exit(task: asyncio.Task[None]) -> None:
    """A feed only ends when cancelled; anything else leaves the table frozen, so say so."""
    if task.cancelled():
        return
    exc = task.exception()
    log.error(
        "the replica feed stopped (%s); routing continues on the last known table",
        repr(exc) if exc is not None else "returned",
    )


async def _proxy(gw: Gateway, request: Request, operation: str) -> Answer:
    started = request.started
    request_id = gw.request_ids.take(request)
    headers = request.headers
    model = ""
    code = 500
    admission: Admission | None = None
    done: Forwarded | None = None
    try:
        try:
            principal = gw.authenticator.authenticate(headers)
        except Unauthenticated as exc:
            gw.metrics.governance.refused("unauthenticated")
            raise openai.unauthorized(exc.reason, exc.challenge) from None
        if request.oversized:
            raise openai.too_large(gw.settings.max_body_bytes)
        route = openai.parse_request(
            request.body, operation=operation, session=headers.get(SESSION_ID)
        )
        candidates = gw.table.lookup(route.model)
        if candidates is None and gw.directory.route(route.model) is None:
            raise openai.model_not_found(route.model)
        model = route.model
        if not candidates:  # deployed, but no replica is ready (or it is scaled to zero)
            raise openai.no_ready_replica(model)
        served_by = gw.directory.route(model)
        priority = gw.flow.priority_of(
            served_by.priority if served_by is not None else None, headers.get(PRIORITY_HEADER)
        )
        try:
            admission = gw.governance.admit(
                principal,
                operation=operation,
                model=model,
                deployment=served_by.deployment if served_by is not None else "",
                body=route.body,
                priority=priority,
                intent_header=headers.get(INTENT_HEADER),
                request_id=request_id,
            )
        except openai.OpenAIError as err:
            gw.metrics.governance.refused(_REFUSALS.get(err.status, "policy"))
            raise
        client = client_of(principal, request.remote)
        waiting = gw.flow.admit_now(model=model, client=client, priority=priority)
        if waiting is not None and await waiting:
            candidates = gw.table.lookup(model)  # it waited: the replicas may have changed
            if not candidates:
                raise openai.no_ready_replica(model)
        gauge = gw.metrics.inflight(model)
        gauge.inc()
        try:
            done = await gw.proxy.forward(
                request,
                route=route,
                candidates=candidates,
                body=request.body,
                request_id=request_id,
                lease=admission.lease,
            )
        finally:
            gauge.dec()
            gw.flow.finished(model)
        code = done.code
        if done.cut is not None:
            gw.metrics.governance.refused("grant_ended")
        return done.response
    except openai.OpenAIError as err:
        code = err.status
        return error_response(err, request_id=request_id)
    except asyncio.CancelledError:
        code = CLIENT_CLOSED
        raise
    finally:
        # Recorded once the answer is out: budgets, audit and metrics need not delay it.
        request.after(
            functools.partial(_finished, gw, admission, done, operation, model, code, started)
        )


def _finished(
    gw: Gateway,
    admission: Admission | None,
    done: Forwarded | None,
    operation: str,
    model: str,
    code: int,
    started: float,
) -> None:
    """A proxied request's bookkeeping, after its answer was sent: the usage it reported (read
    out of a whole answer now), its budget settled and record written, its metrics."""
    usage = done.settled() if done is not None else None
    if admission is not None:
        cut = done.cut if done is not None else None
        gw.governance.finish(admission, code=code, usage=usage, cut=cut)
    gw.metrics.observe(
        operation=operation, model=model, code=code, duration_s=time.perf_counter() - started
    )


_REFUSALS = {403: "policy", 429: "budget", 503: "audit"}
"""Metric reason of a refusal by governance, by status."""


def _models(gw: Gateway, request: Request) -> Response:
    request_id = gw.request_ids.take(request)
    try:
        gw.authenticator.authenticate(request.headers)
    except Unauthenticated as exc:
        gw.metrics.governance.refused("unauthenticated")
        return error_response(openai.unauthorized(exc.reason, exc.challenge), request_id=request_id)
    return Response(
        200,
        openai.model_list(sorted({*gw.table.models(), *gw.directory.models()})),
        headers=[("content-type", "application/json"), (REQUEST_ID, request_id)],
    )


def _health(gw: Gateway, request: Request) -> Response:
    synced = gw.feed.synced.is_set() and gw.governance.synced
    return Response(
        200 if synced else 503,
        orjson.dumps({"status": "ok" if synced else "syncing", "endpoints": len(gw.table)}),
        headers=[
            ("content-type", "application/json"),
            (REQUEST_ID, gw.request_ids.take(request)),
        ],
    )


def _metrics(gw: Gateway, request: Request) -> Response:
    return Response(
        200,
        gw.metrics.render(),
        headers=[("content-type", CONTENT_TYPE), (REQUEST_ID, gw.request_ids.take(request))],
    )


_PAGES: dict[str, Callable[[Gateway, Request], Response]] = {
    "/v1/models": _models,
    "/health": _health,
    "/metrics": _metrics,
}
"""``GET`` (and ``HEAD``) routes answered by the gateway itself."""


def _unknown(gw: Gateway, request: Request) -> Response:
    request_id = gw.request_ids.take(request)
    path = request.path
    allowed = "POST" if path in openai.OPERATIONS else "GET, HEAD" if path in _PAGES else None
    if allowed is None:
        return error_response(openai.unknown_url(request.method, path), request_id=request_id)
    response = error_response(
        openai.method_not_allowed(request.method, path, allowed=allowed), request_id=request_id
    )
    response.headers.append(("allow", allowed))
    return response


def build_app(gateway: Gateway) -> Handler:
    """The gateway's application: one handler that routes a request by method and path."""
    operations = openai.OPERATIONS

    # Not a coroutine itself: it hands the server ``_proxy``'s coroutine (one less per request).
    def handle(request: Request) -> Awaitable[Answer]:
        method = request.method
        path = request.path
        if method == "POST":
            operation = operations.get(path)
            if operation is not None:
                return _proxy(gateway, request, operation)
        elif method in ("GET", "HEAD"):
            page = _PAGES.get(path)
            if page is not None:
                return _answered(page(gateway, request))
        return _answered(_unknown(gateway, request))

    return handle


async def _answered(answer: Response) -> Answer:
    return answer


class GatewayServer:
    """The gateway listening on a socket: ``start()``, then ``stop()`` (or ``serve(until)``)."""

    def __init__(
        self, gateway: Gateway, *, shutdown_grace_s: float = 5.0, reuse_port: bool = False
    ) -> None:
        """``reuse_port``: bind with ``SO_REUSEPORT``, so that several gateway processes (workers)
        share the port and the kernel spreads connections over them."""
        self.gateway = gateway
        self._grace = shutdown_grace_s
        self._reuse_port = reuse_port
        self._http: HttpServer | None = None
        self._running: contextlib.AsyncExitStack | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        sockets = self._http.sockets if self._http is not None else ()
        if not sockets:
            raise RuntimeError("the gateway is not listening")
        port: int = sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.gateway.settings.host}:{self.port}"

    def _error_page(self, status: int, message: str, request: Request | None) -> Response:
        return error_response(
            openai.protocol_error(status, message),
            request_id=self.gateway.request_ids.take(request),
        )

    async def start(self) -> None:
        settings = self.gateway.settings
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.gateway.running())
            http = HttpServer(
                build_app(self.gateway),
                errors=self._error_page,
                max_body_bytes=settings.max_body_bytes,
            )
            await http.start(settings.host, settings.port, reuse_port=self._reuse_port)
            self._http, self._running = http, stack.pop_all()
        log.info("gateway listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, answer what is still queued for a saturated pool with 503 at once,
        give requests in flight the grace period, then close everything."""
        http, self._http = self._http, None
        running, self._running = self._running, None
        if http is not None:
            http.stop_listening()
            await self.gateway.flow.close()
            await http.close(self._grace)
        if running is not None:
            await running.aclose()

    async def serve(self, until: asyncio.Event) -> None:
        """Run until ``until`` is set."""
        await self.start()
        try:
            await until.wait()
        finally:
            await self.stop()
