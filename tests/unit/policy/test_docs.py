"""The Policies and Grants sections of docs/governance.md show what the code does."""

import re
from pathlib import Path

import yaml

from aviator.api import admission, kinds
from aviator.policy import engine, schema, validation

DOC = Path(__file__).parents[3] / "docs" / "governance.md"


def sections() -> str:
    text = DOC.read_text()
    start = text.index("\n## Policies")
    grants = text.index("\n## Grants", start)
    end = text.find("\n## ", grants + 1)
    return text[start : end if end != -1 else None]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", sections(), re.S)


def test_the_schema_is_shown_verbatim() -> None:
    assert blocks("cedarschema") == [schema.SCHEMA]


def test_every_cedar_example_validates() -> None:
    examples = blocks("cedar")
    assert len(examples) >= 6
    for text in examples:
        assert validation.policy_problems(text) == [], text


def test_the_manifests_are_admitted_and_the_grant_compiles_as_shown() -> None:
    documents = [yaml.safe_load(b) for b in blocks("yaml")]
    by_kind = {d["kind"]: d for d in documents}
    policy = admission.admit(by_kind["Policy"], kind=kinds.POLICY, namespace=None)
    assert validation.policy_errors(kinds.POLICY, policy) == []
    grant = admission.admit(by_kind["Grant"], kind=kinds.GRANT, namespace="team-a")
    assert validation.grant_errors(kinds.GRANT, grant) == []
    assert grant["spec"]["resources"] == [
        'ModelDeployment::"team-a/chat"',
        'Namespace::"team-b"',
    ]
    shown = [b for b in blocks("cedar") if b.startswith('@id("grant:')]
    assert shown == [engine.grant_policy(grant)]


def test_the_refusal_example_is_what_admission_says() -> None:
    found = validation.policy_errors(
        kinds.POLICY,
        {"spec": {"cedar": 'permit (principal, action == Action::"infer", resource)\n'
                           'when { context.hour == "noon" };'}},
    )  # fmt: skip
    assert f"  spec.cedar: {found[0].message}" in sections()
