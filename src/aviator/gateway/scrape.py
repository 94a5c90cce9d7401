"""Replica load, scraped: every replica's ``/metrics`` read on a short period, kept in memory.

The scorers read the latest sample per replica synchronously; nothing in the request path waits
for a scrape. Each period the scraper reads every routable endpoint concurrently (one pooled
session, a timeout of one period); what an engine publishes is parsed by
:func:`aviator.enginemetrics.parse_load` (vLLM and SGLang names). A replica whose last good sample
is older than ``stale_after_s`` (it stopped answering, or answers something else) is *stale*, and
the scorers count a stale replica as saturated, as llm-d does with metrics it cannot trust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from aviator.enginemetrics import EngineLoad, parse_load
from aviator.gateway.endpoints import Endpoint

__all__ = ["EngineSignals", "Sample", "Scraper"]

log = logging.getLogger("aviator.gateway.scrape")


@dataclass(frozen=True, slots=True)
class Sample:
    load: EngineLoad
    at: float
    """Monotonic seconds when it was read."""


class EngineSignals:
    """The latest load sample per replica key, and whether it can still be trusted."""

    __slots__ = ("_clock", "_samples", "stale_after_s")

    def __init__(
        self, *, stale_after_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._samples: dict[str, Sample] = {}

    def put(self, key: str, load: EngineLoad) -> None:
        self._samples[key] = Sample(load, self._clock())

    def fresh(self, key: str) -> EngineLoad | None:
        """The load of ``key`` if sampled within ``stale_after_s``; None when stale or unknown."""
        sample = self._samples.get(key)
        if sample is None or self._clock() - sample.at > self.stale_after_s:
            return None
        return sample.load

    def age(self, key: str) -> float | None:
        """Seconds since ``key``'s last good sample, or None if it never had one."""
        sample = self._samples.get(key)
        return None if sample is None else self._clock() - sample.at

    def retain(self, keys: Iterable[str]) -> None:
        keep = set(keys)
        for key in [k for k in self._samples if k not in keep]:
            del self._samples[key]


class Scraper:
    """Reads ``endpoints()``' metrics into ``signals`` every ``interval_s`` until cancelled."""

    def __init__(
        self,
        *,
        endpoints: Callable[[], list[Endpoint]],
        signals: EngineSignals,
        interval_s: float = 0.1,
        on_tick: Callable[[list[Endpoint]], None] | None = None,
    ) -> None:
        """``on_tick`` is told the endpoints of each round (to forget departed replicas)."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._endpoints = endpoints
        self._signals = signals
        self._interval_s = interval_s
        self._on_tick = on_tick
        self.rounds = 0

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(self._interval_s, 0.25))
        connector = aiohttp.TCPConnector(limit=64, limit_per_host=2)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            while True:
                started = time.monotonic()
                endpoints = self._endpoints()
                if endpoints:
                    await asyncio.gather(*(self._read(session, e) for e in endpoints))
                self._signals.retain(e.key for e in endpoints)
                if self._on_tick is not None:
                    self._on_tick(endpoints)
                self.rounds += 1
                await asyncio.sleep(max(0.0, self._interval_s - (time.monotonic() - started)))

    async def _read(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        try:
            async with session.get(endpoint.url + "/metrics") as response:
                if response.status != 200:
                    return
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.debug("no metrics from %s: %r", endpoint.key, exc)
            return
        load = parse_load(text)
        if load is not None:
            self._signals.put(endpoint.key, load)
