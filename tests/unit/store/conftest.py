"""Fixtures for the store tests: a store on a fresh file per test, closed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aviator.settings import StoreSettings
from aviator.store.sqlite import SqliteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "store.db"


@pytest.fixture
def settings() -> StoreSettings:
    return StoreSettings(watch_history=100, watcher_queue=100)


@pytest.fixture
async def store(db_path: Path, settings: StoreSettings) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(db_path, settings=settings)
    yield s
    await s.close()
