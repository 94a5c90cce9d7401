"""Fixtures for the simulator tests: test clients on fresh simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aviator.sim import SimOptions, build_app

from .helpers import MODEL, Client, MakeClient


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """``await make_client(**options)``: a test client on a fresh simulator (zero latency unless
    the options say otherwise). TestServer runs with ``handler_cancellation=True`` like ``serve``."""
    clients: list[Client] = []

    async def make(**overrides: Any) -> Client:
        options = SimOptions(**{"model": MODEL, "ttft_ms": 0.0, "itl_ms": 0.0, **overrides})
        client: Client = TestClient(TestServer(build_app(options)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()
