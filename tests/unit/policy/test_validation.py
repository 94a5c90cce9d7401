from typing import Any

import pytest

from aviator.api import admission, errors, kinds
from aviator.policy import validation


def policy(cedar: str) -> dict[str, Any]:
    return admission.admit(
        {"metadata": {"name": "p"}, "spec": {"cedar": cedar}}, kind=kinds.POLICY, namespace=None
    )


def messages(cedar: str) -> list[str]:
    found = validation.policy_errors(kinds.POLICY, policy(cedar))
    assert {e.field for e in found} <= {"spec.cedar"}
    return [e.message for e in found]


def test_a_valid_policy_passes() -> None:
    assert (
        messages(
            '@id("ok") @approval("auto")\n'
            'permit (principal is Agent, action == Action::"requestGrant", resource is Grant)\n'
            "when { resource.durationSeconds <= 600 };"
        )
        == []
    )


def test_a_syntax_error_is_refused_with_cedars_message() -> None:
    assert messages("permit (principal, action, resource) when { 1 + };") == [
        "Cedar could not parse the policy: unexpected token `}`"
    ]
    assert messages("allow (principal, action, resource);") == [
        "Cedar could not parse the policy: invalid policy effect: allow"
    ]


def test_a_type_error_is_refused_with_cedars_message_and_the_statement() -> None:
    found = messages(
        "permit (principal, action, resource);\n"
        '@id("noon")\n'
        'permit (principal, action == Action::"infer", resource) when { context.hour == "noon" };'
    )
    assert found == ['policy #2 (@id "noon"): the types Long and String are not compatible']


def test_unknown_attributes_and_entity_types_are_refused() -> None:
    found = messages(
        'permit (principal is Agent, action == Action::"infer", resource) '
        "when { principal.salary > 3 };"
    )
    assert found and all("attribute `salary`" in m for m in found)
    assert messages("permit (principal is Robot, action, resource);")


def test_context_exists_only_on_inference() -> None:
    found = messages("permit (principal, action, resource) when { context.hour == 3 };")
    assert any('Action::"update"' in m for m in found)


def test_templates_and_empty_texts_are_refused() -> None:
    assert messages("permit (?principal, action, resource);")[0].startswith(
        "Cedar could not parse the policy"
    )
    assert messages("// only a comment\n") == ["contains no Cedar statement"]


def test_approval_annotation_values() -> None:
    found = messages('@approval("sometimes")\npermit (principal, action, resource);')
    assert found == ['policy #1: @approval must be "auto" or "human" (got \'sometimes\')']


def test_the_check_refuses_at_admission_with_the_field_path() -> None:
    check = validation.CHECKS
    obj = policy('permit (principal, action == Action::"infer", resource) when { context.x };')
    causes = [c for fn in check for c in fn(kinds.POLICY, obj)]
    assert [c.field for c in causes] == ["spec.cedar"]
    assert "attribute `x`" in causes[0].message
    assert validation.policy_errors(kinds.MODEL_DEPLOYMENT, {"spec": {"cedar": "x"}}) == []


def grant(**spec: Any) -> dict[str, Any]:
    return admission.admit(
        {
            "metadata": {"name": "g"},
            "spec": {"agent": "bot", "purpose": "p", "actions": ["infer"],
                     "resources": ["md/chat"], **spec},
        },
        kind=kinds.GRANT,
        namespace="team-a",
    )  # fmt: skip


def test_grant_actions_must_apply_to_their_resources() -> None:
    assert validation.grant_errors(kinds.GRANT, grant()) == []
    assert validation.grant_errors(kinds.GRANT, grant(resources=["ns/team-b"])) == []
    found = validation.grant_errors(
        kinds.GRANT, grant(actions=["infer", "delete"], resources=["md/chat", "node/gpu-1"])
    )
    assert [(e.field, e.message) for e in found] == [
        (
            "spec.resources[1]",
            "infer does not apply to Node (applies to ModelDeployment, Namespace)",
        )
    ]
    found = validation.grant_errors(
        kinds.GRANT, grant(actions=["update"], resources=["rep/chat-1", "dc/gpu"])
    )
    assert found == []


def test_malformed_grants_are_refused_by_the_model_with_field_paths() -> None:
    with pytest.raises(errors.Invalid) as info:
        grant(actions=["approve"], resources=["md/ok", "bogus"], durationSeconds=10**6)
    assert {c.field for c in info.value.causes} == {
        "spec.actions[0]",
        "spec.resources[1]",
        "spec.durationSeconds",
    }


def test_grant_check_reports_references_it_cannot_read() -> None:
    raw = {"metadata": {"namespace": "a"}, "spec": {"actions": ["infer"], "resources": ["x"]}}
    (found,) = validation.grant_errors(kinds.GRANT, raw)
    assert found.field == "spec.resources[0]"
