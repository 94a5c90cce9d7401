"""Objects and watch helpers shared by the store tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aviator.api.kinds import MODEL_DEPLOYMENT, REPLICA, KindInfo
from aviator.api.watch import WatchEvent

NODE = KindInfo(
    kind="TestNode",
    plural="testnodes",
    singular="testnode",
    short_names=(),
    namespaced=False,
    model_ref="aviator.api.modeldeployment:ModelDeployment",
)
"""A cluster-scoped kind, for scope rules (the store never looks at ``model``)."""

DEADLINE_S = 5.0


def md(name: str, *, namespace: str = "default", **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": MODEL_DEPLOYMENT.kind,
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"model": {"name": f"model-{name}"}, "engine": "sim"},
    }


def replica(
    name: str, *, owner: dict[str, Any] | None = None, namespace: str = "default", **metadata: Any
) -> dict[str, Any]:
    if owner is not None:
        metadata.setdefault("ownerReferences", []).append(owner_ref(owner))
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": REPLICA.kind,
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"model": {"name": "m"}, "engine": "sim", "node": "local"},
        "status": {"phase": "Pending"},
    }


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def brief(event: WatchEvent) -> tuple[str, str, int]:
    """(type, name, resourceVersion) — enough to compare event sequences."""
    return event["type"], event["object"]["metadata"]["name"], rv(event["object"])


async def take(
    events: AsyncIterator[WatchEvent], count: int, *, timeout: float = DEADLINE_S
) -> list[WatchEvent]:
    """The next ``count`` events, failing (not hanging) if they do not come in time."""
    out: list[WatchEvent] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await anext(events))
    return out


async def nothing_more(events: AsyncIterator[WatchEvent], *, within: float = 0.05) -> None:
    """Assert no further event arrives for a short while. Absence cannot be polled for, so this
    waits; the timeout cancels the read, which ends the stream: use it last."""
    try:
        async with asyncio.timeout(within):
            event = await anext(events)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected event {brief(event)}")
