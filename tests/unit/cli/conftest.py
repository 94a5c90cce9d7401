"""CLI fixtures: a real Control API over a real SQLite store, served from a background thread.

The commands under test run ``asyncio.run`` in the test's thread, exactly as in a terminal, so the
server needs its own loop: it runs in a thread and tests reach the store through ``ApiServer.call``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner, Result

from aviator.api import admission
from aviator.api.kinds import KindInfo
from aviator.cli import resources
from aviator.cli.context import CliContext
from aviator.client import Client
from aviator.controlapi.app import build_app
from aviator.settings import ApiSettings, StoreSettings
from aviator.store.sqlite import SqliteStore

TOKEN = "cli-test-token"
T = TypeVar("T")


def make_app() -> typer.Typer:
    """The resource commands under the same global options as ``aviator`` itself."""
    app = typer.Typer(name="aviator", add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def root(
        ctx: typer.Context,
        data_dir: Path = typer.Option(Path(".aviator"), "--data-dir"),
        server: str | None = typer.Option(None, "--server"),
        token: str | None = typer.Option(None, "--token"),
    ) -> None:
        ctx.obj = CliContext(data_dir=data_dir, server=server, token=token)

    resources.register(app)
    return app


@dataclass
class ApiServer:
    url: str
    store: SqliteStore
    loop: asyncio.AbstractEventLoop
    data_dir: Path
    app: typer.Typer = field(default_factory=make_app)

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the server's loop (the store belongs to it) and return its result."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout=10)

    def create(
        self, kind: KindInfo, body: dict[str, Any], namespace: str = "default"
    ) -> dict[str, Any]:
        obj = admission.admit(body, kind=kind, namespace=namespace)
        return self.call(lambda: self.store.create(kind, obj))

    def get(self, kind: KindInfo, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.call(lambda: self.store.get(kind, namespace, name))

    def names(self, kind: KindInfo, namespace: str | None = "default") -> list[str]:
        items, _ = self.call(lambda: self.store.list(kind, namespace=namespace))
        return [i["metadata"]["name"] for i in items]

    def set_status(
        self, kind: KindInfo, name: str, status: dict[str, Any], namespace: str = "default"
    ) -> None:
        current = self.get(kind, name, namespace)
        obj = admission.admit_status({"status": status}, kind=kind, current=current)
        self.call(lambda: self.store.replace_status(kind, obj))

    def replace(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.store.replace(kind, obj))

    def delete(self, kind: KindInfo, name: str, namespace: str = "default") -> None:
        self.call(lambda: self.store.delete(kind, namespace, name))

    def watchers(self) -> int:
        async def count() -> int:
            return self.store.watcher_count()

        return self.call(count)

    def run(self, args: Sequence[str], *, input: str | None = None) -> Result:
        """Invoke ``aviator --server … --token … --data-dir … ARGS``."""
        argv = ["--server", self.url, "--token", TOKEN, "--data-dir", str(self.data_dir), *args]
        return CliRunner().invoke(self.app, argv, input=input)


@pytest.fixture(autouse=True)
def _plain_http_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every httpx client loads the CA bundle (50-200 ms of CPU) though these tests speak plain
    HTTP to 127.0.0.1; with ~70 commands that is most of this suite's time. Same client otherwise."""

    def client(self: CliContext, *, timeout: float = 10.0) -> Client:
        return Client(
            self.api_url(),
            token=self.api_token(),
            timeout=timeout,
            transport=httpx.AsyncHTTPTransport(verify=False),
        )

    monkeypatch.setattr(CliContext, "client", client)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test control api", daemon=True)
    thread.start()

    async def start() -> tuple[SqliteStore, web.AppRunner, int]:
        store = await SqliteStore.open(tmp_path / "aviator.db", settings=StoreSettings())
        app = build_app(store=store, settings=ApiSettings(watch_keepalive_s=1.0), token=TOKEN)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return store, runner, port

    async def stop(store: SqliteStore, runner: web.AppRunner) -> None:
        await runner.cleanup()
        await store.close()
        # A watch handler whose client went away lingers until its next write; end it here.
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    store, runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield ApiServer(
            url=f"http://127.0.0.1:{port}", store=store, loop=loop, data_dir=tmp_path / "data"
        )
    finally:
        asyncio.run_coroutine_threadsafe(stop(store, runner), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def when(
    condition: Callable[[], bool], action: Callable[[], object], *, timeout: float = 10.0
) -> threading.Thread:
    """In a thread: poll ``condition`` (with a deadline), then run ``action`` — a change that
    arrives while a command is already waiting. ``join_checked`` re-raises its failures."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    raise TimeoutError("the command never reached the expected state")
                time.sleep(0.01)
            action()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.failures = failures  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_checked(thread: threading.Thread) -> None:
    thread.join(timeout=10)
    assert not thread.is_alive(), "background action did not finish"
    failures: list[BaseException] = thread.failures  # type: ignore[attr-defined]
    if failures:
        raise failures[0]


class EchoSpy:
    """Records what the commands print, so a background thread can react to output."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def seen(self, fragment: str) -> bool:
        with self._lock:
            return any(fragment in t for t in self.texts)

    def record(self, text: object) -> None:
        with self._lock:
            self.texts.append(str(text))


@pytest.fixture
def echo_spy(monkeypatch: pytest.MonkeyPatch) -> EchoSpy:
    spy = EchoSpy()
    original = typer.echo

    def echo(message: Any = None, *args: Any, **kwargs: Any) -> None:
        original(message, *args, **kwargs)
        spy.record(message)

    monkeypatch.setattr(typer, "echo", echo)
    return spy
