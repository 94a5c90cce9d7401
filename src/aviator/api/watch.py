"""The watch event shape on the wire (Kubernetes ``watch.Event``)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


class WatchEvent(TypedDict):
    type: EventType
    object: dict[str, Any]
