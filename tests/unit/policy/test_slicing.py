"""A request evaluates only the statements whose scope can match it, and that changes nothing."""

import json

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.api.principal import Principal
from aviator.policy import engine
from aviator.policy import entities as ent

from .world import agent, compile_with, ctx, grant_obj, md, md_obj

SCOPED = (
    "scoped",
    """
permit (principal in Namespace::"team-a", action in Action::"inference", resource in Namespace::"team-a");
permit (principal in Namespace::"team-b", action == Action::"infer", resource);
forbid (principal, action == Action::"embed", resource == ModelDeployment::"team-a/big");
forbid (principal is Agent, action in Action::"write", resource is Policy);
permit (principal == Agent::"team-a/helper", action, resource is ModelDeployment in Namespace::"team-b");
forbid (principal, action, resource) when { resource has priority && resource.priority == "banned" };
permit (principal, action in Action::"inference", resource) when { context.hour == 0 };
""",
)


@pytest.fixture
def compiled(policy_engine: engine.PolicyEngine) -> engine.CompiledPolicies:
    grant = grant_obj("team-a", "g", agent="bot", actions=["embed"], resources=["ns/team-b"])
    return compile_with(policy_engine, SCOPED, grants=[grant])


def slice_of(
    compiled: engine.CompiledPolicies, who: Principal, action: str, what: ent.EntityUid | ent.Entity
) -> list[int | str]:
    ids = compiled.statements_for(who, action, what)
    return [int(i.split("#")[1]) if i.startswith("scoped#") else i for i in ids]


def test_slices_follow_the_scopes(compiled: engine.CompiledPolicies) -> None:
    bot, helper, other = agent("team-a", "bot"), agent("team-a", "helper"), agent("team-b", "bot")
    assert slice_of(compiled, bot, "infer", md("team-a", "chat")) == [0, 5, 6]
    assert slice_of(compiled, bot, "embed", md("team-a", "big")) == [0, 2, 5, 6, "grant:team-a/g"]
    assert slice_of(compiled, bot, "embed", md("team-b", "chat")) == [5, 6, "grant:team-a/g"]
    assert slice_of(compiled, other, "infer", md("team-a", "chat")) == [1, 5, 6]
    assert slice_of(compiled, helper, "update", md("team-b", "chat")) == [4, 5]
    assert slice_of(compiled, helper, "update", md("team-a", "chat")) == [5]
    assert slice_of(compiled, bot, "create", ent.EntityUid("Policy", "p")) == [3, 5]
    # A new object's parents come from the overlay.
    fresh = ent.deployment_entity(md_obj("team-a", "fresh"))
    assert slice_of(compiled, bot, "infer", fresh) == [0, 5, 6]


def test_unknown_principals_get_only_unscoped_statements(compiled: engine.CompiledPolicies) -> None:
    key = Principal(kind="apikey", id="apikey:k")
    assert slice_of(compiled, key, "infer", md("team-a", "chat")) == [5, 6]


AGENTS = [agent(ns, n) for ns in ("team-a", "team-b") for n in ("bot", "helper")]
TARGETS = [md(ns, n) for ns in ("team-a", "team-b") for n in ("chat", "big")] + [
    ent.EntityUid("Policy", "p")
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    who=st.sampled_from(AGENTS),
    action=st.sampled_from(["infer", "embed", "update", "create"]),
    target=st.sampled_from(TARGETS),
    hour=st.integers(0, 23),
)
def test_slicing_decides_as_the_whole_set_would(
    compiled: engine.CompiledPolicies, who: Principal, action: str, target: ent.EntityUid, hour: int
) -> None:
    context = ctx(hour=hour) if action in ("infer", "embed") else None
    if context is not None and target.type != "ModelDeployment":
        return
    sliced = compiled.decide(who, action, target, context)
    whole = cedarpy.PolicySet.from_str("".join(s.text for s in compiled.statements.values()))
    request = {
        "principal": ent.principal_uid(who).to_json(),
        "action": {"type": "Action", "id": action},
        "resource": target.to_json(),
        "context": context,
    }
    full = cedarpy.is_authorized(request, whole, compiled.entities)
    assert sliced.allowed == full.allowed
    assert set(sliced.statements) == set(full.diagnostics.id_annotations_by_reason.values())


@pytest.mark.parametrize(
    ("condition", "reads"),
    [
        ("context.hour < 3", {"hour"}),
        ('context has intent && context["model"] like "a*"', {"intent", "model"}),
        ("principal.owner == resource.model", set()),
        ('context == {"hour": 1}', None),
        ("[context].contains(context)", None),
    ],
)
def test_the_context_attributes_a_statement_reads(condition: str, reads: set[str] | None) -> None:
    est = json.loads(
        cedarpy.policies_to_json_str(
            f"permit (principal, action, resource) when {{ {condition} }};"
        )
    )
    found = engine._context_reads(est["staticPolicies"]["policy0"]["conditions"])
    assert found == (None if reads is None else frozenset(reads))


def test_cedar_gets_only_the_context_its_slice_reads(
    compiled: engine.CompiledPolicies, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, object]] = []
    real = engine._authorize

    def spy(request: dict[str, object], *rest: object) -> dict[str, object]:
        seen.append(request)
        return real(request, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_authorize", spy)
    compiled.decide(agent("team-a", "bot"), "infer", md("team-a", "chat"), ctx())
    compiled.decide(agent("team-a", "helper"), "update", md("team-b", "chat"))
    assert json.loads(str(seen[0]["context"])) == {"hour": 12}
    assert "context" not in seen[1]
