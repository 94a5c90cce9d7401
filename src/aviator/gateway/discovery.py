"""Keeping the gateway's state fed: a list + watch of Replicas and ModelDeployments.

``Discovery`` wraps two ``aviator.cache.Reflector`` (list, watch from the list's resourceVersion,
relist with backoff on ``Gone`` or a dropped connection, and emit the changes missed in between)
over any ``ListWatch`` — the Control API ``Client`` in production, an in-memory fake in tests —
and applies every Replica event to the ``EndpointTable`` and every ModelDeployment event to the
``ModelDirectory`` (routing configuration, default priority, which models exist at all).

While the watch is down the table is left as it was: the gateway keeps routing on the last known
state, and the outage is logged (by the reflector, once per retry). A replica whose Ready condition
goes False arrives as a MODIFIED event and leaves the table at once; nothing here polls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA
from aviator.cache import ListWatch, Reflector
from aviator.gateway.endpoints import EndpointTable, model_of, replica_key
from aviator.gateway.models import ModelDirectory

__all__ = ["Discovery", "Feed", "ListWatch"]


class Feed(Protocol):
    """A long-running source of state the gateway starts and stops with itself."""

    @property
    def synced(self) -> asyncio.Event:
        """Set once the first full list has been delivered."""
        ...

    async def run(self) -> None:
        """Deliver events until cancelled; survive outages on its own."""
        ...


class Discovery:
    """Replicas from ``source`` into ``table``, ModelDeployments into ``directory`` (a ``Feed``)."""

    __slots__ = ("_deployments", "_directory", "_log", "_reflector", "_synced", "_table")

    def __init__(
        self,
        *,
        source: ListWatch,
        table: EndpointTable,
        directory: ModelDirectory | None = None,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._table = table
        self._directory = directory if directory is not None else ModelDirectory()
        self._log = logger or logging.getLogger("aviator.gateway.discovery")
        self._reflector = Reflector(
            source=source,
            kind=REPLICA,
            on_event=self.on_event,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            logger=self._log,
        )
        self._deployments = Reflector(
            source=source,
            kind=MODEL_DEPLOYMENT,
            on_event=self._directory.apply,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            logger=self._log,
        )
        self._synced = asyncio.Event()

    @property
    def table(self) -> EndpointTable:
        return self._table

    @property
    def directory(self) -> ModelDirectory:
        return self._directory

    @property
    def synced(self) -> asyncio.Event:
        """Set once both the Replicas and the ModelDeployments have been listed."""
        return self._synced

    async def run(self) -> None:
        """List and watch until cancelled."""

        async def both_synced() -> None:
            await self._reflector.synced.wait()
            await self._deployments.synced.wait()
            self._synced.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(self._reflector.run())
            group.create_task(self._deployments.run())
            group.create_task(both_synced())

    def on_event(self, type_: str, obj: dict[str, Any]) -> None:
        """Apply one Replica event; log every change of routability."""
        key = replica_key(obj)
        if key is None:
            return
        before = self._table.endpoint(key)
        if not self._table.apply(type_, obj):
            return
        after = self._table.endpoint(key)
        if before == after:
            return
        model = model_of(obj) or "?"
        if after is None:
            self._log.info("replica %s (model %s) is no longer routable (%s)", key, model, type_)
        elif before is None:
            self._log.info("replica %s (model %s) is routable at %s", key, model, after.url)
        else:
            self._log.info("replica %s (model %s) moved to %s", key, model, after.url)
