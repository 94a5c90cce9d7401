"""Which agent a token names: the plane's SPIFFE IDs and templates for external issuers."""

from __future__ import annotations

import pytest

from aviator.api.principal import spiffe_id
from aviator.identity.subjects import SpiffeSubjects, SubjectTemplate, parse_agent_id


def test_spiffe_ids_round_trip() -> None:
    for ns, name in (("default", "bot"), ("team-a", "summarizer.v2"), ("a" * 63, "b" * 200)):
        assert parse_agent_id(
            spiffe_id("aviator.local", ns, name), trust_domain="aviator.local"
        ) == (
            ns,
            name,
        )


@pytest.mark.parametrize(
    "value",
    [
        "spiffe://aviator.local/ns/default/agent/bot?x=1",
        "spiffe://aviator.local/ns/default/agent/bot#f",
        "spiffe://aviator.local:443/ns/default/agent/bot",
        "spiffe://user@aviator.local/ns/default/agent/bot",
        "spiffe://aviator.local.evil/ns/default/agent/bot",
        "SPIFFE://aviator.local/ns/default/agent/bot",
        "spiffe://aviator.local/ns/default/agent/Bot",
        "spiffe://aviator.local/ns/de.fault/agent/bot",
        "spiffe://aviator.local/ns/default/agent/-bot",
        "spiffe://aviator.local/ns/default/agent/bot/../admin",
    ],
)
def test_not_our_agents(value: str) -> None:
    assert parse_agent_id(value, trust_domain="aviator.local") is None
    assert SpiffeSubjects("aviator.local").agent({"sub": value}) is None


def test_kubernetes_service_account_template() -> None:
    mapping = SubjectTemplate.compile(
        claim="sub", template="system:serviceaccount:{namespace}:{name}"
    )
    assert mapping.agent({"sub": "system:serviceaccount:team-a:summarizer"}) == (
        "team-a",
        "summarizer",
    )
    for bad in (
        "system:serviceaccount:team-a",
        "system:serviceaccount:Team:bot",
        "system:serviceaccount:team-a:bot:extra",
        "xsystem:serviceaccount:team-a:bot",
        "system.serviceaccount:team-a:bot",  # the template's ':' and '.' are literal
    ):
        assert mapping.agent({"sub": bad}) is None, bad
    assert mapping.agent({}) is None
    assert mapping.agent({"sub": 5}) is None


def test_a_claim_with_a_fixed_namespace() -> None:
    mapping = SubjectTemplate.compile(claim="azp", template="agent-{name}", namespace="agents")
    assert mapping.agent({"azp": "agent-billing", "sub": "ignored"}) == ("agents", "billing")
    assert mapping.agent({"sub": "agent-billing"}) is None


@pytest.mark.parametrize(
    ("template", "namespace", "message"),
    [
        ("{namespace}", None, "{name} once"),
        ("{name}:{name}", None, "{name} once"),
        ("{name}", None, "set the issuer's namespace"),
        ("{name}", "Not_A_Label", "namespace"),
        ("{namespace}/{name}", "default", "do not also set"),
    ],
)
def test_bad_templates_are_refused(template: str, namespace: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        SubjectTemplate.compile(claim="sub", template=template, namespace=namespace)
