"""Argument parsing: object references, durations, --for expressions, condition checks."""

from __future__ import annotations

from typing import Any

import pytest

from aviator.api import errors, kinds
from aviator.cli import parsing
from aviator.cli.parsing import ObjectRef, UsageError, WaitFor


def test_refs_in_both_kubectl_forms() -> None:
    assert parsing.parse_refs(["md"], names_required=False) == ([kinds.MODEL_DEPLOYMENT], [])
    assert parsing.parse_refs(["Replicas", "a", "b"], names_required=True) == (
        [kinds.REPLICA],
        [ObjectRef(kinds.REPLICA, "a"), ObjectRef(kinds.REPLICA, "b")],
    )
    assert parsing.parse_refs(["md/x", "rep/y", "mds/z"], names_required=True) == (
        [kinds.MODEL_DEPLOYMENT, kinds.REPLICA],
        [
            ObjectRef(kinds.MODEL_DEPLOYMENT, "x"),
            ObjectRef(kinds.REPLICA, "y"),
            ObjectRef(kinds.MODEL_DEPLOYMENT, "z"),
        ],
    )


@pytest.mark.parametrize(
    "args",
    [[], ["md"], ["md/x", "y"], ["md", "a/b"], ["md/"], ["/x"], ["md/a/b"]],
)
def test_bad_refs_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(UsageError):
        parsing.parse_refs(args, names_required=True)


def test_unknown_kind_is_not_found() -> None:
    with pytest.raises(errors.NotFound, match="known types"):
        parsing.parse_refs(["pods", "x"], names_required=True)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("2m", 120),
        ("500ms", 0.5),
        ("1h", 3600),
        ("1m30s", 90),
        ("45", 45),
        ("2.5", 2.5),
        ("0", 0),
        (" 3S ", 3),
        (".5s", 0.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parsing.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1", "1d", "nan", "inf", "5s3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parsing.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("delete", WaitFor(delete=True)),
        ("Delete", WaitFor(delete=True)),
        ("condition=Available", WaitFor(condition="Available", status="True")),
        ("condition=Available=false", WaitFor(condition="Available", status="False")),
        ("condition=Ready=unknown", WaitFor(condition="Ready", status="Unknown")),
    ],
)
def test_wait_for(text: str, expected: WaitFor) -> None:
    assert parsing.parse_wait_for(text) == expected


@pytest.mark.parametrize("text", ["", "ready", "condition", "condition=", "jsonpath=.x"])
def test_bad_wait_for(text: str) -> None:
    with pytest.raises(UsageError):
        parsing.parse_wait_for(text)


def obj(
    *,
    generation: int | None = 2,
    observed: int | None = 2,
    cond_observed: int | None = None,
    status: str = "True",
) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": "Available", "status": status}
    if cond_observed is not None:
        cond["observedGeneration"] = cond_observed
    st: dict[str, Any] = {"conditions": [cond]}
    if observed is not None:
        st["observedGeneration"] = observed
    meta: dict[str, Any] = {"name": "x"}
    if generation is not None:
        meta["generation"] = generation
    return {"metadata": meta, "status": st}


def test_condition_met() -> None:
    assert parsing.condition_met(obj(), condition="available", status="true")
    assert not parsing.condition_met(obj(status="False"), condition="Available", status="True")
    assert parsing.condition_met(obj(status="False"), condition="Available", status="False")
    assert not parsing.condition_met(obj(), condition="Ready", status="True")
    assert not parsing.condition_met({"metadata": {}}, condition="Ready", status="True")


def test_condition_must_reflect_the_current_generation() -> None:
    assert not parsing.condition_met(obj(observed=1), condition="Available", status="True")
    assert not parsing.condition_met(
        obj(observed=2, cond_observed=1), condition="Available", status="True"
    )
    assert parsing.condition_met(
        obj(observed=1, cond_observed=2), condition="Available", status="True"
    )
    assert parsing.condition_met(obj(observed=None), condition="Available", status="True")
    assert parsing.condition_met(obj(generation=None), condition="Available", status="True")
