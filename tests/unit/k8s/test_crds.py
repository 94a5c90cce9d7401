"""CRDs generated from the models: structural, valid apiextensions.k8s.io/v1, and faithful."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel
from tests.unit.k8s.validation import (
    EXAMPLES,
    KUBERNETES_VERSIONS,
    admitted_md,
    crd_validator,
    example_documents,
    validate_core,
)

from aviator.api.agent import Agent
from aviator.api.grant import Grant
from aviator.api.kinds import KINDS
from aviator.api.meta import Model
from aviator.api.modeldeployment import ModelDeployment
from aviator.api.resource import Resource, Status
from aviator.k8s.crds import (
    CRD_KINDS,
    IMMUTABLE_SPECS,
    UPSTREAM_KINDS,
    SchemaError,
    crd,
    crds,
    structural_schema,
)

ALLOWED_KEYS = {
    "type", "format", "description", "default", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "enum", "maxProperties", "minProperties", "required", "items", "properties",
    "additionalProperties", "nullable", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-validations",
}  # fmt: skip
"""The JSONSchemaProps keys the generator may emit (no $ref, anyOf, const, title...)."""


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """Why ``node`` is not a structural schema, per the apiextensions rules we rely on."""
    problems = [f"{path}: key {k!r}" for k in node if k not in ALLOWED_KEYS]
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties false")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: numeric {key}")
    for name, sub in node.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    return problems


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_a_structural_schema(kind: str) -> None:
    # Also the kinds that are not CRDs: the generator must not depend on which ones are.
    schema = structural_schema(KINDS[kind].model, kind=kind)
    assert structural_problems(schema) == []
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]


def test_structural_check_catches_what_pydantic_emits() -> None:
    raw = ModelDeployment.model_json_schema(by_alias=True)
    assert structural_problems(raw) != []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_crds_validate_as_apiextensions_v1(version: str) -> None:
    for definition in crds():
        assert validate_core(definition, version) == version


def test_crd_kinds_and_upstream_kinds_cover_the_registry() -> None:
    assert set(CRD_KINDS) | set(UPSTREAM_KINDS) == set(KINDS)
    assert not set(CRD_KINDS) & set(UPSTREAM_KINDS)
    assert [c["spec"]["names"]["kind"] for c in crds()] == list(CRD_KINDS)


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_names_columns_scope_and_subresource_come_from_the_registry(kind: str) -> None:
    info = KINDS[kind]
    definition = crd(info)
    spec = definition["spec"]
    assert definition["metadata"]["name"] == f"{info.plural}.aviator.dev"
    assert spec["names"]["shortNames"] == list(info.short_names)
    assert spec["names"]["categories"] == ["aviator"]
    assert spec["scope"] == ("Namespaced" if info.namespaced else "Cluster")
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [
        (c["name"], c["jsonPath"], c["type"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    ] == [(c.name, c.json_path, c.type, c.priority) for c in info.columns]


def test_crds_fit_the_client_side_apply_annotation() -> None:
    # kubectl apply (client-side) copies the object into a 256 KiB annotation.
    for definition in crds():
        assert len(json.dumps(definition)) < 256 * 1024


def test_openapi_spellings() -> None:
    spec = crd(KINDS["ModelDeployment"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    md = spec["properties"]["spec"]["properties"]
    slo = md["slo"]
    assert slo["nullable"] is True
    rps = slo["properties"]["requestsPerSecond"]
    assert (rps["minimum"], rps["exclusiveMinimum"]) == (0, True)
    assert md["engine"] == {
        "default": "auto",
        "description": md["engine"]["description"],
        "enum": ["auto", "sim", "vllm", "sglang", "llamacpp", "external"],
        "type": "string",
    }
    assert md["env"]["additionalProperties"] == {"type": "string"}
    conditions = spec["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    # The wire accepts `replicas: 2` (normalized by the model), so the CRD must too.
    assert md["replicas"]["x-kubernetes-preserve-unknown-fields"] is True


def _validator(kind: str) -> Any:
    return crd_validator(crd(KINDS[kind]))


EXAMPLE_OBJECTS = [
    (path.name, document)
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for document in example_documents(path.name)
    if document.get("kind") in CRD_KINDS
]


def test_the_examples_hold_crd_kinds() -> None:
    assert {d["kind"] for _, d in EXAMPLE_OBJECTS} >= {"ModelDeployment", "Policy"}


@pytest.mark.parametrize(
    ("example", "document"),
    EXAMPLE_OBJECTS,
    ids=[f"{e}:{d['kind']}/{d['metadata']['name']}" for e, d in EXAMPLE_OBJECTS],
)
def test_example_objects_validate_against_their_crd(example: str, document: dict[str, Any]) -> None:
    assert list(_validator(document["kind"]).iter_errors(document)) == []


@pytest.mark.parametrize("example", ["quickstart.yaml", "fleet.yaml"])
def test_stored_model_deployments_validate(example: str) -> None:
    # The stored form (defaults applied, status present) is what the operator writes back.
    validator = _validator("ModelDeployment")
    for document in example_documents(example):
        if document["kind"] != "ModelDeployment":
            continue
        md = admitted_md(document)
        md.status.desired_replicas = 2
        md.status.conditions = []
        assert list(validator.iter_errors(md.to_raw())) == []


def test_agent_and_grant_validate() -> None:
    agent = Agent.model_validate(
        {
            "metadata": {"name": "bot", "namespace": "team-a"},
            "spec": {"owner": "alice@example.com", "budgets": {"tokensPerMinute": 1000}},
        }
    )
    grant = Grant.model_validate(
        {
            "metadata": {"name": "g", "namespace": "team-a"},
            "spec": {
                "agent": "bot",
                "actions": ["infer"],
                "resources": ["md/chat"],
                "purpose": "x",
            },
            "status": {"phase": "Active", "expiresAt": "2026-01-01T00:00:00Z"},
        }
    )
    assert list(_validator("Agent").iter_errors(agent.to_raw())) == []
    assert list(_validator("Grant").iter_errors(grant.to_raw())) == []


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"engine": "tgi"}, ["spec", "engine"]),
        ({"model": {"name": ""}}, ["spec", "model", "name"]),
        ({"slo": {"requestsPerSecond": 0}}, ["spec", "slo", "requestsPerSecond"]),
        ({"env": {"A": 1}}, ["spec", "env", "A"]),
    ],
)
def test_the_crd_schema_refuses_what_the_model_refuses(
    patch: dict[str, Any], where: list[str]
) -> None:
    document = next(
        d for d in example_documents("quickstart.yaml") if d["kind"] == "ModelDeployment"
    )
    document["spec"].update(patch)
    errors = list(_validator("ModelDeployment").iter_errors(document))
    assert [list(e.absolute_path) for e in errors] == [where]


class _Leaf(Model):
    value: int | str


class _Union(Resource[_Leaf, Status]):
    status: Status = Status()


class _Node(Model):
    children: list[_Node] = []


class _Recursive(Resource[_Node, Status]):
    status: Status = Status()


@pytest.mark.parametrize(("model", "message"), [(_Union, "spec.value"), (_Recursive, "recursive")])
def test_unexpressible_schemas_are_named(model: type[BaseModel], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        structural_schema(model, kind="Test")


def _rules(node: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """(path, rule) of every x-kubernetes-validations rule; ``[]`` marks a list item."""
    found = [(path, r["rule"]) for r in node.get("x-kubernetes-validations", [])]
    for name, sub in node.get("properties", {}).items():
        found += _rules(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _rules(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_only_a_grants_spec_is_immutable(kind: str) -> None:
    schema = crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    if kind in IMMUTABLE_SPECS:
        assert _rules(schema) == [(".spec", "self == oldSelf")]
        (rule,) = schema["properties"]["spec"]["x-kubernetes-validations"]
        assert rule["message"] == IMMUTABLE_SPECS[kind]
        # A transition rule must sit where old and new objects correlate: not inside a list
        # item, and the spec itself must be an object the server can compare.
        assert schema["properties"]["spec"]["type"] == "object"
    else:
        assert _rules(schema) == []
    assert set(IMMUTABLE_SPECS) == {"Grant"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_grant_crd_with_its_rule_validates(version: str) -> None:
    grant_crd = crd(KINDS["Grant"])
    assert "x-kubernetes-validations" in json.dumps(grant_crd)
    assert validate_core(grant_crd, version) == version


def test_the_grant_rule_refuses_a_changed_spec() -> None:
    import cel  # the CEL evaluator aviator's placement uses for DRA selectors

    schema = crd(KINDS["Grant"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = schema["properties"]["spec"]["x-kubernetes-validations"]
    spec = {
        "agent": "team-a/bot",
        "actions": ["infer"],
        "resources": ["team-a/chat"],
        "purpose": "incident 42",
        "durationSeconds": 900,
    }

    def holds(new: dict[str, Any]) -> bool:
        return bool(cel.evaluate(rule["rule"], {"self": new, "oldSelf": spec}))

    assert holds(dict(spec))
    assert not holds({**spec, "durationSeconds": 86400})
    assert not holds({**spec, "resources": ["team-a/chat", "team-a/other"]})
