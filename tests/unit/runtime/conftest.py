"""Fixtures for the runtime tests: small timings, a fake engine adapter, runtimes that clean up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aviator.runtime import LocalRuntime
from aviator.runtime.engines import EngineAdapter
from aviator.settings import RuntimeSettings

from .runtime_helpers import SMALL, FakeEngine, Recorder, kill_strays


@dataclass
class Harness:
    data_dir: Path
    runtimes: list[LocalRuntime] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    async def runtime(
        self,
        *,
        settings: RuntimeSettings = SMALL,
        engines: dict[str, EngineAdapter] | None = None,
        recorder: Recorder | None = None,
        default_engines: bool = False,
    ) -> tuple[LocalRuntime, Recorder]:
        recorder = recorder or Recorder(pids=self.pids)
        if engines is None and not default_engines:
            engines = {"sim": FakeEngine()}
        rt = LocalRuntime(
            data_dir=self.data_dir, settings=settings, on_change=recorder, engines=engines
        )
        recorder.runtime = rt
        await rt.start()
        self.runtimes.append(rt)
        return rt, recorder


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(data_dir=tmp_path / "data")
    yield h
    for rt in h.runtimes:
        await rt.close()
    kill_strays(h.pids)  # nothing a test started may outlive it, even when it failed


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    deadline = time.monotonic() + 1.0
    while True:
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not leaked or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert not leaked, f"leaked tasks: {leaked}"


Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def eventually() -> Eventually:
    async def wait(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what or predicate}")
            await asyncio.sleep(0.01)

    return wait
