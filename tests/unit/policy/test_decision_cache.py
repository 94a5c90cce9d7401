"""Remembered decisions are the decisions Cedar gives: per principal, action, resource and class of
context values, for requests about entities of the graph only."""

import json
import operator
import threading
from collections.abc import Callable
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.api.principal import Principal
from aviator.policy import engine
from aviator.policy import entities as ent

from .world import agent, compile_with, ctx, grant_obj, md, md_obj

# Context read every way the class analysis tells apart: Long thresholds on either side of every
# comparison, String literals, ``like`` and comparisons with entity attributes (by value),
# ``has``, arithmetic that can overflow (an error, reported with the decision), and a statement
# that errors for an agent missing from the graph.
CONTEXTUAL = (
    "contextual",
    """
permit (principal, action in Action::"inference", resource)
when { context.estimatedTokens <= 16000 && 2 <= context.hour };
forbid (principal, action == Action::"infer", resource)
when { context.estimatedTokens > 8000 && context.priority == "sheddable" };
forbid (principal, action in Action::"inference", resource is ModelDeployment)
when { resource.priority == "critical" && context.intent == "" && context.grant == "" };
forbid (principal, action in Action::"inference", resource)
when { context.hour == 3 || context.hour >= 22 || context.hour < 1 };
forbid (principal, action == Action::"embed", resource is ModelDeployment)
when { context.model != resource.model };
permit (principal, action == Action::"embed", resource)
when { context.model like "llama*" && context has intent && context.priority != "critical" };
forbid (principal is Agent, action == Action::"infer", resource)
when { principal.owner == "bob" && context.estimatedTokens * 1000000000 > 9000000000000 };
permit (principal is Agent, action == Action::"infer", resource)
when { principal.purpose == "summaries" && context.hour != 12 };
""",
)

AGENTS = [agent("team-a", "bot"), agent("team-a", "helper"), agent("team-b", "bot")]
AGENTS += [agent("team-a", "ghost"), Principal(kind="apikey", id="apikey:k1")]
TARGETS = [md("team-a", "chat"), md("team-a", "big"), md("team-b", "chat")]
GRANTS = [
    grant_obj("team-a", "g", agent="bot", actions=["infer"], resources=["ns/team-b"]),
    grant_obj("team-a", "e", agent="helper", actions=["embed"], resources=["md/big"]),
]

contexts = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["llama", "llama-70b", "mistral", ""]),
        # Near the thresholds, and far: the product overflows from about 9.2e9.
        "estimatedTokens": st.one_of(
            st.sampled_from([0, 7999, 8000, 8001, 16000, 16001, 9_000_000_000, 9_300_000_000]),
            st.integers(-(2**63), 2**63 - 1),
        ),
        "priority": st.sampled_from(["critical", "standard", "sheddable", "Sheddable"]),
        "hour": st.integers(0, 23),
        "intent": st.sampled_from(["", "a purpose", "other"]),
        "grant": st.sampled_from(["", "g", "team-a/e", "nope"]),
    }
)


@pytest.fixture(scope="module")
def pair() -> tuple[engine.CompiledPolicies, engine.CompiledPolicies]:
    """The same set compiled twice: remembering decisions, and not."""
    remembering = compile_with(engine.PolicyEngine(), CONTEXTUAL, grants=GRANTS)
    fresh = compile_with(engine.PolicyEngine(decision_cache_size=0), CONTEXTUAL, grants=GRANTS)
    return remembering, fresh


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    requests=st.lists(
        st.tuples(
            st.sampled_from(AGENTS),
            st.sampled_from(["infer", "embed"]),
            st.sampled_from(TARGETS),
            contexts,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_remembered_decisions_are_cedars(
    pair: tuple[engine.CompiledPolicies, engine.CompiledPolicies],
    requests: list[tuple[Principal, str, ent.EntityUid, dict[str, Any]]],
) -> None:
    remembering, fresh = pair
    for request in requests:
        assert remembering.decide(*request) == fresh.decide(*request)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    requests=st.lists(
        st.tuples(
            st.sampled_from([*AGENTS, Principal(kind="admin", id="admin")]),
            st.sampled_from(["infer", "embed", "create"]),
            st.sampled_from(TARGETS),
            contexts,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_decide_inference_is_decide_with_that_context(
    pair: tuple[engine.CompiledPolicies, engine.CompiledPolicies],
    requests: list[tuple[Principal, str, ent.EntityUid, dict[str, Any]]],
) -> None:
    """The gateway's shortcut gives Cedar's decision, for every principal kind and action (the
    unusual ones, such as a negative estimate or a write action, through the general path)."""
    remembering, fresh = pair
    for principal, action, target, context in requests:
        short = remembering.decide_inference(
            principal,
            action,
            target,
            model=context["model"],
            estimated_tokens=context["estimatedTokens"],
            priority=context["priority"],
            hour=context["hour"],
            intent=context["intent"],
            grant=context["grant"],
        )
        assert short == fresh.decide(principal, action, target, context)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    principal=st.sampled_from(AGENTS),
    action=st.sampled_from(["infer", "embed"]),
    target=st.sampled_from(TARGETS),
    context=contexts,
    varying=st.lists(
        st.tuples(contexts.map(operator.itemgetter("estimatedTokens")), st.integers(0, 23)),
        min_size=1,
        max_size=10,
    ),
)
def test_a_lane_decides_as_cedar(
    pair: tuple[engine.CompiledPolicies, engine.CompiledPolicies],
    principal: Principal,
    action: str,
    target: ent.EntityUid,
    context: dict[str, Any],
    varying: list[tuple[int, int]],
) -> None:
    """An ``InferenceLane`` (what the gateway keeps per agent, deployment, model, priority and
    intent) gives Cedar's decision whatever the estimate and the hour of each request, including
    from what it remembered for an earlier one."""
    remembering, fresh = pair
    lane = remembering.inference_lane(
        principal,
        action,
        target,
        model=context["model"],
        priority=context["priority"],
        intent=context["intent"],
        grant=context["grant"],
    )
    if lane is None:
        assert principal.kind != "agent"
        return
    assert lane.compiled is remembering
    for estimate, hour in varying:
        expected = fresh.decide(
            principal, action, target, {**context, "estimatedTokens": estimate, "hour": hour}
        )
        assert lane.decide(estimate, hour) == expected


def test_a_lane_remembers_by_class_and_only_where_decisions_are_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled = compile_with(engine.PolicyEngine(), CONTEXTUAL, grants=GRANTS)
    bot, chat = agent("team-a", "bot"), md("team-a", "chat")
    lane = compiled.inference_lane(bot, "infer", chat, model="llama", priority="standard")
    assert lane is not None
    asked: list[dict[str, Any]] = []
    real = engine._authorize

    def spy(request: dict[str, Any], *rest: Any) -> dict[str, Any]:
        asked.append(request)
        return real(request, *rest)

    monkeypatch.setattr(engine, "_authorize", spy)
    first = lane.decide(100, 5)
    assert lane.decide(100, 11) is first  # the same side of every threshold on the hour
    assert len(asked) == 1
    # The estimate is read by value here (a product): another estimate is another class.
    assert lane.decide(101, 11) == first
    assert len(asked) == 2
    assert lane.decide(100, 3).allowed is not first.allowed  # hour 3 is forbidden
    assert len(asked) == 3
    # Nothing to remember for: another kind of principal, another action, no cache.
    key = Principal(kind="apikey", id="apikey:k1")
    assert compiled.inference_lane(key, "infer", chat, model="m", priority="standard") is None
    assert compiled.inference_lane(bot, "create", chat, model="m", priority="standard") is None
    forgetful = compile_with(engine.PolicyEngine(decision_cache_size=0), CONTEXTUAL, grants=GRANTS)
    assert forgetful.inference_lane(bot, "infer", chat, model="m", priority="standard") is None


def test_the_cache_is_hit_within_a_class_and_missed_across(
    pair: tuple[engine.CompiledPolicies, engine.CompiledPolicies],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled = compile_with(engine.PolicyEngine(), CONTEXTUAL, grants=GRANTS)
    asked: list[dict[str, Any]] = []
    real = engine._authorize

    def spy(request: dict[str, Any], *rest: Any) -> dict[str, Any]:
        asked.append(request)
        return real(request, *rest)

    monkeypatch.setattr(engine, "_authorize", spy)
    bot, chat = agent("team-a", "bot"), md("team-a", "chat")
    first = compiled.decide(bot, "infer", chat, ctx(estimatedTokens=100, hour=5))
    # Same side of every threshold, same literals: remembered.
    assert compiled.decide(bot, "infer", chat, ctx(estimatedTokens=100, hour=11)) is first
    assert len(asked) == 1
    # Across a threshold, on one, another String literal: each asks Cedar. The token estimate
    # is multiplied in a statement of this slice, so each of its values is a class of its own.
    compiled.decide(bot, "infer", chat, ctx(estimatedTokens=100, hour=22))
    compiled.decide(bot, "infer", chat, ctx(estimatedTokens=100, hour=12))
    compiled.decide(bot, "infer", chat, ctx(estimatedTokens=100, hour=5, priority="sheddable"))
    compiled.decide(bot, "infer", chat, ctx(estimatedTokens=101, hour=5))
    assert len(asked) == 5
    # The model is read by ``like`` and against an attribute: every value is its own class.
    compiled.decide(bot, "embed", chat, ctx(model="llama"))
    compiled.decide(bot, "embed", chat, ctx(model="llama2"))
    assert len(asked) == 7
    # Declared intent is applied after Cedar: part of the key whatever the slice reads.
    compiled.decide(bot, "infer", chat, ctx(estimatedTokens=100, hour=5, intent="x"))
    assert len(asked) == 8


def test_writes_with_an_overlay_are_not_remembered(policy_engine: engine.PolicyEngine) -> None:
    compiled = compile_with(
        policy_engine,
        ("writes", 'permit (principal, action == Action::"update", resource is ModelDeployment)\n'
                   'when { resource.priority != "critical" };'),
    )  # fmt: skip
    bot = agent("team-a", "bot")
    plain = ent.deployment_entity(md_obj("team-a", "chat"))
    critical = ent.deployment_entity(md_obj("team-a", "chat", priority="critical"))
    assert compiled.decide(bot, "update", plain).allowed
    assert not compiled.decide(bot, "update", critical).allowed  # same uid, other object
    assert compiled.decide(bot, "update", plain.uid).allowed  # the graph's version
    assert list(compiled._decisions) == [("update", ent.principal_uid(bot), plain.uid)]


def test_the_cache_is_bounded_oldest_out_first() -> None:
    compiled = compile_with(engine.PolicyEngine(decision_cache_size=3), CONTEXTUAL)
    bot, chat = agent("team-a", "bot"), md("team-a", "chat")
    for hour in (0, 2, 3, 5, 22):  # five classes of the hour
        compiled.decide(bot, "infer", chat, ctx(hour=hour))
        assert len(compiled._decisions) <= 3
    hours = [key[3] for key in compiled._decisions]
    again = [
        engine.context_class(compiled._policy_set("infer", ent.principal_uid(bot), chat, ()).plan,
                             ctx(hour=hour))
        for hour in (3, 5, 22)
    ]  # fmt: skip
    assert hours == again


def test_no_cache_remembers_nothing() -> None:
    compiled = compile_with(engine.PolicyEngine(decision_cache_size=0), CONTEXTUAL)
    assert compiled.decide(agent("team-a", "bot"), "infer", md("team-a", "chat"), ctx()).allowed
    assert not compiled._decisions


def test_invalid_contexts_are_refused_before_the_cache() -> None:
    compiled = compile_with(engine.PolicyEngine(), CONTEXTUAL)
    bot, chat = agent("team-a", "bot"), md("team-a", "chat")
    assert compiled.decide(bot, "infer", chat, ctx(hour=5)).allowed
    # True == 1 and hash alike in Python; the context check refuses a Boolean first.
    refused = compiled.decide(bot, "infer", chat, ctx(hour=5, estimatedTokens=True))
    assert refused.no_decision and not refused.allowed


def test_decisions_from_several_threads_agree(
    pair: tuple[engine.CompiledPolicies, engine.CompiledPolicies],
) -> None:
    _, fresh = pair
    compiled = compile_with(engine.PolicyEngine(decision_cache_size=16), CONTEXTUAL, grants=GRANTS)
    requests = [
        (who, action, target, ctx(hour=hour, estimatedTokens=tokens))
        for who in AGENTS[:3]
        for action in ("infer", "embed")
        for target in TARGETS
        for hour in (0, 3, 12, 23)
        for tokens in (10, 9000, 20000)
    ]
    expected = [fresh.decide(*r) for r in requests]
    failures: list[str] = []

    def work(offset: int) -> None:
        for n in range(len(requests)):
            i = (n * 7 + offset) % len(requests)
            if compiled.decide(*requests[i]) != expected[i]:
                failures.append(f"request {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    assert len(compiled._decisions) <= 16


# -- the class analysis, pure -------------------------------------------------------------------


def conditions(text: str) -> Any:
    est = json.loads(cedarpy.policies_to_json_str(text))
    return est["staticPolicies"]["policy0"]["conditions"]


@pytest.mark.parametrize(
    ("condition", "values"),
    [
        ("context.hour < 3 && 8 >= context.hour", {"hour": {3, 8}}),
        ('context.intent == "" || context.intent != "x"', {"intent": {"", "x"}}),
        ('context.model like "a*"', {"model": None}),
        ("context.model == resource.model", {"model": None}),
        ('context.model < "b"', {"model": None}),  # an error in Cedar: left to Cedar
        ("context.hour + 1 > 3", {"hour": None}),
        ("context.hour == context.estimatedTokens", {"hour": None, "estimatedTokens": None}),
        ('context.hour == 3 && context.hour like "x"', {"hour": None}),
        ("context has intent && principal has owner", {}),
        ('principal.owner == "bob"', {}),
    ],
)
def test_what_a_statement_compares_the_context_with(
    condition: str, values: dict[str, set[Any] | None]
) -> None:
    found = engine._context_values(
        conditions(f"permit (principal, action, resource) when {{ {condition} }};")
    )
    assert found == {k: None if v is None else frozenset(v) for k, v in values.items()}


def statement(condition: str) -> engine.Statement:
    body = conditions(f"permit (principal, action, resource) when {{ {condition} }};")
    return engine.Statement(
        id="t#0",
        source="t",
        index=0,
        effect="permit",
        annotations={},
        text="",
        actions=frozenset(),
        context=engine._context_reads(body),
        context_values=engine._context_values(body),
    )


def test_a_slices_plan_joins_its_statements() -> None:
    plan = engine.value_plan(
        [
            statement('context.hour < 3 && context.intent == ""'),
            statement('context.hour == 8 && context.intent != "x" && context.model like "a*"'),
            statement("context.estimatedTokens == 5 && context has grant"),
            statement('context.estimatedTokens != "5"'),  # another type: by value
        ]
    )
    assert plan == (
        engine._ValueClass("estimatedTokens"),
        engine._ValueClass("hour", cuts=(3, 8)),
        engine._ValueClass("intent", literals=frozenset({"", "x"})),
        engine._ValueClass("model"),
    )
    assert engine.value_plan([statement("context.hour < 3"), statement("context == {}")]) is None


COMPARE: list[Callable[[int, int], bool]] = [
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
]


@given(
    cuts=st.lists(st.integers(-50, 50), min_size=1, max_size=5, unique=True),
    a=st.integers(-60, 60),
    b=st.integers(-60, 60),
)
def test_longs_of_one_class_compare_alike_with_every_cut(cuts: list[int], a: int, b: int) -> None:
    plan = (engine._ValueClass("hour", cuts=tuple(sorted(cuts))),)
    same = engine.context_class(plan, {"hour": a}) == engine.context_class(plan, {"hour": b})
    alike = all(op(a, t) == op(b, t) for t in cuts for op in COMPARE)
    assert same == alike


@given(
    literals=st.frozensets(st.text(max_size=3), min_size=1, max_size=4),
    a=st.text(max_size=3),
    b=st.text(max_size=3),
)
def test_strings_of_one_class_compare_alike_with_every_literal(
    literals: frozenset[str], a: str, b: str
) -> None:
    plan = (engine._ValueClass("intent", literals=literals),)
    same = engine.context_class(plan, {"intent": a}) == engine.context_class(plan, {"intent": b})
    assert same == all((a == t) == (b == t) for t in literals)


def test_by_value_and_whole_contexts_are_their_own_class() -> None:
    plan = (engine._ValueClass("model"),)
    assert engine.context_class(plan, ctx(model="a")) != engine.context_class(plan, ctx(model="b"))
    assert engine.context_class(None, ctx(hour=1)) != engine.context_class(None, ctx(hour=2))
    assert engine.context_class(None, ctx()) == engine.context_class(
        None, dict(reversed(ctx().items()))
    )
