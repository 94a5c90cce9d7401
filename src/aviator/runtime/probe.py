"""Readiness probe: one HTTP GET, answered 200 or not, with a hard timeout."""

from __future__ import annotations

import asyncio
import time

import aiohttp

__all__ = ["SharedProbe", "probe"]


async def probe(session: aiohttp.ClientSession, url: str, *, timeout: float) -> str | None:
    """None when ``GET url`` answers 200 within ``timeout`` seconds, else why not in a few words.

    The reason never repeats the URL, which for an external endpoint may carry credentials.
    """
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            if response.status == 200:
                return None
            return f"HTTP {response.status}"
    except TimeoutError:
        return f"no answer within {timeout:.3g}s"
    except aiohttp.ClientConnectorError as exc:
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


class SharedProbe:
    """Probes of the same URL, shared: concurrent callers await one request, and an answer
    younger than ``max_age`` seconds is reused.

    External endpoints are the case: many replicas may name one OpenAI-compatible server (a
    thousand deployments behind one gateway), and probing it once per replica per interval
    would load the server and the plane for no new information.
    """

    def __init__(self, session: aiohttp.ClientSession, *, timeout: float, max_age: float) -> None:
        self._session = session
        self._timeout = timeout
        self._max_age = max_age
        self._answers: dict[str, tuple[float, str | None]] = {}
        self._pending: dict[str, asyncio.Task[str | None]] = {}

    async def check(self, url: str) -> str | None:
        cached = self._answers.get(url)
        if cached is not None and time.monotonic() - cached[0] < self._max_age:
            return cached[1]
        task = self._pending.get(url)
        if task is None:
            # Its own task, so one caller's cancellation does not cancel the others' answer.
            task = asyncio.create_task(self._probe(url), name=f"probe {len(self._pending)}")
            self._pending[url] = task
        return await asyncio.shield(task)

    async def _probe(self, url: str) -> str | None:
        try:
            answer = await probe(self._session, url, timeout=self._timeout)
            self._answers[url] = (time.monotonic(), answer)
            return answer
        finally:
            del self._pending[url]
