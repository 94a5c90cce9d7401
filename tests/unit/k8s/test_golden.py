"""Golden files: ``aviator render -f examples/X.yaml`` for every example with ModelDeployments.

A golden file is the exact stdout of ``aviator render -f examples/X.yaml --image
aviator:golden`` (a fixed image, so that a version bump does not touch every golden file). When
rendering changes on purpose, regenerate them and review the diff:

    AVIATOR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/k8s/test_golden.py

Every object in every golden file is also validated (core kinds strictly for each supported
Kubernetes version, InferencePools against the vendored upstream CRD), so a regenerated file
cannot silently carry an invalid manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from tests.unit.k8s.validation import (
    EXAMPLES,
    KUBERNETES_VERSIONS,
    MISSING_PICKER,
    pool_errors,
    validate_core,
)
from typer.testing import CliRunner

from aviator.cli.main import app

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("AVIATOR_UPDATE_GOLDEN") == "1"

WITH_MODEL_DEPLOYMENTS = sorted(
    p.name
    for p in EXAMPLES.glob("*.yaml")
    if any(d and d.get("kind") == "ModelDeployment" for d in yaml.safe_load_all(p.read_text()))
)


def test_the_examples_with_model_deployments_are_found() -> None:
    assert {"quickstart.yaml", "fleet.yaml"} <= set(WITH_MODEL_DEPLOYMENTS)


@pytest.mark.parametrize("example", WITH_MODEL_DEPLOYMENTS)
def test_render_matches_the_golden_file(example: str) -> None:
    # stdout holds only manifests (notes go to stderr), so the path spelling does not matter.
    result = CliRunner().invoke(
        app,
        ["render", "-f", str(EXAMPLES / example), "--image", "aviator:golden"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    golden = GOLDEN / f"{Path(example).stem}.yaml"
    if UPDATE:
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text(), (
        f"regenerate with AVIATOR_UPDATE_GOLDEN=1 ({golden})"
    )


@pytest.mark.parametrize("example", WITH_MODEL_DEPLOYMENTS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_golden_objects_validate(example: str, version: str) -> None:
    objects = list(yaml.safe_load_all((GOLDEN / f"{Path(example).stem}.yaml").read_text()))
    assert objects
    for obj in objects:
        if obj["apiVersion"] != "inference.networking.k8s.io/v1":
            assert validate_core(obj, version) == version


@pytest.mark.parametrize("example", WITH_MODEL_DEPLOYMENTS)
def test_golden_inference_pools_validate_against_the_upstream_crd(example: str) -> None:
    objects = list(yaml.safe_load_all((GOLDEN / f"{Path(example).stem}.yaml").read_text()))
    pools = [o for o in objects if o["kind"] == "InferencePool"]
    assert pools
    # Rendered without --endpoint-picker: only the v1.0.0 CRD's required endpointPickerRef
    # (optional from v1.5.0) may be missing.
    for pool in pools:
        assert pool_errors(pool) == MISSING_PICKER, pool["metadata"]["name"]
    # The same examples with a picker: no error at all.
    result = CliRunner().invoke(
        app, ["render", "-f", str(EXAMPLES / example), "--endpoint-picker", "epp:9002"]
    )
    assert result.exit_code == 0, result.stderr
    picked = [o for o in yaml.safe_load_all(result.stdout) if o["kind"] == "InferencePool"]
    assert len(picked) == len(pools)
    for pool in picked:
        assert pool_errors(pool) == [], pool["metadata"]["name"]


def test_no_stale_golden_files() -> None:
    expected = {f"{Path(name).stem}.yaml" for name in WITH_MODEL_DEPLOYMENTS}
    assert {p.name for p in GOLDEN.glob("*.yaml")} == expected
