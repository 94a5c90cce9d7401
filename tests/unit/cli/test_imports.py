"""``get``, ``describe``, ``delete``, ``token``, ``keys`` and ``grant`` name objects: they never
import a kind's pydantic model.

The registry (``aviator.api.kinds``) names each model by ``module:Class`` and imports it on first
use, and ``aviator.cli.manifests`` imports admission only to validate. These tests run the real
``aviator`` entry point in a fresh interpreter, then look at its ``sys.modules``: an import that
drags the models back in (about half of such a command's start-up) fails here.

pydantic itself is imported by typer (0.29) as soon as it builds a command with typed options, so
the commands are held to importing none of aviator's models; the modules alone, to no pydantic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aviator.api import kinds

from .conftest import TOKEN, ApiServer

MODEL_MODULES = frozenset(
    {
        "aviator.api.admission",
        "aviator.api.meta",
        "aviator.api.resource",
        *(info.model_ref.partition(":")[0] for info in kinds.KINDS.values()),
    }
)
"""What a command that only names objects must not import: the models and what builds them."""

PROBE = """
import json, sys
args = json.loads(sys.argv[1])
sys.argv = ["aviator", *args]
from aviator.cli.main import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
print("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def run_aviator(*args: str, cwd: Path) -> tuple[int, str, set[str]]:
    """Run ``aviator ARGS`` in a fresh interpreter: exit code, its output, the modules it imported."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AVIATOR_SERVER", "AVIATOR_TOKEN", "AVIATOR_DATA_DIR", "AVIATOR_NAMESPACE")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=True,
    )
    output, _, last = done.stdout.rstrip("\n").rpartition("\n")
    probe: dict[str, Any] = json.loads(last)
    return probe["code"], output + done.stderr, set(probe["modules"])


def test_the_registry_imports_no_model() -> None:
    code = "import sys, aviator.api.kinds; print(sorted(m for m in sys.modules if 'pydantic' in m))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_the_resource_commands_module_imports_no_model() -> None:
    code = "import sys, aviator.cli.resources; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert MODEL_MODULES.isdisjoint(loaded), sorted(MODEL_MODULES.intersection(loaded))
    assert "pydantic" not in loaded


def test_get_without_a_plane_imports_no_model(tmp_path: Path) -> None:
    code, output, modules = run_aviator("--data-dir", str(tmp_path), "get", "md", cwd=tmp_path)
    assert code == 1
    assert "no running plane found" in output
    assert MODEL_MODULES.isdisjoint(modules), sorted(MODEL_MODULES & modules)


@pytest.mark.parametrize(
    "args", [["token", "issue", "--help"], ["grant", "request", "--help"], ["keys", "--help"]]
)
def test_the_identity_and_grant_commands_import_no_model(tmp_path: Path, args: list[str]) -> None:
    code, output, modules = run_aviator(*args, cwd=tmp_path)
    assert code == 0, output
    assert MODEL_MODULES.isdisjoint(modules), sorted(MODEL_MODULES & modules)


@pytest.fixture
def served(api: ApiServer) -> ApiServer:
    body = {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat"},
        "spec": {"model": {"name": "org/chat-model"}, "engine": "sim"},
    }
    api.create(kinds.MODEL_DEPLOYMENT, body)
    return api


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["get", "md"], "chat"),
        (["get", "md", "-o", "wide", "-A"], "chat"),
        (["get", "md/chat", "-o", "yaml"], "name: chat"),
        (["get", "rep"], "No resources found"),
        (["describe", "md", "chat"], "chat"),
        (["delete", "md", "chat"], '"chat" deleted'),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else "",
)
def test_naming_commands_against_a_server_import_no_model(
    served: ApiServer, tmp_path: Path, args: list[str], shown: str
) -> None:
    code, output, modules = run_aviator(
        "--server", served.url, "--token", TOKEN, *args, cwd=tmp_path
    )
    assert (code, shown in output) == (0, True), output
    assert MODEL_MODULES.isdisjoint(modules), sorted(MODEL_MODULES & modules)


def test_delete_from_a_manifest_reads_it_without_the_models(
    served: ApiServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "chat.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "aviator.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "chat"},
            }
        )
    )
    code, output, modules = run_aviator(
        "--server", served.url, "--token", TOKEN, "delete", "-f", str(manifest), cwd=tmp_path
    )
    assert (code, '"chat" deleted' in output) == (0, True), output
    assert MODEL_MODULES.isdisjoint(modules), sorted(MODEL_MODULES & modules)


def test_apply_validates_with_the_models(served: ApiServer, tmp_path: Path) -> None:
    """The probe's control: ``apply`` admits each document locally, so it imports the models."""
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "aviator.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "chat"},
                "spec": {"model": {"name": "m"}, "engine": "sim", "replicas": -1},
            }
        )
    )
    code, output, modules = run_aviator(
        "--server", served.url, "--token", TOKEN, "apply", "-f", str(manifest), cwd=tmp_path
    )
    assert code == 1
    assert "nothing applied" in output
    assert {"pydantic", "aviator.api.modeldeployment"} <= modules
