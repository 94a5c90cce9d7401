from aviator.api.kinds import KINDS
from aviator.controlapi.openapi import build_document


def test_every_kind_has_schema_and_crud_paths() -> None:
    doc = build_document()
    schemas = doc["components"]["schemas"]
    for info in KINDS.values():
        assert info.kind in schemas and info.list_kind in schemas
        scope = "namespaces/{namespace}/" if info.namespaced else ""
        base = f"/apis/aviator.dev/v1alpha1/{scope}{info.plural}"
        assert set(doc["paths"][base]) == {"get", "post"}
        assert set(doc["paths"][base + "/{name}"]) == {"get", "put", "patch", "delete"}
        assert set(doc["paths"][base + "/{name}/status"]) == {"get", "put"}


def test_every_reference_resolves() -> None:
    doc = build_document()
    schemas = doc["components"]["schemas"]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.startswith("#/components/schemas/")
                assert ref.rsplit("/", 1)[1] in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_spec_schema_uses_wire_names() -> None:
    spec = build_document()["components"]["schemas"]["ModelDeploymentSpec"]
    assert "engineArgs" in spec["properties"] and "engine_args" not in spec["properties"]
    assert spec["required"] == ["model"]
