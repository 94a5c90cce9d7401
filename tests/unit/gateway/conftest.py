"""Shared helpers for the gateway tests: Replica objects, fake upstreams, a gateway harness."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from aviator.api.kinds import KindInfo
from aviator.api.watch import WatchEvent
from aviator.gateway.app import Gateway, GatewayServer
from aviator.gateway.auth import Credentials
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.governance import Governance
from aviator.governance.view import PolicyView
from aviator.settings import GatewaySettings

API_KEY = "sk-test-0123456789"
"""The harness gateway's admin token: the admin is not subject to policy, so the tests of routing
and proxying are not about governance."""
OTHER_KEY = "sk-other"
"""An API key of the harness gateway: a principal of its own, subject to policy."""
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8}
COMPLETION = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
}


def replica(
    name: str,
    *,
    model: str = "m",
    url: str | None = "http://127.0.0.1:1",
    ready: bool = True,
    namespace: str = "default",
    deleting: bool = False,
    rv: int = 1,
) -> dict[str, Any]:
    """A Replica in wire form, as the Control API sends it."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": str(rv)}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T09:00:00Z"
    status: dict[str, Any] = {
        "phase": "Running" if ready else "Starting",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if url is not None:
        status["endpoint"] = url
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Replica",
        "metadata": meta,
        "spec": {"model": {"name": model}, "engine": "sim"},
        "status": status,
    }


def dead_url() -> str:
    """A loopback URL nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, or None."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true, failing after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


UpstreamHandler = Callable[["FakeUpstream", web.Request], Awaitable[web.StreamResponse]]


async def answer_ok(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=orjson.dumps(COMPLETION),
        content_type="application/json",
        headers={"X-Upstream": up.name},
    )


@dataclass
class FakeUpstream:
    """An OpenAI-ish server on an ephemeral port that records what it was sent."""

    name: str
    handler: UpstreamHandler = answer_ok
    hits: list[tuple[CIMultiDict[str], bytes]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    proceed: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.headers.copy(), await request.read()))
        self.started.set()
        try:
            return await self.handler(self, request)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()


class NoObjects:
    """A ``ListWatch`` that lists nothing and never changes: a policy view with no policies."""

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        return [], "1"

    async def watch(
        self, kind: KindInfo, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncIterator[WatchEvent]:
        await asyncio.Event().wait()
        yield {"type": "BOOKMARK", "object": {}}  # never reached: makes this a generator


def governed(*, insecure: bool = False) -> tuple[Credentials, Governance]:
    """Credentials (the admin token ``API_KEY``, the API key ``OTHER_KEY``) and governance with an
    empty policy set; ``insecure`` lets callers without credentials in."""
    credentials = Credentials(admin_token=API_KEY, api_keys=[OTHER_KEY], insecure=insecure)
    return credentials, Governance(view=PolicyView(source=NoObjects()), insecure=insecure)


class StaticFeed:
    """A feed that never delivers anything (tests write the table themselves)."""

    def __init__(self, *, synced: bool = True) -> None:
        self.synced = asyncio.Event()
        if synced:
            self.synced.set()

    async def run(self) -> None:
        await asyncio.Event().wait()


class GatewayClient:
    """A gateway served on an ephemeral loopback port, and a client session for it (paths are
    relative to the gateway: ``client.post("/v1/chat/completions", ...)``)."""

    def __init__(self, gateway: Gateway, *, shutdown_grace_s: float = 1.0) -> None:
        gateway.settings = replace(gateway.settings, host="127.0.0.1", port=0)
        self.server = GatewayServer(gateway, shutdown_grace_s=shutdown_grace_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start_server() first"
        return self._session

    async def start_server(self) -> None:
        await self.server.start()
        self._session = aiohttp.ClientSession(base_url=self.server.url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.server.stop()

    async def __aenter__(self) -> GatewayClient:
        await self.start_server()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def make_url(self, path: str) -> URL:
        return URL(self.server.url + path)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.session.post(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, path, **kwargs)


@dataclass
class Harness:
    client: GatewayClient
    gateway: Gateway
    table: EndpointTable
    feed: StaticFeed

    def add(self, name: str, up: FakeUpstream | str, *, model: str = "m") -> None:
        url = up if isinstance(up, str) else up.url
        self.table.apply("ADDED", replica(name, model=model, url=url))

    async def chat(
        self,
        body: Any = None,
        *,
        key: str | None = API_KEY,
        headers: dict[str, str] | None = None,
        path: str = "/v1/chat/completions",
    ) -> tuple[int, CIMultiDict[str], bytes]:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = (
            body if isinstance(body, bytes) else orjson.dumps(CHAT_BODY if body is None else body)
        )
        async with self.client.post(path, data=data, headers=sent) as resp:
            return resp.status, resp.headers.copy(), await resp.read()

    async def metrics(self) -> str:
        async with self.client.get("/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[FakeUpstream]]]:
    started: list[FakeUpstream] = []

    async def start(name: str, handler: UpstreamHandler = answer_ok) -> FakeUpstream:
        up = FakeUpstream(name=name, handler=handler)
        await up.start()
        started.append(up)
        return up

    yield start
    for up in started:
        up.proceed.set()
        assert up.server is not None
        await up.server.close()


@pytest.fixture
def settings() -> GatewaySettings:
    # No metrics scraping: the fake upstreams answer every path, and would count the scrapes.
    return GatewaySettings(
        max_body_bytes=64 * 1024, connect_timeout_s=1.0, read_timeout_s=5.0, metrics_interval_s=0
    )


@pytest.fixture
async def harness(settings: GatewaySettings) -> AsyncIterator[Harness]:
    table = EndpointTable()
    feed = StaticFeed()
    credentials, governance = governed()
    gateway = Gateway(
        settings=settings,
        table=table,
        feed=feed,
        authenticator=credentials,
        governance=governance,
    )
    client = GatewayClient(gateway)
    await client.start_server()
    try:
        yield Harness(client=client, gateway=gateway, table=table, feed=feed)
    finally:
        await client.close()
