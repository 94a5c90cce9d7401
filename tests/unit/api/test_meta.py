from datetime import UTC, datetime, timedelta

from aviator.api.meta import (
    dns1123_label_problem,
    dns1123_subdomain_problem,
    find_condition,
    set_condition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_transition_time_moves_only_when_status_changes() -> None:
    conds = set_condition([], type="Ready", status="False", reason="Starting", message="", now=T0)
    later = T0 + timedelta(seconds=5)
    same = set_condition(
        conds, type="Ready", status="False", reason="Still", message="m", now=later
    )
    assert find_condition(same, "Ready").last_transition_time == T0  # type: ignore[union-attr]
    assert find_condition(same, "Ready").reason == "Still"  # type: ignore[union-attr]
    flipped = set_condition(same, type="Ready", status="True", reason="Up", message="", now=later)
    assert find_condition(flipped, "Ready").last_transition_time == later  # type: ignore[union-attr]
    assert len(flipped) == 1


def test_other_conditions_are_kept_in_order() -> None:
    conds = set_condition([], type="A", status="True", reason="r", message="", now=T0)
    conds = set_condition(conds, type="B", status="True", reason="r", message="", now=T0)
    conds = set_condition(conds, type="A", status="False", reason="r", message="", now=T0)
    assert [c.type for c in conds] == ["A", "B"]


def test_dns_names() -> None:
    assert dns1123_label_problem("chat-1") is None
    assert dns1123_label_problem("") == "must not be empty"
    assert "63" in (dns1123_label_problem("a" * 64) or "")
    assert dns1123_subdomain_problem("chat.v1.example") is None
    assert dns1123_subdomain_problem("chat..v1") is not None
