"""The registry of kinds: resolving names, and models imported on first use."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from aviator.api import errors, kinds, meta, names, replica
from aviator.api.modeldeployment import ModelDeployment
from aviator.api.resource import Resource


@pytest.mark.parametrize(
    "name", ["md", "MD", "modeldeployment", "modeldeployments", "ModelDeployment", "mds"]
)
def test_resolve_model_deployment_by_any_name(name: str) -> None:
    assert kinds.resolve(name) is kinds.MODEL_DEPLOYMENT


def test_resolve_replica_short_names() -> None:
    assert kinds.resolve("rep") is kinds.REPLICA
    assert kinds.by_plural("replicas") is kinds.REPLICA


def test_unknown_kind_lists_known_ones() -> None:
    with pytest.raises(errors.NotFound, match="modeldeployments"):
        kinds.resolve("pods")


@pytest.mark.parametrize("info", kinds.KINDS.values(), ids=lambda i: i.kind)
def test_each_model_ref_imports_the_model_of_its_kind(info: kinds.KindInfo) -> None:
    model = info.model
    assert issubclass(model, Resource)
    assert info.kind == model.KIND
    assert f"{model.__module__}:{model.__qualname__}" == info.model_ref
    assert info.model is model


def test_a_model_ref_names_a_module_and_a_class() -> None:
    names = {"kind": "T", "plural": "ts", "singular": "t", "short_names": (), "namespaced": True}
    for wrong in ("aviator.api.agent.Agent", ":Agent", "aviator.api.agent:", "a:b:c"):
        with pytest.raises(ValueError, match="'module:Class'"):
            kinds.KindInfo(**names, model_ref=wrong)
    given = kinds.KindInfo(**names, model_ref="aviator.api.modeldeployment:ModelDeployment")
    assert given.model is ModelDeployment
    assert given.extra == {} and given.categories == ("aviator",)


def test_the_registry_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        kinds.AGENT.model_ref = "aviator.api.policy:Policy"  # type: ignore[misc]


def test_the_registry_and_the_names_import_no_pydantic() -> None:
    code = (
        "import sys, aviator.api.kinds, aviator.api.names; "
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'aviator.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == str(
        ["aviator.api", "aviator.api.errors", "aviator.api.kinds", "aviator.api.names"]
    )


def test_meta_and_replica_still_export_the_names() -> None:
    assert (meta.API_GROUP, meta.API_VERSION, meta.GROUP_VERSION) == (
        names.API_GROUP,
        names.API_VERSION,
        names.GROUP_VERSION,
    )
    assert meta.GROUP_VERSION == "aviator.dev/v1alpha1"
    assert (replica.LABEL_DEPLOYMENT, replica.LABEL_TEMPLATE_HASH, replica.RUNTIME_FINALIZER) == (
        "aviator.dev/model-deployment",
        "aviator.dev/template-hash",
        "aviator.dev/runtime",
    )
