"""Fan-out of committed changes to watchers, with a bounded history for resumable watches.

Everything here runs on the event loop thread; the store thread hands over each transaction's
changes with ``loop.call_soon_threadsafe(hub.publish, changes)`` right after its commit, so the
hub sees changes in commit (= resourceVersion) order.

Events cross watchers as immutable ``bytes``; each watcher decodes its own copy when it yields,
so no consumer can alter what another one sees.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aviator.api.errors import BadRequest, Gone
from aviator.api.labels import Selector
from aviator.api.watch import EventType, WatchEvent

__all__ = ["Change", "Snapshot", "WatchHub", "WatchStream", "parse_resource_version"]

Snapshot = Callable[[], Awaitable[tuple[list[dict[str, Any]], int]]]
"""Reads the current matching objects and the resourceVersion they were read at."""


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as every watcher of its kind may see it."""

    revision: int
    type: EventType
    kind: str
    namespace: str | None
    labels: Mapping[str, str]
    previous_labels: Mapping[str, str] | None
    """Labels before a MODIFIED change, so selector watchers see objects enter and leave."""
    body: bytes
    """The object after the change, JSON-encoded."""


def parse_resource_version(value: str | None) -> int | None:
    """``None`` means "from the current state" (``None``, ``""``, ``"0"``); else the number."""
    if value is None or value in ("", "0"):
        return None
    if not value.isdigit():
        raise BadRequest(f"invalid resourceVersion {value!r}: expected a non-negative integer")
    return int(value)


class WatchHub:
    """Current resourceVersion, the last ``history`` changes across kinds, and live watchers."""

    def __init__(self, *, revision: int, history: int) -> None:
        self._revision = revision
        self._floor = revision
        """Every change after this revision is in ``_history``."""
        self._history: deque[Change] = deque(maxlen=max(history, 0))
        self._watchers: dict[str, weakref.WeakSet[WatchStream]] = {}
        """Weak, so that a stream its consumer dropped (``break``) stops receiving at once."""
        self._closed = False

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def floor(self) -> int:
        """The oldest resourceVersion a watch can resume from."""
        return self._floor

    @property
    def closed(self) -> bool:
        return self._closed

    def watcher_count(self) -> int:
        return sum(len(group) for group in self._watchers.values())

    def publish(self, changes: Sequence[Change]) -> None:
        """Record one transaction's changes and offer them to the watchers of their kind."""
        for change in changes:
            self._revision = change.revision
            if self._history.maxlen == 0:
                self._floor = change.revision
            elif len(self._history) == self._history.maxlen:
                self._floor = self._history[0].revision
            self._history.append(change)
            for watcher in tuple(self._watchers.get(change.kind, ())):
                watcher.offer(change)

    def since(self, kind: str, revision: int) -> list[Change]:
        """Retained changes of ``kind`` after ``revision``; ``Gone`` if some are no longer kept."""
        if revision < self._floor:
            raise Gone(
                f"too old resource version: {revision} (the oldest this store can replay is "
                f"{self._floor}); list again"
            )
        out: list[Change] = []
        for change in reversed(self._history):
            if change.revision <= revision:
                break
            if change.kind == kind:
                out.append(change)
        out.reverse()
        return out

    def subscribe(self, watcher: WatchStream) -> None:
        self._watchers.setdefault(watcher.kind, weakref.WeakSet()).add(watcher)

    def unsubscribe(self, watcher: WatchStream) -> None:
        group = self._watchers.get(watcher.kind)
        if group is not None:
            group.discard(watcher)
            if not group:
                del self._watchers[watcher.kind]

    def close(self) -> None:
        """End every watch (their iterators stop); later changes are counted but not kept."""
        self._closed = True
        for group in tuple(self._watchers.values()):
            for watcher in tuple(group):
                watcher.end()
        self._watchers.clear()
        self._history.clear()


@dataclass(frozen=True, slots=True)
class _Delivery:
    revision: int
    type: EventType
    body: bytes | dict[str, Any]
    """Encoded (shared, immutable) or already this watcher's own decoded copy."""

    def event(self) -> WatchEvent:
        obj = orjson.loads(self.body) if isinstance(self.body, bytes) else self.body
        return {"type": self.type, "object": obj}


_NEW, _RUNNING, _OVERFLOWED, _ENDED = "new", "running", "overflowed", "ended"


class WatchStream:
    """One watcher: an async iterator of ``WatchEvent``.

    Nothing happens until the first ``__anext__``: then it either lists (no resourceVersion) or
    replays the hub's history (``Gone`` if too old), and subscribes. Live events wait in a
    queue of at most ``limit``; a watcher that lets it fill is dropped and raises ``Gone``.
    ``aclose()``, cancellation while waiting, or dropping the iterator (``break``; the hub holds
    watchers weakly) unsubscribe.
    """

    def __init__(
        self,
        hub: WatchHub,
        *,
        kind: str,
        namespace: str | None,
        selector: Selector | None,
        resource_version: int | None,
        snapshot: Snapshot,
        limit: int,
    ) -> None:
        self.kind = kind
        self._hub = hub
        self._namespace = namespace
        self._selector = selector if selector is not None and not selector.empty else None
        self._start_at = resource_version
        self._snapshot = snapshot
        self._limit = max(limit, 1)
        self._after = 0
        """Live events at or below this revision are already covered by the list or replay."""
        self._pending: deque[_Delivery] = deque()
        self._queue: deque[_Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._state = _NEW

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        try:
            if self._state == _NEW:
                await self._start()
            while True:
                if self._state == _OVERFLOWED:
                    self._finish()
                    raise Gone(
                        f"the watch fell more than {self._limit} events behind and was closed; "
                        "list again"
                    )
                if self._pending:
                    return self._pending.popleft().event()
                while self._queue:
                    delivery = self._queue.popleft()
                    if delivery.revision > self._after:
                        return delivery.event()
                if self._state == _ENDED:
                    raise StopAsyncIteration
                self._wakeup.clear()
                await self._wakeup.wait()
        except BaseException:
            # Gone, cancellation while waiting, a failed list, or the end: this stream is done.
            self._finish()
            raise

    async def aclose(self) -> None:
        self._finish()

    def offer(self, change: Change) -> None:
        """Called by the hub for each change of this kind, in revision order."""
        delivery = self._convert(change)
        if delivery is None or self._state != _RUNNING:
            return
        if len(self._queue) >= self._limit:
            self._state = _OVERFLOWED
            self._queue.clear()
            self._pending.clear()
            self._hub.unsubscribe(self)
        else:
            self._queue.append(delivery)
        self._wakeup.set()

    def end(self) -> None:
        """The store is closing: deliver what is queued, then stop."""
        if self._state in (_NEW, _RUNNING):
            self._state = _ENDED
        self._wakeup.set()

    async def _start(self) -> None:
        if self._hub.closed:
            self._state = _ENDED
            return
        if self._start_at is None:
            self._state = _RUNNING
            self._hub.subscribe(self)  # before listing, so nothing between the two is missed
            items, revision = await self._snapshot()
            self._after = revision
            self._pending.extend(_Delivery(revision, "ADDED", item) for item in items)
        else:
            replay = self._hub.since(self.kind, self._start_at)  # Gone before subscribing
            self._state = _RUNNING
            self._hub.subscribe(self)  # in the same loop step: no change falls in between
            # A resourceVersion from the future skips live events up to it.
            self._after = self._start_at
            for change in replay:
                if (delivery := self._convert(change)) is not None:
                    self._pending.append(delivery)

    def _finish(self) -> None:
        self._state = _ENDED
        self._pending.clear()
        self._queue.clear()
        self._hub.unsubscribe(self)
        self._wakeup.set()  # a reader waiting in another task stops too

    def _convert(self, change: Change) -> _Delivery | None:
        """The event this watcher sees for ``change``, or None (other namespace, not selected).

        With a selector, an object that starts matching arrives as ADDED and one that stops
        matching as DELETED (carrying its new state), as Kubernetes watch caches do.
        """
        if self._namespace is not None and change.namespace != self._namespace:
            return None
        event_type: EventType = change.type
        if self._selector is not None:
            now = self._selector.matches(change.labels)
            if change.type == "MODIFIED" and change.previous_labels is not None:
                before = self._selector.matches(change.previous_labels)
                if now and not before:
                    event_type = "ADDED"
                elif before and not now:
                    event_type = "DELETED"
                elif not now:
                    return None
            elif not now:
                return None
        return _Delivery(change.revision, event_type, change.body)
