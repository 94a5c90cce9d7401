"""The governed Control API world (``governed.open_world``) and a test server around it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from tests.unit.controlapi.governed import World, open_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await open_world(tmp_path)
    yield w
    await w.close()


@pytest.fixture
async def base_url(world: World) -> AsyncIterator[str]:
    server = TestServer(world.app)
    await server.start_server()
    yield str(server.make_url(""))
    await server.close()
