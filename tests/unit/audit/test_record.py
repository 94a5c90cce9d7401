"""``AuditRecord``: what a record holds, how it is checked and bounded, and its canonical JSON."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from aviator.api.principal import ADMIN, Principal
from aviator.audit.record import MAX_EXTRA_KEYS, AuditRecord, Tokens, audit_time

from .helpers import record


def test_audit_time_is_utc_rfc3339_with_microseconds() -> None:
    when = datetime(2026, 11, 27, 11, 15, 30, 123, tzinfo=timezone(timedelta(hours=1)))
    assert audit_time(when) == "2026-11-27T10:15:30.000123Z"
    assert audit_time().endswith("Z")
    assert len(audit_time()) == len("2026-11-27T10:15:30.000123Z")


def test_a_record_defaults_its_time_to_now() -> None:
    before = audit_time()
    r = AuditRecord(
        source="controlapi",
        principal="admin",
        principal_kind="admin",
        action="create",
        resource="default/chat",
        decision="allow",
    )
    assert before <= r.time <= audit_time()


def test_of_takes_the_principal_id_and_kind_never_anything_else() -> None:
    agent = Principal(
        kind="agent",
        id="spiffe://aviator.local/ns/default/agent/bot",
        namespace="default",
        name="bot",
        token_id="jti-123",
    )
    r = AuditRecord.of(
        agent, source="gateway", action="infer", resource="default/chat", decision="deny"
    )
    assert (r.principal, r.principal_kind) == (agent.id, "agent")
    assert r.known_principal_kind
    assert "jti-123" not in r.to_json().decode()
    assert (
        AuditRecord.of(
            ADMIN, source="controlapi", action="delete", resource="x", decision="allow"
        ).principal
        == "admin"
    )


def test_canonical_json_has_sorted_keys_no_whitespace_and_every_field() -> None:
    r = record(1, extra={"z": 1, "a": "b"})
    text = r.to_json()
    data = orjson.loads(text)
    assert list(data) == sorted(data)
    assert list(data["extra"]) == ["a", "z"]
    assert list(data["tokens"]) == ["completion", "prompt"]
    assert b" " not in text.replace(b"ModelDeployment::", b"").replace(b"no policy", b"")
    assert text == orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    assert set(data) == {
        "action", "decision", "extra", "policies", "principal", "principal_kind", "reason",
        "request_id", "resource", "source", "time", "tokens",
    }  # fmt: skip
    assert record(0).to_dict()["tokens"] is None


def test_json_reads_back_to_an_equal_record() -> None:
    r = record(7, extra={"status": 429, "grant": "g-1", "ratio": 0.5, "ok": False, "none": None})
    assert AuditRecord.from_json(r.to_json()) == r
    assert AuditRecord.from_dict(r.to_dict()) == r


def test_a_record_is_immutable_and_hashable() -> None:
    r = record(1, extra={"status": 200})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.decision = "deny"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.extra["status"] = 500  # type: ignore[index]
    assert hash(r) == hash(record(1, extra={"status": 200}))


def test_the_callers_extra_dict_is_copied() -> None:
    extra: dict[str, Any] = {"status": 200}
    r = record(1, extra=extra)
    extra["status"] = 500
    assert r.extra["status"] == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"source": "kubelet"}, "source must be one of"),
        ({"decision": "maybe"}, "decision must be one of"),
        ({"time": "2026-11-27T10:15:30Z"}, "microseconds"),
        ({"time": "2026-11-27T10:15:30.000000+01:00"}, "microseconds"),
        ({"principal": ""}, "principal must not be empty"),
        ({"action": 3}, "action must be a string"),
        ({"policies": "one"}, "policies must be a sequence"),
        ({"policies": tuple(f"p{i}" for i in range(33))}, "at most 32 policies"),
        ({"extra": {f"k{i}": i for i in range(MAX_EXTRA_KEYS + 1)}}, "at most 16"),
        ({"extra": {"": 1}}, "extra key"),
        ({"extra": {"k": [1]}}, "must be a string, number, boolean or null"),
        ({"extra": {"k": float("nan")}}, "must be finite"),
        ({"extra": {"k": 2**64}}, "out of range"),
        ({"tokens": {"prompt": 1, "completion": 2}}, "tokens must be a Tokens"),
    ],
)
def test_structural_mistakes_are_refused_where_the_record_is_built(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        record(1, **overrides)


def test_token_counts_are_non_negative_integers() -> None:
    with pytest.raises(ValueError, match=r"tokens\.prompt"):
        Tokens(prompt=-1, completion=0)
    with pytest.raises(ValueError, match=r"tokens\.completion"):
        Tokens(prompt=1, completion=True)


def test_long_text_is_cut_and_marked_not_refused() -> None:
    r = record(1, reason="x" * 5000, extra={"why": "y" * 1000})
    assert len(r.reason) == 1024
    assert r.reason.endswith("…")
    assert len(str(r.extra["why"])) == 256


def test_from_dict_refuses_what_is_not_a_record() -> None:
    good = record(1).to_dict()
    with pytest.raises(ValueError, match="unknown field"):
        AuditRecord.from_dict({**good, "secret": "x"})
    with pytest.raises(ValueError, match="missing field"):
        AuditRecord.from_dict({k: v for k, v in good.items() if k != "decision"})
    with pytest.raises(ValueError, match="is an object"):
        AuditRecord.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is JSON"):
        AuditRecord.from_json(b"{")
    with pytest.raises(ValueError, match="tokens must be"):
        AuditRecord.from_dict({**good, "tokens": {"prompt": 1}})


def test_unknown_principal_kinds_are_kept_but_flagged() -> None:
    r = record(1, principal_kind="idp-user")
    assert not r.known_principal_kind


def test_time_must_be_utc() -> None:
    assert record(1, time=audit_time(datetime(2026, 1, 1, tzinfo=UTC))).time.endswith(".000000Z")
