from datetime import timedelta

import pytest

from aviator.api.principal import ADMIN, ANONYMOUS, Principal
from aviator.policy import engine, validation
from aviator.policy import entities as ent

from .world import AGENTS, DEPLOYMENTS, NOW, agent, compile_with, ctx, grant_obj, md, md_obj

BOT = agent("team-a", "bot")
HELPER = agent("team-a", "helper")
OTHER = agent("team-b", "bot")

SAME_NAMESPACE = (
    "same-namespace",
    """
@id("own-namespace")
permit (principal is Agent, action in Action::"inference", resource is ModelDeployment)
when { resource.namespace == principal.namespace };
""",
)
LIMITS = (
    "limits",
    """
@id("token-ceiling")
forbid (principal, action in Action::"inference", resource)
when { context.estimatedTokens > 8000 };

@id("night")
forbid (principal, action == Action::"infer", resource)
when { context.hour >= 22 || context.hour < 6 };

forbid (principal is Agent, action in Action::"inference", resource is ModelDeployment)
when { resource.priority == "critical" && context.intent == "" };
""",
)


@pytest.fixture
def compiled(policy_engine: engine.PolicyEngine) -> engine.CompiledPolicies:
    return compile_with(policy_engine, SAME_NAMESPACE, LIMITS)


def test_permit_names_the_policy_that_allowed(compiled: engine.CompiledPolicies) -> None:
    decision = compiled.decide(BOT, "infer", md("team-a", "chat"), ctx())
    assert decision.allowed and not decision.no_decision
    assert decision.decided_by == ("same-namespace",)
    assert decision.statements == ("same-namespace#0",)
    assert decision.reason == 'permitted by same-namespace#0 (@id "own-namespace")'


def test_default_deny(compiled: engine.CompiledPolicies) -> None:
    decision = compiled.decide(BOT, "infer", md("team-b", "chat"), ctx())
    assert not decision.allowed and not decision.no_decision
    assert decision.decided_by == ()
    assert "default deny" in decision.reason
    assert 'ModelDeployment::"team-b/chat"' in decision.reason


def test_nothing_compiled_denies_everyone_but_the_admin(
    policy_engine: engine.PolicyEngine,
) -> None:
    empty = compile_with(policy_engine)
    assert not empty.decide(BOT, "infer", md("team-a", "chat"), ctx()).allowed
    assert empty.decide(ADMIN, "delete", ent.EntityUid("Policy", "x")).allowed


@pytest.mark.parametrize(
    ("overrides", "forbid"),
    [
        ({"estimatedTokens": 8001}, "limits#0"),
        ({"hour": 23}, "limits#1"),
        ({"hour": 5}, "limits#1"),
    ],
)
def test_forbid_on_a_context_field_overrides_the_permit(
    compiled: engine.CompiledPolicies, overrides: dict[str, int], forbid: str
) -> None:
    decision = compiled.decide(BOT, "infer", md("team-a", "chat"), ctx(**overrides))
    assert not decision.allowed
    assert decision.statements == (forbid,)
    assert decision.decided_by == ("limits",)
    assert decision.reason.startswith("forbidden by limits#")


def test_context_conditions_are_field_level(compiled: engine.CompiledPolicies) -> None:
    deployment = md("team-a", "chat")
    assert compiled.decide(BOT, "infer", deployment, ctx(estimatedTokens=8000)).allowed
    assert compiled.decide(BOT, "infer", deployment, ctx(hour=6)).allowed
    assert compiled.decide(BOT, "embed", deployment, ctx(hour=23)).allowed  # night is infer only
    critical = md("team-a", "big")
    assert not compiled.decide(BOT, "infer", critical, ctx()).allowed
    assert compiled.decide(BOT, "infer", critical, ctx(intent="incident 42")).allowed


def test_several_deciding_statements_are_all_named(compiled: engine.CompiledPolicies) -> None:
    decision = compiled.decide(
        BOT, "infer", md("team-a", "big"), ctx(hour=23, estimatedTokens=9000)
    )
    assert decision.statements == ("limits#0", "limits#1", "limits#2")
    assert decision.decided_by == ("limits",)


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        (ctx(estimatedTokens="100"), "context.estimatedTokens must be a Long"),
        (ctx(estimatedTokens=True), "context.estimatedTokens must be a Long"),
        (ctx(model=7), "context.model must be a String"),
        (ctx(hour=24), "context.hour must be 0-23"),
        ({k: v for k, v in ctx().items() if k != "intent"}, "context is missing intent"),
        (ctx(extra="x"), "unknown attributes extra"),
        (None, "requires a context"),
    ],
)
def test_a_context_violating_the_schema_is_no_decision_and_deny(
    compiled: engine.CompiledPolicies, context: dict[str, object] | None, problem: str
) -> None:
    decision = compiled.decide(BOT, "infer", md("team-a", "chat"), context)
    assert not decision.allowed
    assert decision.no_decision
    assert decision.reason.startswith("no decision (counts as deny): ")
    assert problem in decision.reason


def test_writes_take_no_context(compiled: engine.CompiledPolicies) -> None:
    decision = compiled.decide(BOT, "update", md("team-a", "chat"), {"hour": 1})
    assert decision.no_decision and not decision.allowed


def test_unknown_action_is_no_decision(compiled: engine.CompiledPolicies) -> None:
    decision = compiled.decide(BOT, "fly", md("team-a", "chat"))
    assert decision.no_decision and "unknown action 'fly'" in decision.reason


def test_cedar_no_decision_is_deny_and_reported(
    compiled: engine.CompiledPolicies, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = {"decision": "NoDecision", "diagnostics": {"reason": [], "errors": ["boom"]}}
    monkeypatch.setattr(engine, "_authorize", lambda *_: answer)
    decision = compiled.decide(BOT, "infer", md("team-a", "chat"), ctx())
    assert not decision.allowed and decision.no_decision
    assert decision.reason == "no decision (counts as deny): boom"
    assert decision.errors == ("boom",)


def test_a_statement_that_errors_is_skipped_and_reported(
    policy_engine: engine.PolicyEngine,
) -> None:
    # `principal.owner` on an Agent missing from the graph errors; Cedar skips that statement.
    compiled = compile_with(
        policy_engine,
        ("owners", 'permit (principal is Agent, action == Action::"infer", resource)\n'
                   'when { principal.owner == "alice" };'),
    )  # fmt: skip
    assert compiled.decide(BOT, "infer", md("team-a", "chat"), ctx()).allowed
    ghost = compiled.decide(agent("team-a", "ghost"), "infer", md("team-a", "chat"), ctx())
    assert not ghost.allowed
    assert "1 statement(s) failed to evaluate" in ghost.reason
    assert "ghost" in ghost.errors[0]


def test_the_admin_is_not_subject_to_policy(policy_engine: engine.PolicyEngine) -> None:
    compiled = compile_with(policy_engine, ("deny-all", "forbid (principal, action, resource);"))
    decision = compiled.decide(ADMIN, "delete", ent.EntityUid("Policy", "deny-all"))
    assert decision.allowed
    assert decision.reason == "the administrator is not subject to policy"
    assert compiled.decide(ent.ADMIN_UID, "infer", md("team-a", "chat"), ctx()).allowed
    assert not compiled.decide(BOT, "infer", md("team-a", "chat"), ctx()).allowed


def test_api_keys_and_anonymous_callers_are_principals_too(
    policy_engine: engine.PolicyEngine,
) -> None:
    compiled = compile_with(
        policy_engine,
        ("keys", 'permit (principal == ApiKey::"ab12", action == Action::"infer", resource);'),
    )
    key = Principal(kind="apikey", id="apikey:ab12")
    assert compiled.decide(key, "infer", md("team-a", "chat"), ctx()).allowed
    assert not compiled.decide(ANONYMOUS, "infer", md("team-a", "chat"), ctx()).allowed


def test_write_decides_on_the_object_as_it_would_be_stored(
    policy_engine: engine.PolicyEngine,
) -> None:
    compiled = compile_with(
        policy_engine,
        ("tune", 'permit (principal is Agent, action == Action::"update", resource is ModelDeployment)\n'
                 'when { resource.namespace == principal.namespace && resource.priority != "critical" };'),
    )  # fmt: skip
    calm = ent.deployment_entity(md_obj("team-a", "chat", priority="sheddable"))
    loud = ent.deployment_entity(md_obj("team-a", "chat", priority="critical"))
    assert compiled.decide(BOT, "update", calm).allowed
    assert not compiled.decide(BOT, "update", loud).allowed
    assert not compiled.decide(OTHER, "update", calm).allowed
    # The overlay is for one decision only: the graph still has the stored deployment.
    assert compiled.index[md("team-a", "chat")].attrs["priority"] == "standard"


def test_a_new_object_is_in_its_namespace(policy_engine: engine.PolicyEngine) -> None:
    compiled = compile_with(
        policy_engine,
        ("create", 'permit (principal in Namespace::"team-a", action == Action::"create",\n'
                   '        resource in Namespace::"team-a");'),
    )  # fmt: skip
    new = ent.deployment_entity(md_obj("team-a", "brand-new"))
    assert compiled.decide(BOT, "create", new).allowed
    elsewhere = ent.deployment_entity(md_obj("team-c", "brand-new"))
    assert not compiled.decide(BOT, "create", elsewhere).allowed


def test_action_groups(policy_engine: engine.PolicyEngine) -> None:
    compiled = compile_with(
        policy_engine, ("writer", 'permit (principal, action in Action::"write", resource);')
    )
    deployment = md("team-a", "chat")
    for action in ("create", "update", "delete"):
        assert compiled.decide(BOT, action, deployment).allowed
    assert not compiled.decide(BOT, "infer", deployment, ctx()).allowed
    assert not compiled.decide(BOT, "approve", ent.EntityUid("Grant", "team-a/g")).allowed


def test_statements_for_one_principal_apply_to_that_principal_only(
    policy_engine: engine.PolicyEngine,
) -> None:
    compiled = compile_with(
        policy_engine,
        ("bot-only", 'permit (principal == Agent::"team-a/bot", action == Action::"infer", resource);\n'
                     'forbid (principal == Agent::"team-a/helper", action, resource);'),
        SAME_NAMESPACE,
    )  # fmt: skip
    deployment = md("team-b", "chat")
    assert compiled.decide(BOT, "infer", deployment, ctx()).allowed
    assert not compiled.decide(HELPER, "infer", deployment, ctx()).allowed
    own = compiled.decide(HELPER, "infer", md("team-a", "chat"), ctx())
    assert not own.allowed and own.statements == ("bot-only#1",)


def test_public_cedarpy_path_gives_the_same_answers(
    policy_engine: engine.PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        (BOT, "infer", md("team-a", "chat"), ctx()),
        (BOT, "infer", md("team-a", "chat"), ctx(hour=23, estimatedTokens=9000)),
        (BOT, "infer", md("team-b", "chat"), ctx()),
    ]
    direct = [compile_with(policy_engine, SAME_NAMESPACE, LIMITS).decide(*c) for c in cases]
    monkeypatch.setattr(engine, "_RAW_AUTHORIZE", None)
    # A fresh compiled set each time: nothing remembered from the direct path.
    public = [compile_with(policy_engine, SAME_NAMESPACE, LIMITS).decide(*c) for c in cases]
    assert public == direct


def test_compile_refuses_a_broken_policy_naming_it(policy_engine: engine.PolicyEngine) -> None:
    with pytest.raises(engine.CompileError) as info:
        compile_with(
            policy_engine,
            SAME_NAMESPACE,
            ("syntax", "permit (principal, action, resource) when { 1 + };"),
            ("types", 'permit (principal, action == Action::"infer", resource)\n'
                      'when { context.hour == "noon" };'),
        )  # fmt: skip
    names = [name for name, _ in info.value.problems]
    assert names == ["syntax", "types"]
    assert "unexpected token" in info.value.problems[0][1]
    assert "Long and String" in info.value.problems[1][1]


def test_compile_refuses_duplicate_names(policy_engine: engine.PolicyEngine) -> None:
    with pytest.raises(engine.CompileError, match="duplicate Policy name"):
        compile_with(policy_engine, SAME_NAMESPACE, SAME_NAMESPACE)


def test_compiled_handle_describes_itself(policy_engine: engine.PolicyEngine) -> None:
    grant = grant_obj("team-a", "g", agent="bot", actions=["infer"], resources=["ns/team-b"])
    compiled = compile_with(policy_engine, SAME_NAMESPACE, LIMITS, grants=[grant])
    assert compiled.policy_names == ("same-namespace", "limits")
    assert compiled.active_grants == ("team-a/g",)
    assert compiled.valid_until == NOW + timedelta(minutes=15)
    assert list(compiled.statements) == [
        "same-namespace#0",
        "limits#0",
        "limits#1",
        "limits#2",
        "grant:team-a/g",
    ]
    assert compiled.annotations("same-namespace#0") == {"id": "own-namespace"}
    assert len(compiled.index) == len(AGENTS) + len(DEPLOYMENTS) + 2  # and two namespaces


def test_recompiling_reuses_what_did_not_change(policy_engine: engine.PolicyEngine) -> None:
    first = compile_with(policy_engine, SAME_NAMESPACE, LIMITS)
    second = compile_with(policy_engine, SAME_NAMESPACE, LIMITS)
    assert second is not first
    assert second.entities is first.entities
    # White-box: the sliced policy set is the engine's, parsed once.
    request = ("infer", ent.principal_uid(BOT), md("team-a", "chat"), ())
    assert second._policy_set(*request)[0] is first._policy_set(*request)[0]


def test_grant_policy_text() -> None:
    grant = grant_obj("team-a", "q3", agent="bot", actions=["infer", "embed"],
                      resources=["md/chat", "ns/team-b"])  # fmt: skip
    assert engine.grant_policy(grant) == (
        '@id("grant:team-a/q3")\n'
        '@grant("team-a/q3")\n'
        "permit (\n"
        '  principal == Agent::"team-a/bot",\n'
        '  action in [Action::"embed", Action::"infer"],\n'
        "  resource\n"
        ') when { resource in ModelDeployment::"team-a/chat" || resource in Namespace::"team-b" };\n'
    )


def test_grant_policies_validate_against_the_schema() -> None:
    grant = grant_obj("team-a", "w", agent="bot", actions=["create", "update", "delete"],
                      resources=["md/chat", "ns/team-b", "node/gpu-1", "rep/chat-1", "pol/x"])  # fmt: skip
    assert validation.policy_problems(engine.grant_policy(grant)) == []


def test_inference_context_hour_is_utc() -> None:
    from datetime import timezone

    local = NOW.astimezone(timezone(timedelta(hours=9)))
    assert engine.inference_context(model="m", estimated_tokens=1, priority="standard",
                                    now=local)["hour"] == 12  # fmt: skip
