"""``Static``: a ``ListWatch`` over fixed objects whose watch never delivers an event."""

from __future__ import annotations

import asyncio
from typing import Any


class Static:
    """Lists ``items`` (whatever kind is asked for) at resourceVersion 1; watches wait forever."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list(
        self, kind: Any, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        return self.items, "1"

    async def watch(
        self, kind: Any, *, namespace: str | None = None, resource_version: str | None = None
    ) -> Any:
        await asyncio.Event().wait()
        yield  # pragma: no cover
