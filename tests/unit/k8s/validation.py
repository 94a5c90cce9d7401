"""Shared helpers of the Kubernetes rendering tests: offline schema validation, cached.

``kubernetes_validate`` re-reads and re-parses its schema files (a large ``_definitions.json``)
on every call (~18 ms). The tests validate hundreds of objects, so the file reads are memoized
(the validation itself is still the library's, unchanged), and results are memoized by
(version, canonical JSON) for the session.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml
from jsonschema import Draft4Validator

from aviator.api import admission
from aviator.api.kinds import KINDS
from aviator.api.modeldeployment import ModelDeployment

KUBERNETES_VERSIONS = ("1.34", "1.35", "1.36", "1.37")
"""Every version aviator renders for; each must be bundled by kubernetes-validate (checked)."""

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
INFERENCE_POOL_CRD = (
    REPO / "src/aviator/k8s/schemas/inference.networking.k8s.io_inferencepools.yaml"
)
MISSING_PICKER = [(["spec"], "'endpointPickerRef' is a required property")]
"""The vendored CRD is release v1.0.0's, where endpointPickerRef is required (optional from
v1.5.0): the one error a pool rendered without --endpoint-picker may have against it."""


# Parsed schema files never change during a run; the library treats them as read-only.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=512)(  # type: ignore[method-assign]
    kubernetes_validate.utils.schema_contents
)


@functools.lru_cache(maxsize=4096)
def _validate_cached(text: str, version: str) -> str:
    return str(kubernetes_validate.validate(json.loads(text), version, strict=True))


def validate_core(obj: dict[str, Any], version: str) -> str:
    """Strict validation against the bundled Kubernetes schema; returns the schema version used."""
    return _validate_cached(json.dumps(obj, sort_keys=True), version)


def openapi_to_jsonschema(node: Any) -> Any:
    """An OpenAPI 3.0 CRD schema as Draft 4 JSON Schema: ``nullable`` becomes a ``null`` type.

    Draft 4 already spells ``exclusiveMinimum`` as a boolean; ``x-kubernetes-*`` keys are
    ignored by jsonschema, so preserve-unknown-fields nodes accept anything, as the API server
    would before pruning."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def crd_validator(crd: dict[str, Any]) -> Draft4Validator:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return Draft4Validator(openapi_to_jsonschema(schema))


@functools.lru_cache(maxsize=1)
def inference_pool_validator() -> Draft4Validator:
    """The vendored upstream InferencePool CRD's v1 schema (src/aviator/k8s/schemas/README.md)."""
    crd = yaml.safe_load(INFERENCE_POOL_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return Draft4Validator(openapi_to_jsonschema(version["schema"]["openAPIV3Schema"]))


def pool_errors(pool: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """(path, message) of every way ``pool`` fails the vendored InferencePool CRD."""
    return [
        (list(e.absolute_path), e.message) for e in inference_pool_validator().iter_errors(pool)
    ]


def example_documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def admitted_md(body: dict[str, Any]) -> ModelDeployment:
    """A ModelDeployment as the plane stores it (defaults applied)."""
    namespace = body.get("metadata", {}).get("namespace") or "default"
    raw = admission.admit(body, kind=KINDS["ModelDeployment"], namespace=namespace)
    return ModelDeployment.from_raw(raw)


def bundled_versions() -> set[str]:
    """``MAJOR.MINOR`` of every strict schema set kubernetes-validate ships."""
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return {
        p.name.removeprefix("v").split(".0-")[0]
        for p in root.iterdir()
        if p.name.endswith("-local-strict")
    }
