from itertools import product
from typing import get_args

import cedarpy
import pytest

from aviator.api import grant as grant_api
from aviator.policy import schema

PRINCIPAL_TYPES = ("Admin", "Agent", "ApiKey", "Anonymous")
RESOURCE_TYPES = ("ModelDeployment", "Replica", "Node", "DeviceClass", "Policy", "Grant", "Agent")


def validates(text: str) -> bool:
    return cedarpy.validate_policies(text, schema.schema_handle()).validation_passed


def test_schema_parses_and_round_trips() -> None:
    rendered = str(schema.schema_handle())
    assert "entity ModelDeployment in [Namespace]" in rendered
    assert cedarpy.Schema.from_str(rendered)


@pytest.mark.parametrize("action", schema.ACTIONS)
def test_applies_to_mirrors_the_schema(action: str) -> None:
    principals, resources = schema.APPLIES_TO[action]
    for p, r in product(PRINCIPAL_TYPES, RESOURCE_TYPES):
        text = f'permit (principal is {p}, action == Action::"{action}", resource is {r});'
        assert validates(text) == (p in principals and r in resources), (p, r)


def test_inference_context_mirrors_the_schema() -> None:
    cedar_types = {str: '""', int: "0"}
    for action in schema.INFERENCE_ACTIONS:
        for key, kind in schema.INFERENCE_CONTEXT.items():
            text = (
                f'permit (principal, action == Action::"{action}", resource) '
                f"when {{ context.{key} == {cedar_types[kind]} }};"
            )
            assert validates(text), key
        assert not validates(
            f'permit (principal, action == Action::"{action}", resource) when {{ context.other }};'
        )


def test_action_groups_mirror_the_schema() -> None:
    for group, members in schema.ACTION_GROUPS.items():
        for action in schema.ACTIONS:
            text = (
                f'permit (principal, action, resource) when {{ action in Action::"{group}" && '
                f'action == Action::"{action}" }};'
            )
            assert validates(text)  # groups exist
        assert set(members) <= set(schema.ACTIONS)


def test_grantable_actions_are_the_grant_models() -> None:
    assert set(schema.GRANTABLE_ACTIONS) == set(get_args(grant_api.GrantAction))
    assert not set(schema.GRANT_ACTIONS) & set(schema.GRANTABLE_ACTIONS)


def test_grant_reference_types_are_schema_entities() -> None:
    for entity_type in grant_api.RESOURCE_TYPES:
        assert validates(
            f"permit (principal, action, resource) when {{ resource is {entity_type} }};"
        )


def test_context_problem_accepts_the_well_formed() -> None:
    good = {"model": "m", "estimatedTokens": 1, "priority": "standard", "hour": 0,
            "intent": "", "grant": ""}  # fmt: skip
    assert schema.context_problem("infer", good) is None
    assert schema.context_problem("update", None) is None
    assert schema.context_problem("update", {}) is None
    assert "Long range" in (
        schema.context_problem("embed", {**good, "estimatedTokens": 2**63}) or ""
    )


@pytest.mark.parametrize(
    ("action", "entity_type", "fits"),
    [
        ("infer", "ModelDeployment", True),
        ("infer", "Namespace", True),
        ("infer", "Node", False),
        ("delete", "Replica", True),
        ("create", "Policy", True),
        ("update", "Namespace", True),
    ],
)
def test_grant_applies(action: str, entity_type: str, fits: bool) -> None:
    assert schema.grant_applies(action, entity_type) is fits
