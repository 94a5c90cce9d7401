from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aviator.api import admission, errors, kinds
from aviator.api import grant as grant_api

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "q3"},
        "spec": {
            "agent": "summarizer",
            "actions": ["infer"],
            "resources": ["md/chat"],
            "purpose": "quarterly report",
            **spec,
        },
    }


def admit(raw: dict[str, Any], namespace: str = "team-a") -> dict[str, Any]:
    return admission.admit(raw, kind=kinds.GRANT, namespace=namespace)


def causes(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(errors.Invalid) as info:
        admit(raw)
    return {c.field: c.message for c in info.value.causes}


def test_short_forms_are_stored_canonically_in_the_grants_namespace() -> None:
    obj = admit(body(resources=["md/chat", "ns/team-b", "node/gpu-1", 'Replica::"x/r-1"']))
    assert obj["spec"]["resources"] == [
        'ModelDeployment::"team-a/chat"',
        'Namespace::"team-b"',
        'Node::"gpu-1"',
        'Replica::"x/r-1"',
    ]
    assert obj["spec"]["durationSeconds"] == 900
    assert obj["status"]["phase"] == "Pending"


def test_two_spellings_of_one_resource_collapse() -> None:
    obj = admit(body(resources=["md/chat", 'ModelDeployment::"team-a/chat"']))
    assert obj["spec"]["resources"] == ['ModelDeployment::"team-a/chat"']


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (["chat"], "expected an entity reference"),
        (["pods/x"], "expected an entity reference"),
        (['Pod::"a/b"'], "unknown entity type 'Pod'"),
        (['ModelDeployment::"chat"'], "ids are namespace/name"),
        (['ModelDeployment::"Team/chat"'], "namespace 'Team'"),
        (["md/Chat_1"], "name 'Chat_1'"),
    ],
)
def test_malformed_references_are_refused_with_their_index(
    resources: list[str], message: str
) -> None:
    found = causes(body(resources=["md/ok", *resources]))
    assert list(found) == ["spec.resources[1]"]
    assert message in found["spec.resources[1]"]


def test_unknown_and_ungrantable_actions_are_refused() -> None:
    found = causes(body(actions=["infer", "approve", "fly"]))
    assert set(found) == {"spec.actions[1]", "spec.actions[2]"}


def test_repeated_actions_are_refused() -> None:
    assert "spec.actions" in causes(body(actions=["infer", "infer"]))


@pytest.mark.parametrize("seconds", [0, 59, 86_401])
def test_duration_is_bounded(seconds: int) -> None:
    assert "spec.durationSeconds" in causes(body(durationSeconds=seconds))


def test_a_day_is_the_longest_grant() -> None:
    assert admit(body(durationSeconds=86_400))["spec"]["durationSeconds"] == 86_400


def test_agent_and_purpose_are_required_and_checked() -> None:
    raw = body(agent="Not A Name")
    del raw["spec"]["purpose"]
    found = causes(raw)
    assert set(found) == {"spec.agent", "spec.purpose"}


def test_expires_at_adds_the_duration() -> None:
    assert grant_api.expires_at(NOW, 600) == NOW + timedelta(minutes=10)


def wire(phase: str, expires: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if expires is not None:
        status["expiresAt"] = expires
    return {"status": status}


@pytest.mark.parametrize(
    ("phase", "expires", "at", "expected"),
    [
        ("Active", "2026-11-27T12:10:00Z", NOW, "Active"),
        ("Active", "2026-11-27T12:10:00Z", NOW + timedelta(minutes=10), "Expired"),
        ("Active", "2026-11-27T12:10:00Z", NOW + timedelta(hours=1), "Expired"),
        ("Active", None, NOW, "Expired"),
        ("Pending", None, NOW + timedelta(days=9), "Pending"),
        ("Revoked", "2026-11-27T12:10:00Z", NOW, "Revoked"),
        ("Bogus", None, NOW, "Pending"),
    ],
)
def test_phase_at(phase: str, expires: str | None, at: datetime, expected: str) -> None:
    assert grant_api.phase_at(wire(phase, expires), at) == expected


def test_phase_at_reads_models_too() -> None:
    obj = admit(body())
    obj["status"] = {"phase": "Active", "expiresAt": "2026-11-27T12:10:00Z"}
    model = grant_api.Grant.from_raw(obj)
    assert grant_api.phase_at(model, NOW) == "Active"
    assert grant_api.phase_at(model, NOW + timedelta(hours=1)) == "Expired"


def test_short_form_kind_names_match_the_registry() -> None:
    for alias, entity_type in grant_api.REF_ALIASES.items():
        if alias in ("ns", "namespace", "namespaces"):
            assert entity_type == "Namespace"
            continue
        assert kinds.resolve(alias).kind == entity_type
    for info in kinds.KINDS.values():
        if info.kind in grant_api.RESOURCE_TYPES:
            assert grant_api.RESOURCE_TYPES[info.kind] == info.namespaced
            for name in (info.singular, info.plural, *info.short_names):
                assert grant_api.REF_ALIASES[name] == info.kind


def test_grant_printer_columns() -> None:
    names = [c.name for c in kinds.GRANT.columns if c.priority == 0]
    assert names[:4] == ["Agent", "Phase", "Expires", "Purpose"]
    assert kinds.resolve("gr") is kinds.GRANT
