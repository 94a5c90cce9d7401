from datetime import timedelta
from itertools import product
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.api import errors
from aviator.api.principal import ADMIN, Principal
from aviator.policy import engine, grants
from aviator.policy import entities as ent

from .world import NOW, agent, compile_with, ctx, grant_obj, md

BOT = agent("team-a", "bot")
HELPER = agent("team-a", "helper")
STRANGER = agent("team-b", "bot")

REQUESTS = (
    "grant-requests",
    """
@id("auto-small")
@approval("auto")
permit (principal is Agent, action == Action::"requestGrant", resource is Grant)
when {
  resource.agent == principal &&
  ["infer", "embed"].containsAll(resource.actions) &&
  [principal.namespace].containsAll(resource.namespaces) &&
  resource.durationSeconds <= 3600
};

@id("human")
@approval("human")
permit (principal is Agent, action == Action::"requestGrant", resource is Grant)
when { resource.agent == principal };

@id("unannotated")
permit (principal is Agent, action == Action::"requestGrant", resource is Grant)
when { resource.purpose like "*audit*" };

@id("never-policies")
forbid (principal, action == Action::"requestGrant", resource is Grant)
when { resource.kinds.contains("Policy") };

@id("helper-approves-in-team-a")
permit (principal == Agent::"team-a/helper", action == Action::"approve", resource is Grant)
when { resource.namespace == "team-a" };
""",
)


@pytest.fixture
def compiled(policy_engine: engine.PolicyEngine) -> engine.CompiledPolicies:
    return compile_with(policy_engine, REQUESTS)


def pending(name: str = "q3", **kw: Any) -> dict[str, Any]:
    kw.setdefault("agent", "bot")
    kw.setdefault("actions", ["infer"])
    kw.setdefault("resources", ["md/chat"])
    obj = grant_obj("team-a", name, phase=None, **kw)
    obj["status"]["requestedBy"] = BOT.id
    return obj


def test_a_permit_annotated_auto_approves_at_once(compiled: engine.CompiledPolicies) -> None:
    verdict = grants.decide_request(compiled, pending(), requester=BOT)
    assert verdict.phase == "Active"
    assert verdict.reason == 'approved automatically by grant-requests#0 (@id "auto-small")'
    assert verdict.decision.decided_by == ("grant-requests",)


@pytest.mark.parametrize(
    "spec",
    [
        {"actions": ["infer", "delete"]},  # more than inference
        {"resources": ["ns/team-b"]},  # another namespace
        {"duration": 7200},  # too long
    ],
)
def test_permits_without_auto_leave_it_pending(
    compiled: engine.CompiledPolicies, spec: dict[str, Any]
) -> None:
    verdict = grants.decide_request(compiled, pending(**spec), requester=BOT)
    assert verdict.phase == "Pending"
    assert verdict.decision.statements == ("grant-requests#1",)
    assert verdict.reason.endswith("waiting for a human to approve")


def test_no_annotation_means_a_human_decides(compiled: engine.CompiledPolicies) -> None:
    # The helper asks for the bot: only the unannotated statement permits.
    verdict = grants.decide_request(
        compiled, pending(purpose="audit trail", duration=7200), requester=HELPER
    )
    assert verdict.phase == "Pending"
    assert verdict.decision.statements == ("grant-requests#2",)


def test_a_forbid_denies_even_what_would_be_auto_approved(
    compiled: engine.CompiledPolicies,
) -> None:
    verdict = grants.decide_request(
        compiled, pending(actions=["update"], resources=["pol/baseline"]), requester=BOT
    )
    assert verdict.phase == "Denied"
    assert verdict.decision.decided_by == ("grant-requests",)
    assert "never-policies" in verdict.reason


def test_nothing_permits_means_denied(compiled: engine.CompiledPolicies) -> None:
    verdict = grants.decide_request(compiled, pending(agent="helper"), requester=BOT)
    assert verdict.phase == "Denied"
    assert "default deny" in verdict.reason


def test_the_admin_requesting_is_approving(compiled: engine.CompiledPolicies) -> None:
    assert grants.decide_request(compiled, pending(), requester=ADMIN).phase == "Active"


def test_an_agent_can_never_approve_its_own_grant(policy_engine: engine.PolicyEngine) -> None:
    everyone_approves = ("approvers", 'permit (principal, action == Action::"approve", resource);')
    compiled = compile_with(policy_engine, REQUESTS, everyone_approves)
    grant = pending()
    own = grants.may_approve(compiled, BOT, grant)
    assert not own.allowed
    assert own.reason.startswith("the requester can never approve its own grant")
    # ...even when it asked for another agent: the requester is recorded in the status.
    for_helper = pending(agent="helper")
    assert not grants.may_approve(compiled, BOT, for_helper).allowed
    assert not grants.may_approve(compiled, HELPER, for_helper).allowed
    assert grants.may_approve(compiled, STRANGER, grant).allowed


def test_the_admin_may_approve_others_only_by_policy(compiled: engine.CompiledPolicies) -> None:
    grant = pending()
    assert grants.may_approve(compiled, ADMIN, grant).allowed
    helper = grants.may_approve(compiled, HELPER, grant)
    assert helper.allowed and helper.decided_by == ("grant-requests",)
    stranger = grants.may_approve(compiled, STRANGER, grant)
    assert not stranger.allowed and "default deny" in stranger.reason


def test_revoking(compiled: engine.CompiledPolicies) -> None:
    grant = pending(agent="helper")  # requested by the bot for the helper
    assert grants.may_revoke(compiled, HELPER, grant).allowed  # its own: give it up
    withdrawn = grants.may_revoke(compiled, BOT, grant)  # its request: withdraw it
    assert withdrawn.allowed and "withdraw" in withdrawn.reason
    assert grants.may_revoke(compiled, ADMIN, grant).allowed
    assert not grants.may_revoke(compiled, STRANGER, grant).allowed
    # Revoking only takes rights away: the admin may revoke what it granted itself.
    by_admin = pending(agent="helper")
    by_admin["status"]["requestedBy"] = ADMIN.id
    assert grants.may_revoke(compiled, ADMIN, by_admin).allowed
    assert not grants.may_approve(compiled, ADMIN, by_admin).allowed


def test_status_lifecycle() -> None:
    grant = pending(duration=600)
    verdict = grants.GrantVerdict("Pending", engine.Decision(True, ("p",)), "waiting")
    status = grants.requested_status(grant, verdict, requester=BOT, now=NOW)
    assert status.phase == "Pending" and status.requested_by == BOT.id
    assert status.decided_by == "" and status.expires_at is None and status.policies == ["p"]
    grant["status"] = status.model_dump(mode="json", by_alias=True)

    later = NOW + timedelta(minutes=5)
    active = grants.approved_status(grant, approver=ADMIN, now=later)
    assert active.phase == "Active"
    assert active.decided_by == "admin" and active.decided_at == later
    assert active.expires_at == later + timedelta(minutes=10)
    assert active.requested_by == BOT.id

    grant["status"] = active.model_dump(mode="json", by_alias=True)
    with pytest.raises(errors.Conflict, match="only Pending grants can be approved"):
        grants.approved_status(grant, approver=ADMIN, now=later)
    revoked = grants.revoked_status(grant, by=HELPER, now=later + timedelta(minutes=1))
    assert revoked.phase == "Revoked" and revoked.decided_by == HELPER.id

    expired_at = later + timedelta(minutes=10)
    assert grants.phase_at(grant, expired_at) == "Expired"
    with pytest.raises(errors.Conflict, match="is Expired"):
        grants.revoked_status(grant, by=ADMIN, now=expired_at)


def test_automatic_decisions_are_recorded_as_policy(compiled: engine.CompiledPolicies) -> None:
    grant = pending()
    verdict = grants.decide_request(compiled, grant, requester=BOT)
    status = grants.requested_status(grant, verdict, requester=BOT, now=NOW)
    assert status.phase == "Active" and status.decided_by == "policy"
    assert status.expires_at == NOW + timedelta(seconds=900)
    assert status.policies == ["grant-requests"]
    denied = grants.denied_status(pending(), approver=ADMIN, now=NOW, reason="not now")
    assert denied.phase == "Denied" and denied.reason == "not now"


# -- active grants in decisions --------------------------------------------------------------


def test_an_active_grant_permits_exactly_its_actions_and_resources(
    policy_engine: engine.PolicyEngine,
) -> None:
    grant = grant_obj("team-a", "g", agent="bot", actions=["embed"], resources=["ns/team-b"])
    compiled = compile_with(policy_engine, grants=[grant])
    allowed = compiled.decide(BOT, "embed", md("team-b", "chat"), ctx())
    assert allowed.allowed and allowed.decided_by == ("grant:team-a/g",)
    assert allowed.reason == "permitted by grant:team-a/g"
    assert not compiled.decide(BOT, "infer", md("team-b", "chat"), ctx()).allowed
    assert not compiled.decide(BOT, "embed", md("team-a", "chat"), ctx()).allowed
    assert not compiled.decide(HELPER, "embed", md("team-b", "chat"), ctx()).allowed
    assert not compiled.decide(BOT, "update", md("team-b", "chat")).allowed


def test_a_write_grant_covers_new_objects_in_its_namespace(
    policy_engine: engine.PolicyEngine,
) -> None:
    grant = grant_obj("team-a", "g", agent="bot", actions=["create"], resources=["ns/team-a"])
    compiled = compile_with(policy_engine, grants=[grant])
    new = ent.deployment_entity(
        {"metadata": {"namespace": "team-a", "name": "fresh"}, "spec": {"model": {"name": "m"}}}
    )
    assert compiled.decide(BOT, "create", new).decided_by == ("grant:team-a/g",)
    assert not compiled.decide(BOT, "delete", new).allowed


def test_an_expired_grant_no_longer_compiles_in(policy_engine: engine.PolicyEngine) -> None:
    grant = grant_obj("team-a", "g", agent="bot", actions=["infer"], resources=["md/chat"],
                      expires="2026-11-27T12:15:00Z")  # fmt: skip
    before = policy_engine.compile([], now=NOW, grants=[grant])
    assert before.active_grants == ("team-a/g",)
    assert before.valid_until == NOW + timedelta(minutes=15)
    at_expiry = NOW + timedelta(minutes=15)
    assert grants.phase_at(grant, at_expiry) == "Expired"
    after = policy_engine.compile([], now=at_expiry, grants=[grant])
    assert after.active_grants == () and after.valid_until is None
    assert not after.decide(BOT, "infer", md("team-a", "chat"), ctx()).allowed


@pytest.mark.parametrize("phase", ["Pending", "Denied", "Revoked", "Expired"])
def test_only_active_grants_compile_in(policy_engine: engine.PolicyEngine, phase: str) -> None:
    grant = grant_obj("team-a", "g", agent="bot", actions=["infer"], resources=["md/chat"],
                      phase=phase)  # fmt: skip
    assert policy_engine.compile([], now=NOW, grants=[grant]).active_grants == ()


def test_an_uncompilable_grant_is_left_out_and_reported(
    policy_engine: engine.PolicyEngine,
) -> None:
    good = grant_obj("team-a", "good", agent="bot", actions=["infer"], resources=["md/chat"])
    bad = grant_obj("team-a", "bad", agent="bot", actions=["infer"], resources=["md/chat"])
    bad["spec"]["resources"] = ["not a reference"]
    compiled = policy_engine.compile([], now=NOW, grants=[good, bad])
    assert compiled.active_grants == ("team-a/good",)
    assert compiled.problems and compiled.problems[0].startswith("grant team-a/bad:")


# -- declared intent ------------------------------------------------------------------------


@pytest.fixture
def with_grants(policy_engine: engine.PolicyEngine) -> engine.CompiledPolicies:
    standing = ("standing", 'permit (principal, action in Action::"inference", resource);')
    report = grant_obj("team-a", "report", agent="bot", actions=["infer"],
                       resources=["md/chat"], purpose="quarterly report")  # fmt: skip
    embed = grant_obj("team-a", "index", agent="bot", actions=["embed"],
                      resources=["ns/team-b"], purpose="build the index")  # fmt: skip
    return compile_with(policy_engine, standing, grants=[report, embed])


def test_naming_a_grant_scopes_the_request_to_it(with_grants: engine.CompiledPolicies) -> None:
    inside = with_grants.decide(BOT, "infer", md("team-a", "chat"), ctx(grant="report"))
    assert inside.allowed and "grant:team-a/report" in inside.decided_by
    outside = with_grants.decide(BOT, "infer", md("team-b", "chat"), ctx(grant="report"))
    assert not outside.allowed
    assert outside.reason.startswith("outside the declared intent")
    # Without the declaration the standing policy allows it.
    assert with_grants.decide(BOT, "infer", md("team-b", "chat"), ctx()).allowed


def test_naming_an_inactive_or_foreign_grant_denies(
    with_grants: engine.CompiledPolicies,
) -> None:
    unknown = with_grants.decide(BOT, "infer", md("team-a", "chat"), ctx(grant="nope"))
    assert (
        not unknown.allowed and "'team-a/nope' named by the request is not active" in unknown.reason
    )
    # Another agent naming the bot's grant: the grant does not permit it.
    helper = with_grants.decide(HELPER, "infer", md("team-a", "chat"), ctx(grant="team-a/report"))
    assert not helper.allowed and helper.reason.startswith("outside the declared intent")


def test_a_purpose_of_a_grant_scopes_like_its_name(with_grants: engine.CompiledPolicies) -> None:
    assert with_grants.decide(
        BOT, "embed", md("team-b", "chat"), ctx(intent="build the index")
    ).allowed
    refused = with_grants.decide(BOT, "infer", md("team-a", "chat"), ctx(intent="build the index"))
    assert not refused.allowed and "team-a/index" in refused.reason
    # A purpose no grant declares is only context for policies.
    assert with_grants.decide(BOT, "infer", md("team-b", "chat"), ctx(intent="chatting")).allowed


def test_the_intent_header_names_a_grant_in_any_phase(
    policy_engine: engine.PolicyEngine,
) -> None:
    standing = ("standing", 'permit (principal, action in Action::"inference", resource);')
    revoked = grant_obj("team-a", "old", agent="bot", actions=["infer"], resources=["md/chat"],
                        phase="Revoked")  # fmt: skip
    compiled = compile_with(policy_engine, standing, grants=[revoked])
    assert compiled.declared_intent(BOT, "old") == {"intent": "", "grant": "team-a/old"}
    assert compiled.declared_intent(BOT, " team-a/old ") == {"intent": "", "grant": "team-a/old"}
    assert compiled.declared_intent(BOT, "triage") == {"intent": "triage", "grant": ""}
    assert compiled.declared_intent(STRANGER, "old") == {"intent": "old", "grant": ""}
    # A request naming its revoked grant is refused, though standing policy would allow it.
    decision = compiled.decide(
        BOT, "infer", md("team-a", "chat"), ctx(**compiled.declared_intent(BOT, "old"))
    )
    assert not decision.allowed and "not active" in decision.reason


# -- property: grants allow exactly what they grant -----------------------------------------

AGENT_NAMES = ("a0", "a1", "a2")
DEPLOYMENT_NAMES = ("d0", "d1", "d2")
ACTIONS = ("infer", "embed")

grant_specs = st.lists(
    st.tuples(
        st.sampled_from(AGENT_NAMES),
        st.sets(st.sampled_from(ACTIONS), min_size=1),
        st.sets(st.sampled_from(DEPLOYMENT_NAMES), min_size=1),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=grant_specs)
def test_decide_allows_exactly_the_granted_triples(
    policy_engine: engine.PolicyEngine, specs: list[tuple[str, set[str], set[str]]]
) -> None:
    objects = [
        grant_obj(
            "p",
            f"g{i}",
            agent=name,
            actions=sorted(actions),
            resources=[f"md/{d}" for d in sorted(deployments)],
        )
        for i, (name, actions, deployments) in enumerate(specs)
    ]
    granted: dict[tuple[str, str, str], set[str]] = {}
    for i, (name, actions, deployments) in enumerate(specs):
        for action, deployment in product(actions, deployments):
            granted.setdefault((name, action, deployment), set()).add(f"grant:p/g{i}")
    compiled = policy_engine.compile(
        [
            (
                "noise",
                'forbid (principal, action in Action::"inference", resource)\n'
                "when { context.hour == 3 };\n"
                'permit (principal in Namespace::"elsewhere", action, resource);',
            ),
        ],
        now=NOW,
        grants=objects,
        agents=[{"metadata": {"namespace": "p", "name": a}, "spec": {}} for a in AGENT_NAMES],
        deployments=[
            {"metadata": {"namespace": "p", "name": d}, "spec": {"model": {"name": "m"}}}
            for d in DEPLOYMENT_NAMES
        ],
    )
    for name, action, deployment in product(AGENT_NAMES, ACTIONS, DEPLOYMENT_NAMES):
        who = Principal(kind="agent", id=f"spiffe://t/ns/p/agent/{name}", namespace="p", name=name)
        decision = compiled.decide(who, action, md("p", deployment), ctx(model="m"))
        expected = granted.get((name, action, deployment))
        assert decision.allowed == bool(expected), (name, action, deployment)
        if expected:
            assert set(decision.decided_by) == expected
