"""The model directory: routes and priorities from ModelDeployments, 404 vs 503."""

from __future__ import annotations

from typing import Any

from aviator.gateway.models import PRESETS, ModelDirectory, ModelRoute, route_of


def md(name: str, model: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": model}, **spec},
    }


def test_presets_and_explicit_scorers() -> None:
    default = ModelRoute(
        deployment="default/a",
        preset="prefix-aware",
        scorers=PRESETS["prefix-aware"],
        priority="standard",
    )
    assert route_of(md("a", "m")) == ("m", default)
    _, load = route_of(md("a", "m", routing={"preset": "load"}, priority="sheddable"))  # type: ignore[misc]
    assert load.scorers == PRESETS["load"] and load.priority == "sheddable"
    _, custom = route_of(md("a", "m", routing={"scorers": [{"name": "session", "weight": 4}]}))  # type: ignore[misc]
    assert custom.preset == "custom" and custom.scorers == (("session", 4.0),)
    _, rr = route_of(md("a", "m", routing={"preset": "round-robin"}))  # type: ignore[misc]
    assert rr.scorers == ()


def test_malformed_objects_are_ignored_or_defaulted() -> None:
    assert route_of({"metadata": {"name": "x"}}) is None
    assert route_of({"metadata": {"name": "x"}, "spec": {"model": {}}}) is None
    _, route = route_of(md("a", "m", routing={"preset": "warp-speed"}, priority=3))  # type: ignore[misc]
    assert route.preset == "prefix-aware" and route.priority == "standard"


def test_events_add_change_and_remove_models() -> None:
    directory = ModelDirectory()
    directory.apply("ADDED", md("chat", "llama"))
    assert directory.models() == ["llama"] and directory.route("llama") is not None
    directory.apply("MODIFIED", md("chat", "llama-2"))
    assert directory.models() == ["llama-2"] and directory.route("llama") is None
    directory.apply("DELETED", md("chat", "llama-2"))
    assert len(directory) == 0


def test_two_deployments_of_one_model_follow_the_first_by_key() -> None:
    directory = ModelDirectory()
    directory.apply("ADDED", md("b", "m", namespace="team", priority="critical"))
    directory.apply("ADDED", md("a", "m", namespace="default", priority="sheddable"))
    route = directory.route("m")
    assert route is not None and route.deployment == "default/a" and route.priority == "sheddable"
    directory.apply("DELETED", md("a", "m"))
    route = directory.route("m")
    assert route is not None and route.deployment == "team/b"
