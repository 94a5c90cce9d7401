"""Integration fixtures: the real plane on ephemeral ports in a temporary data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.integration.plane import INVENTORY, PlaneProcess

from aviator.client import Client


@pytest.fixture
def plane_dir(tmp_path: Path) -> Path:
    return tmp_path / "aviator"


@pytest.fixture
def plane(plane_dir: Path) -> Iterator[PlaneProcess]:
    handle = PlaneProcess(data_dir=plane_dir)
    handle.start()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def headless_plane(plane_dir: Path) -> Iterator[PlaneProcess]:
    """A plane without the gateway, for tests that never talk to it (it starts faster)."""
    handle = PlaneProcess(data_dir=plane_dir)
    handle.start("--no-gateway")
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
async def client(plane: PlaneProcess) -> AsyncIterator[Client]:
    async with plane.client() as c:
        yield c


@pytest.fixture
def fleet(plane_dir: Path) -> Iterator[PlaneProcess]:
    """A plane (no gateway) planning on the mixed example inventory."""
    handle = PlaneProcess(data_dir=plane_dir)
    handle.start("--no-gateway", "--inventory", INVENTORY)
    try:
        yield handle
    finally:
        handle.cleanup()
