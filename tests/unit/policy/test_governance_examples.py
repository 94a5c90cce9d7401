"""The shipped baseline (examples/governance.yaml) does what docs/governance.md says it does."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from aviator.api import admission, kinds
from aviator.api.principal import ADMIN
from aviator.policy import engine, grants, validation
from aviator.policy import entities as ent

from .world import NOW, agent, compile_with, ctx, grant_obj, md, md_obj

ROOT = Path(__file__).parents[3]
BOT = agent("team-a", "bot")

OPS = (
    "ops-agents-manage-everything",
    'permit (principal is Agent, action in Action::"write", resource)\n'
    'when { principal.owner == "alice" };',
)
"""A too-broad grant of write rights some operator might add: the baseline must still hold."""

WIDENING = """\
permit (principal == Agent::"team-a/bot", action, resource);
"""


def baseline_documents() -> list[dict[str, Any]]:
    text = (ROOT / "examples" / "governance.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d is not None]


def baseline() -> list[tuple[str, str]]:
    return [(d["metadata"]["name"], d["spec"]["cedar"]) for d in baseline_documents()]


@pytest.fixture
def compiled(policy_engine: engine.PolicyEngine) -> engine.CompiledPolicies:
    return compile_with(policy_engine, *baseline())


def test_the_examples_are_admitted_and_validate() -> None:
    documents = baseline_documents()
    assert [d["kind"] for d in documents] == ["Policy"] * 5
    for document in documents:
        obj = admission.admit(document, kind=kinds.POLICY, namespace=None)
        assert [c for check in validation.CHECKS for c in check(kinds.POLICY, obj)] == []


def test_an_agent_cannot_apply_a_policy_that_widens_its_own_rights(
    policy_engine: engine.PolicyEngine,
) -> None:
    compiled = compile_with(policy_engine, *baseline(), OPS)
    widening = ent.policy_entity({"metadata": {"name": "bot-may-do-anything"},
                                  "spec": {"cedar": WIDENING}})  # fmt: skip
    for action in ("create", "update", "delete"):
        decision = compiled.decide(BOT, action, widening)
        assert not decision.allowed
        assert decision.decided_by == ("governance-is-admin-only",)
        assert "no-agent-policy-writes" in decision.reason
    # The same over-broad rule does let it write what the baseline leaves to policy...
    assert compiled.decide(BOT, "update", ent.deployment_entity(md_obj("team-a", "x"))).allowed
    # ...and the admin may apply the widening policy.
    assert compiled.decide(ADMIN, "create", widening).allowed


def test_without_the_baseline_forbid_the_same_write_is_allowed(
    policy_engine: engine.PolicyEngine,
) -> None:
    # Refusal comes from policy, not from a rule hidden in the engine.
    compiled = compile_with(policy_engine, OPS)
    assert compiled.decide(BOT, "create", ent.EntityUid("Policy", "bot-may-do-anything")).allowed


def test_agents_cannot_rewrite_their_grants_or_agents(compiled: engine.CompiledPolicies) -> None:
    grant = ent.grant_entity(
        grant_obj("team-a", "g", agent="bot", actions=["infer"], resources=["ns/team-b"])
    )
    assert not compiled.decide(BOT, "update", grant).allowed
    assert not compiled.decide(BOT, "update", ent.EntityUid("Agent", "team-a/bot")).allowed


def test_inference_rules(compiled: engine.CompiledPolicies) -> None:
    own = md("team-a", "chat")
    assert compiled.decide(BOT, "infer", own, ctx()).decided_by == ("agents-use-their-namespace",)
    assert not compiled.decide(BOT, "infer", md("team-b", "chat"), ctx()).allowed
    ceiling = compiled.decide(BOT, "infer", own, ctx(estimatedTokens=40_000))
    assert not ceiling.allowed and "token-ceiling" in ceiling.reason
    assert not compiled.decide(BOT, "infer", own, ctx(model="gpt-9")).allowed
    critical = md("team-a", "big")
    assert not compiled.decide(BOT, "infer", critical, ctx(model="llama-70b")).allowed
    assert compiled.decide(BOT, "infer", critical, ctx(model="llama-70b", intent="oncall")).allowed


def test_agents_tune_only_non_critical_deployments_of_their_namespace(
    compiled: engine.CompiledPolicies,
) -> None:
    assert compiled.decide(BOT, "update", ent.deployment_entity(md_obj("team-a", "chat"))).allowed
    assert not compiled.decide(
        BOT, "update", ent.deployment_entity(md_obj("team-a", "chat", priority="critical"))
    ).allowed
    assert not compiled.decide(
        BOT, "update", ent.deployment_entity(md_obj("team-b", "chat"))
    ).allowed
    assert not compiled.decide(BOT, "delete", md("team-a", "chat")).allowed


@pytest.mark.parametrize(
    ("spec", "phase"),
    [
        ({"actions": ["infer"], "resources": ["md/chat"]}, "Active"),
        ({"actions": ["infer"], "resources": ["md/chat"], "duration": 7200}, "Pending"),
        ({"actions": ["infer"], "resources": ["ns/team-b"]}, "Pending"),
        ({"actions": ["delete"], "resources": ["md/chat"]}, "Pending"),
        ({"actions": ["update"], "resources": ["pol/baseline"]}, "Denied"),
        ({"actions": ["update"], "resources": ["agent/bot"]}, "Denied"),
        ({"actions": ["infer"], "resources": ["md/chat"], "agent": "helper"}, "Denied"),
    ],
)
def test_grant_requests(
    compiled: engine.CompiledPolicies, spec: dict[str, Any], phase: str
) -> None:
    spec = {"agent": "bot", **spec}
    request = grant_obj("team-a", "g", phase=None, **spec)
    assert grants.decide_request(compiled, request, requester=BOT).phase == phase


def test_only_the_admin_approves_under_the_baseline(compiled: engine.CompiledPolicies) -> None:
    request = grant_obj("team-a", "g", agent="bot", actions=["delete"], resources=["md/chat"],
                        phase=None)  # fmt: skip
    assert not grants.may_approve(compiled, BOT, request).allowed
    assert not grants.may_approve(compiled, agent("team-a", "helper"), request).allowed
    assert grants.may_approve(compiled, ADMIN, request).allowed
    approved = grants.approved_status(request, approver=ADMIN, now=NOW)
    assert approved.phase == "Active"
