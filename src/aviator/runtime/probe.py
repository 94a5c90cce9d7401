"""Readiness probe: one HTTP GET, answered 200 or not, with a hard timeout."""

from __future__ import annotations

import aiohttp

__all__ = ["probe"]


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
