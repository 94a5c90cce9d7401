"""Reading manifests: documents, directories, stdin, and precise errors before anything is sent."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from aviator.api import errors, kinds
from aviator.cli import manifests
from aviator.cli.manifests import ManifestError

MD_YAML = """\
apiVersion: aviator.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
spec:
  model: {{name: m}}
"""


def md(name: str) -> str:
    return MD_YAML.format(name=name)


def problems(excinfo: pytest.ExceptionInfo[ManifestError]) -> list[str]:
    return list(excinfo.value.problems)


def test_multi_document_yaml_skips_empty_documents() -> None:
    text = "---\n" + md("a") + "---\n# only a comment\n---\n" + md("b") + "---\n"
    docs = manifests.parse_text(text, source="x.yaml")
    assert [(d.name, d.kind, d.index) for d in docs] == [
        ("a", kinds.MODEL_DEPLOYMENT, 1),
        ("b", kinds.MODEL_DEPLOYMENT, 3),
    ]
    assert docs[0].line == 2 and docs[1].line == 11
    assert docs[1].where == "x.yaml:11 (document 3)"
    assert docs[0].ref == "modeldeployment.aviator.dev/a"


def test_timestamps_stay_strings() -> None:
    text = md("a") + "  env: {BUILT: 2026-11-27T09:00:00Z}\n"
    (doc,) = manifests.parse_text(text.replace("spec:\n", "spec:\n  engine: sim\n"), source="x")
    assert doc.body["spec"]["env"]["BUILT"] == "2026-11-27T09:00:00Z"


def test_kind_list_expands_items() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "aviator.dev/v1alpha1", "kind": "Replica", "metadata": {"name": "r"}},
            {
                "apiVersion": "aviator.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "m"},
            },
        ],
    }
    docs = manifests.parse_text(json.dumps(listing), source="l.json", is_json=True)
    assert [(d.kind.kind, d.name, d.item) for d in docs] == [
        ("Replica", "r", 1),
        ("ModelDeployment", "m", 2),
    ]


def test_malformed_yaml_names_file_line_and_column() -> None:
    text = md("a") + "---\napiVersion: aviator.dev/v1alpha1\nkind: [ModelDeployment\nmetadata: {}\n"
    with pytest.raises(ManifestError) as excinfo:
        manifests.parse_text(text, source="bad.yaml")
    (problem,) = problems(excinfo)
    assert problem.startswith("bad.yaml:") and "malformed YAML" in problem
    line, column = problem.split(":")[1:3]
    assert int(line) >= 9 and int(column) >= 1


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(ManifestError) as excinfo:
        manifests.parse_text('{\n  "kind": ,\n}', source="bad.json", is_json=True)
    assert problems(excinfo) == ["bad.json:2:11: malformed JSON: Expecting value"]


def test_missing_fields_and_unknown_kinds_name_the_document() -> None:
    text = (
        "kind: ModelDeployment\nmetadata: {name: a}\n---\n"
        "apiVersion: aviator.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n"
        "apiVersion: v1\nkind: ModelDeployment\nmetadata: {name: m}\n---\n"
        "- just\n- a list\n"
    )
    with pytest.raises(ManifestError) as excinfo:
        manifests.parse_text(text, source="f.yaml")
    assert problems(excinfo) == [
        "f.yaml:1 (document 1): missing apiVersion",
        "f.yaml:4 (document 2): missing metadata.name",
        "f.yaml:8 (document 3): unknown kind 'Deployment'; known kinds: "
        "Agent, DeviceClass, Grant, ModelDeployment, Node, Policy, Replica",
        "f.yaml:12 (document 4): ModelDeployment is served as apiVersion aviator.dev/v1alpha1, not 'v1'",
        "f.yaml:16 (document 5): expected a mapping with apiVersion, kind and metadata, got list",
    ]


def test_load_directory_sorted_and_filtered(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(md("b"))
    (tmp_path / "a.yaml").write_text(md("a"))
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "apiVersion": "aviator.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "c"},
            }
        )
    )
    (tmp_path / "README.md").write_text("# not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.yaml").write_text(md("z"))
    assert [d.name for d in manifests.load([tmp_path])] == ["a", "b", "c"]


def test_load_stdin_and_files_together(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(md("file"))
    docs = manifests.load([str(path), "-"], stdin=io.StringIO(md("piped")))
    assert [(d.name, d.source) for d in docs] == [("file", str(path)), ("piped", "<stdin>")]


def test_load_reports_every_problem_and_returns_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(md("ok"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ModelDeployment\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError) as excinfo:
        manifests.load([good, bad, tmp_path / "missing.yaml", empty])
    assert problems(excinfo) == [
        f"{bad}:1 (document 1): missing apiVersion, metadata.name",
        f"the path {str(tmp_path / 'missing.yaml')!r} does not exist",
        f"no manifests (*.yaml, *.yml, *.json) in directory {empty}",
    ]


def test_load_without_objects_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "blank.yaml"
    path.write_text("# nothing\n---\n")
    with pytest.raises(ManifestError, match="no objects found in"):
        manifests.load([path])
    with pytest.raises(ManifestError, match="only once"):
        manifests.load(["-", "-"], stdin=io.StringIO(md("a")))


def test_desired_object_strips_server_fields_and_sets_namespace() -> None:
    text = md("a").replace(
        "  name: a\n",
        "  name: a\n  uid: u\n  resourceVersion: '7'\n  generation: 3\n"
        "  creationTimestamp: 2026-01-01T00:00:00Z\n  finalizers: [x]\n",
    )
    (doc,) = manifests.parse_text(text + "status: {readyReplicas: 1}\n", source="x")
    body = manifests.desired_object(doc, "team")
    assert body["metadata"] == {"name": "a", "finalizers": ["x"], "namespace": "team"}
    assert "status" not in body and "status" in doc.body  # the document itself is untouched


def test_validate_uses_admission_and_names_the_document() -> None:
    text = (
        md("a") + "---\n" + md("b").replace("model: {name: m}", "model: {name: m}\n  replicas: -2")
    )
    docs = manifests.parse_text(text, source="x.yaml")
    (failure,) = manifests.validate(docs, default_namespace="default")
    assert failure.document.name == "b" and not failure.ok
    first, *causes = failure.line.splitlines()
    assert first == "error: x.yaml:8 (document 2): ModelDeployment 'b' is invalid"
    assert causes and causes[0].startswith("  spec.replicas")


class RacingClient:
    """Answers like a Control API where another writer keeps getting in between."""

    def __init__(self, *, conflicts: int, current: dict[str, Any]) -> None:
        self.conflicts = conflicts
        self.current = current
        self.replaced: list[dict[str, Any]] = []

    async def create(
        self, kind: Any, obj: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        raise errors.AlreadyExists("exists")

    async def get(self, kind: Any, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return copy.deepcopy(self.current)

    async def replace(
        self, kind: Any, obj: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            raise errors.Conflict("stale resourceVersion")
        self.replaced.append(obj)
        return obj


def stored(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "a", "namespace": "default", "resourceVersion": "5", **meta},
        "spec": {"model": {"name": "old"}},
    }


async def test_apply_retries_conflicts_and_keeps_server_metadata() -> None:
    (doc,) = manifests.parse_text(md("a"), source="x")
    owners = [{"apiVersion": "v1", "kind": "Blueprint", "name": "b", "uid": "u"}]
    client = RacingClient(conflicts=2, current=stored(finalizers=["f"], ownerReferences=owners))
    outcome = await manifests.apply_one(client, doc, default_namespace="default")  # type: ignore[arg-type]
    assert outcome.ok and outcome.line == "modeldeployment.aviator.dev/a configured"
    (sent,) = client.replaced
    assert sent["metadata"] == {
        "name": "a",
        "namespace": "default",
        "resourceVersion": "5",
        "finalizers": ["f"],
        "ownerReferences": owners,
    }

    endless = RacingClient(conflicts=100, current=stored())
    failed = await manifests.apply_one(endless, doc, default_namespace="default")  # type: ignore[arg-type]
    assert failed.error is not None and failed.error.startswith("Error from server (Conflict): ")
    assert "kept changing" in failed.error


async def test_apply_refuses_to_update_a_terminating_object() -> None:
    (doc,) = manifests.parse_text(md("a"), source="x.yaml")
    client = RacingClient(conflicts=0, current=stored(deletionTimestamp="2026-11-27T09:00:00Z"))
    outcome = await manifests.apply_one(client, doc, default_namespace="default")  # type: ignore[arg-type]
    assert outcome.error is not None and "is being deleted" in outcome.error and not client.replaced
