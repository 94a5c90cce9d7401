"""The reconcile contract (controller-runtime's ``reconcile.Reconciler``) and its runner.

``reconcile(key) -> Result``: a non-``TerminalError`` exception requeues the key with exponential
backoff; ``Result.requeue_after`` asks for another look later; success forgets the key's failures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aviator.controllers.queue import ShutDown, WorkQueue
from aviator.settings import ControllerSettings

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


@dataclass(frozen=True, slots=True)
class Result:
    requeue_after: float | None = None
    """Seconds until the key should be reconciled again even if nothing changes."""


class TerminalError(Exception):
    """A failure retrying cannot fix (bad input already admitted, a missing engine); not requeued."""


class Reconciler(Protocol[K_contra]):
    async def reconcile(self, key: K_contra) -> Result: ...


@dataclass(slots=True)
class ControllerStats:
    reconciles: int = 0
    errors: int = 0
    last_duration_s: float = 0.0


class Controller(Generic[K]):
    """Runs ``settings.workers`` workers over one queue for one reconciler."""

    def __init__(
        self, *, name: str, reconciler: Reconciler[K], settings: ControllerSettings
    ) -> None:
        self.name = name
        self.queue: WorkQueue[K] = WorkQueue(
            backoff_base_s=settings.backoff_base_s, backoff_max_s=settings.backoff_max_s
        )
        self.stats = ControllerStats()
        self._reconciler = reconciler
        self._workers = settings.workers
        self._log = logging.getLogger(f"aviator.controllers.{name}")

    async def run(self) -> None:
        """Work until cancelled (then shut the queue and stop the workers)."""
        workers = [
            asyncio.create_task(self._worker(), name=f"{self.name} worker {i}")
            for i in range(self._workers)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._reconcile_one(key)
            finally:
                self.queue.done(key)

    async def _reconcile_one(self, key: K) -> None:
        started = time.perf_counter()
        self.stats.reconciles += 1
        try:
            result = await self._reconciler.reconcile(key)
        except asyncio.CancelledError:
            raise
        except TerminalError as exc:
            self.stats.errors += 1
            self._log.error("reconcile %s failed permanently: %s", key, exc)
            self.queue.forget(key)
        except Exception as exc:
            self.stats.errors += 1
            delay = self.queue.add_rate_limited(key)
            level = logging.INFO if self.queue.failures(key) <= 3 else logging.WARNING
            self._log.log(
                level,
                "reconcile %s failed (%s: %s); retrying in %.2fs",
                key,
                type(exc).__name__,
                exc,
                delay,
            )
        else:
            self.queue.forget(key)
            if result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
        finally:
            self.stats.last_duration_s = time.perf_counter() - started
