"""Records and chains for the audit tests, and hypothesis strategies for them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from aviator.audit import chain
from aviator.audit.chain import Entry
from aviator.audit.record import AuditRecord, Tokens, audit_time


def record(i: int = 0, **overrides: Any) -> AuditRecord:
    """A plausible gateway decision; ``i`` varies the request id and resource."""
    fields: dict[str, Any] = {
        "source": "gateway",
        "principal": "spiffe://aviator.local/ns/default/agent/summariser",
        "principal_kind": "agent",
        "action": "infer",
        "resource": f'ModelDeployment::"default/chat-{i % 3}"',
        "decision": "allow" if i % 4 else "deny",
        "policies": ("chat-users",) if i % 4 else (),
        "reason": "permitted" if i % 4 else "no policy permits",
        "request_id": f"req-{i}",
        "tokens": Tokens(prompt=100 + i, completion=20) if i % 4 else None,
        "extra": {"status": 200 if i % 4 else 403},
        "time": audit_time(datetime(2026, 11, 27, 10, 0, i % 60, i % 1_000_000, tzinfo=UTC)),
    }
    fields.update(overrides)
    return AuditRecord(**fields)


def entries(n: int) -> list[Entry]:
    return chain.build(record(i).to_json() for i in range(n))


HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)

records = st.builds(
    AuditRecord,
    source=st.sampled_from(["controlapi", "gateway", "plane"]),
    principal=st.text(min_size=1, max_size=24),
    principal_kind=st.sampled_from(["admin", "agent", "apikey", "anonymous"]),
    action=st.sampled_from(["infer", "embed", "create", "update", "delete", "approve"]),
    resource=st.text(min_size=1, max_size=24),
    decision=st.sampled_from(["allow", "deny"]),
    policies=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    reason=st.text(max_size=24),
    request_id=st.text(max_size=12),
    tokens=st.none()
    | st.builds(Tokens, prompt=st.integers(0, 10**7), completion=st.integers(0, 10**7)),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), _scalars, max_size=4),
    time=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(audit_time),
)

record_bytes = st.integers(0, 10**6).map(lambda i: record(i).to_json())
"""Cheap varied records, for tests about the chain rather than the record."""

chains = st.lists(record_bytes, min_size=1, max_size=10).map(chain.build)
