"""Reading replicas' load from their engines' ``/metrics``, for the autoscaler.

A thin I/O shell over :func:`aviator.enginemetrics.parse_load`: concurrent GETs with a short
timeout, each endpoint read at most once per ``max_age_s`` whoever asks. A replica that does not
answer, or answers something that is not an engine's metrics, is simply absent from the result:
the autoscaler does not guess its load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import httpx

from aviator.enginemetrics import EngineLoad, parse_load

log = logging.getLogger("aviator.controllers.load")


class LoadReader:
    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        max_age_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport, trust_env=False)
        self._max_age_s = max_age_s
        self._cache: dict[str, tuple[float, EngineLoad | None]] = {}

    async def read(self, endpoints: Iterable[str]) -> dict[str, EngineLoad]:
        """The load of each endpoint (a base URL) that reported one."""
        now = time.monotonic()
        wanted = sorted(set(endpoints))
        stale = [
            e for e in wanted if e not in self._cache or now - self._cache[e][0] >= self._max_age_s
        ]
        if stale:
            results = await asyncio.gather(*(self._fetch(e) for e in stale))
            for endpoint, load in zip(stale, results, strict=True):
                self._cache[endpoint] = (now, load)
        # Forget endpoints nobody asked about for a while (replicas come and go).
        for endpoint in [e for e, (at, _) in self._cache.items() if now - at > 60]:
            del self._cache[endpoint]
        return {e: load for e in wanted if (load := self._cache[e][1]) is not None}

    async def _fetch(self, endpoint: str) -> EngineLoad | None:
        try:
            response = await self._http.get(f"{endpoint.rstrip('/')}/metrics")
        except httpx.HTTPError as exc:
            log.debug("no load from %s: %s", endpoint, exc)
            return None
        if response.status_code != 200:
            log.debug("no load from %s: HTTP %d", endpoint, response.status_code)
            return None
        return parse_load(response.text)

    async def aclose(self) -> None:
        await self._http.aclose()
