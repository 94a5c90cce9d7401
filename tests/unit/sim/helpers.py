"""Helpers for the simulator tests: a fake clock, request bodies, SSE parsing, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aviator.sim import SIM_KEY, SimServer
from aviator.sim.engine import Sequence

MODEL = "sim/test-model"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Engine(Protocol):
    def next_deadline(self) -> float | None: ...

    def advance(self) -> list[Sequence]: ...


def drain(engine: Engine, clock: FakeClock, *, until: float = float("inf")) -> None:
    """Move ``clock`` from deadline to deadline until ``engine`` is idle (or ``until``)."""
    while (deadline := engine.next_deadline()) is not None and deadline <= until:
        clock.now = max(clock.now, deadline)
        engine.advance()
    if until != float("inf"):
        clock.now = max(clock.now, until)
        engine.advance()


def chat_body(content: str = "Tell me about control planes.", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def sim_of(client: Client) -> SimServer:
    return client.app[SIM_KEY]


def sse_events(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order; asserts the framing on the way."""
    assert raw.endswith(b"\n\n"), raw[-80:]
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block[len("data: ") :])
    return events


def sse_json(raw: bytes) -> tuple[list[dict[str, Any]], str]:
    """(JSON chunks, last event) of an SSE body."""
    events = sse_events(raw)
    return [orjson.loads(e) for e in events[:-1]], events[-1]


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 3.0, message: str = ""
) -> None:
    """Poll ``predicate`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s {message}")
        await asyncio.sleep(0.005)
