"""The model directory: what each served model's ModelDeployment asks of the gateway. Pure.

Fed with ModelDeployment objects in wire form (watch events and lists), like the endpoint table is
fed with Replicas. For each served model name it keeps the routing configuration and the default
priority, and it tells a model nobody deploys (404) from one that is deployed but has no ready
replica right now (503) — say, scaled to zero.

Two deployments serving the same model name (in different namespaces) share one pool of replicas
in the endpoint table; the directory then follows the first by ``namespace/name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_ROUTE", "ModelDirectory", "ModelRoute", "route_of"]

PRESETS: Mapping[str, tuple[tuple[str, float], ...]] = {
    # llm-d's default scheduling profile (queue 2, kv-cache 2, prefix 3; reference/inference.md)
    # plus this gateway's own in-flight count at weight 1: scraped metrics lag a burst by up to a
    # scrape period, in-flight counts never do.
    "prefix-aware": (
        ("prefix-cache", 3.0),
        ("queue-depth", 2.0),
        ("kv-cache", 2.0),
        ("in-flight", 1.0),
    ),
    "load": (("queue-depth", 2.0), ("kv-cache", 2.0), ("in-flight", 1.0)),
    # llm-d's payload-agnostic profile: session affinity and active requests, weight 1 each.
    "session": (("session", 1.0), ("in-flight", 1.0)),
    "round-robin": (),
}
"""Scorer weights per ``spec.routing.preset``."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """How one model's requests are routed."""

    deployment: str
    """``namespace/name`` of the ModelDeployment ("" for a model only Replicas announce)."""
    preset: str
    scorers: tuple[tuple[str, float], ...]
    """(scorer name, weight); empty means round-robin."""
    priority: str


DEFAULT_ROUTE = ModelRoute(
    deployment="", preset="prefix-aware", scorers=PRESETS["prefix-aware"], priority="standard"
)
"""For a model whose ModelDeployment the gateway has not seen (replicas made by hand, say)."""


def route_of(obj: Mapping[str, Any]) -> tuple[str, ModelRoute] | None:
    """(model name, route) of a ModelDeployment in wire form, or None when it names no model."""
    meta = obj.get("metadata")
    spec = obj.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return None
    model = spec.get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    if not isinstance(name, str) or not name:
        return None
    routing = spec.get("routing")
    if not isinstance(routing, Mapping):
        routing = {}
    preset = routing.get("preset")
    if not isinstance(preset, str) or preset not in PRESETS:
        preset = "prefix-aware"
    explicit = tuple(
        (s["name"], float(s.get("weight", 1.0)))
        for s in routing.get("scorers") or ()
        if isinstance(s, Mapping) and isinstance(s.get("name"), str)
    )
    priority = spec.get("priority")
    return name, ModelRoute(
        deployment=f"{meta.get('namespace') or ''}/{meta.get('name') or ''}",
        preset=preset if not explicit else "custom",
        scorers=explicit or PRESETS[preset],
        priority=priority if isinstance(priority, str) else "standard",
    )


class ModelDirectory:
    """Served model name → route, from ModelDeployment events."""

    __slots__ = ("_by_deployment", "_routes")

    def __init__(self) -> None:
        self._by_deployment: dict[str, tuple[str, ModelRoute]] = {}
        self._routes: dict[str, ModelRoute] = {}

    def apply(self, type_: str, obj: Mapping[str, Any]) -> None:
        """One watch event (``ADDED``/``MODIFIED``/``DELETED``)."""
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping):
            return
        key = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
        found = None if type_ == "DELETED" else route_of(obj)
        if found is None:
            self._by_deployment.pop(key, None)
        else:
            self._by_deployment[key] = found
        self._rebuild()

    def _rebuild(self) -> None:
        routes: dict[str, ModelRoute] = {}
        for key in sorted(self._by_deployment):
            model, route = self._by_deployment[key]
            routes.setdefault(model, route)
        self._routes = routes

    def route(self, model: str) -> ModelRoute | None:
        """The route of a deployed model, or None when no ModelDeployment serves it."""
        return self._routes.get(model)

    def models(self) -> list[str]:
        return sorted(self._routes)

    def __len__(self) -> int:
        return len(self._routes)
