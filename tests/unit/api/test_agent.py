"""The Agent kind: admission, defaults, and its place in the registry."""

from __future__ import annotations

from typing import Any

import pytest

from aviator.api import admission, errors, kinds
from aviator.api.agent import Agent


def doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "support-bot"},
        "spec": {"owner": "team-support", **spec},
    }


def admit(body: dict[str, Any]) -> dict[str, Any]:
    return admission.admit(body, kind=kinds.AGENT, namespace="support")


def test_defaults() -> None:
    obj = admit(doc())
    assert obj["spec"] == {
        "owner": "team-support",
        "purpose": "",
        "audiences": ["gateway"],
        "budgets": {},
    }
    agent = Agent.from_raw(obj)
    assert agent.spec.budgets.tokens_per_minute is None
    assert agent.namespace == "support" and agent.status.conditions == []


def test_a_full_spec_round_trips() -> None:
    spec = {
        "owner": "alice@example.com",
        "purpose": "summarises support tickets",
        "audiences": ["gateway", "control-api"],
        "budgets": {
            "tokensPerMinute": 20_000,
            "tokensPerDay": 2_000_000,
            "maxConcurrentRequests": 4,
        },
    }
    obj = admit(doc(**spec))
    assert obj["spec"] == spec
    assert Agent.from_raw(obj).to_raw()["spec"] == spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"owner": ""}, "spec.owner"),
        ({"budgets": {"tokensPerMinute": 0}}, "spec.budgets.tokensPerMinute"),
        ({"budgets": {"tokensPerDay": -1}}, "spec.budgets.tokensPerDay"),
        ({"budgets": {"maxConcurrentRequests": 0}}, "spec.budgets.maxConcurrentRequests"),
        ({"budgets": {"requestsPerSecond": 5}}, "spec.budgets.requestsPerSecond"),
        ({"audiences": []}, "spec.audiences"),
        ({"audiences": ["gateway", "gateway"]}, "spec.audiences"),
        ({"audiences": ["two words"]}, "spec.audiences"),
        ({"audiences": [""]}, "spec.audiences"),
        ({"purpose": "x" * 1025}, "spec.purpose"),
        ({"secret": "no"}, "spec.secret"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.Invalid) as info:
        admit(doc(**spec))
    assert field in [c.field for c in info.value.causes]


def test_owner_is_required() -> None:
    body = doc()
    del body["spec"]["owner"]
    with pytest.raises(errors.Invalid) as info:
        admit(body)
    assert info.value.causes[0].field == "spec.owner"


def test_the_registry_knows_agents() -> None:
    for name in ("agent", "agents", "ag", "Agent", "AG"):
        assert kinds.resolve(name) is kinds.AGENT
    assert kinds.by_plural("agents") is kinds.AGENT
    assert kinds.AGENT.namespaced
    assert [c.name for c in kinds.AGENT.columns if c.priority == 0] == ["Owner", "Purpose", "Age"]
