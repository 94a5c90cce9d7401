"""RecordTemplate and Stamps: the gateway's cheap way to the same canonical bytes."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.api.principal import Principal
from aviator.audit.record import (
    MAX_EXTRA_KEYS,
    AuditRecord,
    RecordTemplate,
    Stamps,
    Tokens,
    audit_time,
    encode_facts,
)

AGENT = Principal(
    kind="agent",
    id="spiffe://aviator.local/ns/team/agent/bot",
    namespace="team",
    name="bot",
)
TIME = "2026-11-27T10:15:30.000123Z"


def test_stamps_are_audit_times_in_order() -> None:
    stamps = Stamps()
    before = audit_time()
    first = stamps()
    seen = [stamps() for _ in range(200)]
    after = audit_time()
    shape = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
    assert all(shape.match(s) for s in [first, *seen])
    assert before <= first <= seen[0] and seen == sorted(seen) and seen[-1] <= after


def test_stamps_follow_the_second_they_are_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached date and time change with the second (across a day, too)."""
    stamps = Stamps()
    clock = iter([1_795_737_600_999_999_000, 1_795_737_601_000_001_000, 1_795_823_999_500_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    assert stamps() == "2026-11-27T00:00:00.999999Z"
    assert stamps() == "2026-11-27T00:00:01.000001Z"
    assert stamps() == "2026-11-27T23:59:59.500000Z"


texts = st.text(max_size=300)
names = st.text(min_size=1, max_size=300)
extra_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(
    principal=st.builds(
        Principal,
        kind=st.sampled_from(["agent", "apikey", "admin", "anonymous"]),
        id=names,
        namespace=st.none() | names,
        name=st.none() | names,
    ),
    action=names,
    resource=st.text(min_size=1, max_size=600),
    decision=st.sampled_from(["allow", "deny"]),
    policies=st.lists(names, max_size=4).map(tuple),
    reason=st.text(max_size=1100),
    request_id=texts,
    tokens=st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    extra=st.dictionaries(st.text(min_size=1, max_size=64), extra_values, max_size=MAX_EXTRA_KEYS),
)
def test_a_template_encodes_exactly_what_the_record_would(
    principal: Principal,
    action: str,
    resource: str,
    decision: Any,
    policies: tuple[str, ...],
    reason: str,
    request_id: str,
    tokens: tuple[int, int] | None,
    extra: dict[str, Any],
) -> None:
    fixed = {
        "source": "gateway",
        "action": action,
        "resource": resource,
        "decision": decision,
        "policies": policies,
        "reason": reason,
    }
    template = RecordTemplate(principal, **fixed)
    record = AuditRecord.of(
        principal,
        **fixed,
        request_id=request_id,
        tokens=None if tokens is None else Tokens(prompt=tokens[0], completion=tokens[1]),
        extra=extra,
        time=TIME,
    )
    encoded = template.encode(request_id=request_id, time=TIME, tokens=tokens, extra=extra)
    assert encoded == record.to_json()
    assert AuditRecord.from_json(encoded) == record


def test_a_template_refuses_what_a_record_refuses() -> None:
    with pytest.raises(ValueError, match="action must not be empty"):
        RecordTemplate(AGENT, source="gateway", action="", resource="r", decision="allow")
    with pytest.raises(ValueError, match="source must be one of"):
        RecordTemplate(AGENT, source="kubelet", action="a", resource="r", decision="allow")  # type: ignore[arg-type]
    template = RecordTemplate(
        AGENT, source="gateway", action="infer", resource="r", decision="allow"
    )
    with pytest.raises(ValueError, match="microseconds"):
        template.encode(request_id="r1", time="2026-11-27T10:15:30Z")
    with pytest.raises(ValueError, match=r"tokens\.prompt"):
        template.encode(request_id="r1", time=TIME, tokens=(-1, 2))
    with pytest.raises(ValueError, match=r"tokens\.completion"):
        template.encode(request_id="r1", time=TIME, tokens=(1, True))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a string, number, boolean or null"):
        template.encode(request_id="r1", time=TIME, extra={"k": [1]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="request_id must be a string"):
        template.encode(request_id=7, time=TIME)  # type: ignore[arg-type]


def test_quoted_stamps_are_the_stamps_as_json() -> None:
    stamps = Stamps()
    for micros in (0, 1_795_822_449_275_963, 1_795_822_449_999_999, 1_795_822_450_000_000):
        assert stamps.quoted(micros) == b'"' + stamps.at(micros).encode() + b'"'


TEMPLATE = RecordTemplate(
    AGENT,
    source="gateway",
    action="infer",
    resource='ModelDeployment::"team/chat"',
    decision="allow",
    policies=("team/chat-users",),
)
OTHER = RecordTemplate(AGENT, source="gateway", action="embed", resource="r", decision="allow")

facts_of_a_gateway = st.tuples(
    st.sampled_from([0, 1]),
    st.text(max_size=300),  # past 256 characters: cut, as encode cuts it
    st.integers(min_value=0, max_value=253_402_300_799_999_999),
    st.none() | st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.none() | st.dictionaries(st.text(min_size=1, max_size=70), extra_values, max_size=4),
)


@given(facts=st.lists(facts_of_a_gateway, max_size=6))
def test_facts_encode_exactly_as_their_template_would(facts: list[tuple[Any, ...]]) -> None:
    templates = [TEMPLATE, OTHER]
    expected = [
        templates[number].encode(
            request_id=request_id,
            time=Stamps().at(micros),
            tokens=None if prompt is None else (prompt, completion),
            extra=extra,
        )
        for number, request_id, micros, prompt, completion, extra in facts
    ]
    refused: list[object] = []
    encoded = encode_facts(
        templates, facts, stamps=Stamps(), rejected=lambda f, e: refused.append(f)
    )
    assert encoded == expected
    assert refused == []


def test_facts_a_template_would_refuse_are_left_out_and_said() -> None:
    good = (0, "r1", 1_795_822_449_275_963, 3, 4, {"status": 200})
    bad = [
        (0, "r2", 1_795_822_449_275_963, -1, 4, None),  # a negative count
        (0, "r3", 1_795_822_449_275_963, 3, True, None),  # a boolean count
        (0, "r4", 1_795_822_449_275_963, None, None, {"k": [1]}),  # not a JSON scalar
        (0, 7, 1_795_822_449_275_963, None, None, None),  # request id not a string
        (0, "r6", 2**70, None, None, None),  # a time past year 9999
        (5, "r7", 1_795_822_449_275_963, None, None, None),  # an unknown template
        (0, "r8"),  # not the facts of a record
    ]
    refused: list[tuple[object, str]] = []
    encoded = encode_facts(
        [TEMPLATE],
        [bad[0], good, *bad[1:], good],
        stamps=Stamps(),
        rejected=lambda fact, error: refused.append((fact, str(error))),
    )
    assert (
        encoded
        == [
            TEMPLATE.encode(
                request_id="r1", time=Stamps().at(good[2]), tokens=(3, 4), extra={"status": 200}
            )
        ]
        * 2
    )
    assert [fact for fact, _ in refused] == bad
    assert "tokens.prompt" in refused[0][1]
    assert "unknown template" in refused[5][1]
