"""Where a verifier's keys come from: JWKS files and URLs, held in memory and refreshed in the
background. The shell around ``verify`` (which never does I/O itself).

- ``JwksFile``: read at start (a missing or broken file is an error then), re-read whenever its
  size, mtime or inode change (checked every ``poll_s``).
- ``JwksUrl``: fetched with httpx at start and every ``refresh_s``; sooner when a token names an
  unknown ``kid`` (``request_refresh``, at most every ``min_refresh_s``), because the issuer may
  have rotated. A failed fetch keeps the last good keys and is retried with backoff.
- ``TrustedIssuers``: one source per ``TrustedIssuerSettings`` and the ``Issuer`` built on it.

Each source is a ``KeySource``: ``key(kid)`` only reads memory. Run ``await source.run()`` as a
task for the refreshing; cancel it to stop. Nothing logged here names a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import httpx

from aviator.api.errors import AviatorError
from aviator.identity.jwk import JwkError, JwkSet, PublicJwk
from aviator.identity.verify import Issuer, trusted_issuer
from aviator.settings import TrustedIssuerSettings

__all__ = ["JwksError", "JwksFile", "JwksUrl", "TrustedIssuers"]

log = logging.getLogger("aviator.identity.sources")

MAX_JWKS_BYTES = 256 * 1024
"""A JWKS larger than this is refused (real ones are a few KiB)."""


class JwksError(AviatorError):
    """A JWKS could not be read, fetched or parsed."""


def _parse(raw: bytes, *, origin: str) -> JwkSet:
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksError(f"{origin}: JWKS larger than {MAX_JWKS_BYTES} bytes")
    try:
        keys = JwkSet.from_document(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError, JwkError) as exc:
        raise JwksError(f"{origin}: {exc}") from None
    for reason in keys.skipped:
        log.warning("%s: skipped a key: %s", origin, reason)
    if not keys.keys:
        raise JwksError(f"{origin}: no usable key")
    return keys


class JwksFile:
    """A JWKS file, re-read when it changes."""

    def __init__(self, path: Path, *, poll_s: float = 1.0) -> None:
        self.path = path
        self.poll_s = poll_s
        self._keys = JwkSet(())
        self._signature: tuple[int, int, int] | None = None

    def key(self, kid: str | None) -> PublicJwk | None:
        return self._keys.key(kid)

    def request_refresh(self) -> None:
        """Nothing to do: a changed file is noticed within ``poll_s`` anyway."""

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_size, st.st_mtime_ns

    def load(self) -> None:
        """Read the file now; ``JwksError`` when it is missing or unusable."""
        try:
            signature = self._stat()
            raw = self.path.read_bytes()
        except OSError as exc:
            raise JwksError(f"cannot read JWKS file {self.path}: {exc}") from None
        self._keys = _parse(raw, origin=str(self.path))
        self._signature = signature

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since the last load; a broken new version is logged
        and the previous keys are kept. Returns whether new keys were loaded."""
        try:
            signature = self._stat()
        except OSError as exc:
            log.warning("JWKS file %s: %s; keeping the previous keys", self.path, exc)
            return False
        if signature == self._signature:
            return False
        try:
            self.load()
        except JwksError as exc:
            log.warning("%s; keeping the previous keys", exc)
            self._signature = signature  # warn once per change, not once per poll
            return False
        log.info("reloaded JWKS file %s (%d keys)", self.path, len(self._keys.keys))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.reload_if_changed()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        if host == "localhost":
            return
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:
                return
        raise JwksError(f"JWKS URL {url!r}: plain http is allowed only to a loopback address")
    raise JwksError(f"JWKS URL {url!r} must be https://")


class JwksUrl:
    """A JWKS fetched over HTTP(S) and refreshed periodically."""

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float = 300.0,
        min_refresh_s: float = 30.0,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client``: injectable (tests pass one on an ``httpx.MockTransport``); otherwise one is
        made and closed by ``aclose``."""
        _check_url(url)
        self.url = url
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._clock = clock
        self._keys = JwkSet(())
        self._wake = asyncio.Event()
        self._last_attempt = -float("inf")
        self.fetched_at: float | None = None
        """``clock()`` of the last successful fetch."""

    def key(self, kid: str | None) -> PublicJwk | None:
        return self._keys.key(kid)

    def request_refresh(self) -> None:
        """Ask for an early fetch (an unknown ``kid`` was seen); rate-limited."""
        if self._clock() - self._last_attempt >= self.min_refresh_s:
            self._wake.set()

    async def refresh(self) -> None:
        """Fetch now; ``JwksError`` on failure (the previous keys stay)."""
        self._last_attempt = self._clock()
        try:
            async with self._client.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise JwksError(f"{self.url}: HTTP {response.status_code}")
                raw = b""
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > MAX_JWKS_BYTES:
                        raise JwksError(f"{self.url}: JWKS larger than {MAX_JWKS_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise JwksError(f"cannot fetch {self.url}: {exc}") from None
        self._keys = _parse(raw, origin=self.url)
        self.fetched_at = self._clock()

    async def run(self) -> None:
        """Refresh every ``refresh_s`` (or when asked); after a failure retry sooner, backing off
        from 1 s up to ``refresh_s`` (also when the first fetch, at start, failed)."""
        failures = 0 if self.fetched_at is not None else 1
        while True:
            delay = self.refresh_s if failures == 0 else min(self.refresh_s, 2.0 ** (failures - 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                await self.refresh()
            except JwksError as exc:
                failures += 1
                log.warning("%s; keeping the previous keys (attempt %d)", exc, failures)
            else:
                failures = 0

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


KeySourceShell = JwksFile | JwksUrl


class TrustedIssuers:
    """The configured external issuers: their key sources and ``Issuer`` objects.

    ``async with TrustedIssuers(settings) as trusted:`` loads every source (a bad file raises; an
    unreachable URL is logged and retried in the background) and runs the refreshers until exit.
    """

    def __init__(
        self,
        settings: Sequence[TrustedIssuerSettings],
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.sources: list[KeySourceShell] = []
        self.issuers: list[Issuer] = []
        for config in settings:
            source: KeySourceShell
            if config.jwks.startswith(("https://", "http://")):
                source = JwksUrl(config.jwks, refresh_s=config.refresh_s, client=client)
            else:
                source = JwksFile(Path(config.jwks))
            self.sources.append(source)
            self.issuers.append(
                trusted_issuer(config, keys=source, on_unknown_key=source.request_refresh)
            )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for source in self.sources:
            if isinstance(source, JwksFile):
                source.load()
            else:
                try:
                    await source.refresh()
                except JwksError as exc:
                    log.warning("%s; will retry in the background", exc)
            self._tasks.append(
                asyncio.create_task(
                    source.run(),
                    name=f"jwks refresh {source.url if isinstance(source, JwksUrl) else source.path}",
                )
            )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for source in self.sources:
            if isinstance(source, JwksUrl):
                await source.aclose()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
