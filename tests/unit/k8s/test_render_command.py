"""``aviator render``: inputs, options and errors of the command (the mapping is in test_render)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import Result
from tests.unit.k8s.validation import EXAMPLES
from typer.testing import CliRunner

from aviator.cli.main import app

LIVE = """
apiVersion: aviator.dev/v1alpha1
kind: ModelDeployment
metadata: {name: chat, namespace: team-a, uid: 0b6a2c3e-1111-4222-8333-444455556666}
spec:
  model: {name: m}
  engine: sim
  replicas: 1
status:
  desiredReplicas: 3
"""


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["render", *args], input=stdin)


def test_a_live_object_keeps_its_uid_and_the_planes_replica_count() -> None:
    result = invoke("-f", "-", stdin=LIVE)
    assert result.exit_code == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    for obj in objects:
        assert (
            obj["metadata"]["ownerReferences"][0]["uid"] == "0b6a2c3e-1111-4222-8333-444455556666"
        )
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3


def test_options_reach_the_manifests() -> None:
    result = invoke(
        "-f", "-", "--image", "reg/aviator:9", "--endpoint-picker", "epp:9100", "--fail-open",
        "--k8s-version", "1.37", stdin=LIVE,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    objects = {o["kind"]: o for o in yaml.safe_load_all(result.stdout)}
    assert (
        objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "reg/aviator:9"
    )
    assert objects["InferencePool"]["spec"]["endpointPickerRef"] == {
        "kind": "Service", "name": "epp", "port": {"number": 9100}, "failureMode": "FailOpen",
    }  # fmt: skip


def test_engine_images_can_be_pinned() -> None:
    text = LIVE.replace("engine: sim", "engine: vllm")
    result = invoke("-f", "-", "--engine-image", "vllm=vllm/vllm-openai:v0.11.0", stdin=text)
    assert result.exit_code == 0, result.stderr
    assert "image: vllm/vllm-openai:v0.11.0" in result.stdout


def test_engine_images_can_be_pinned_per_driver() -> None:
    text = LIVE.replace("engine: sim", "engine: vllm").replace(
        "replicas: 1\n", "replicas: 1\n  accelerators: {deviceClassName: gpu.amd.com}\n"
    )
    result = invoke(
        "-f", "-",
        "--engine-image", "vllm=reg/cuda:1",
        "--engine-image", "vllm@gpu.amd.com=reg/rocm:1",
        stdin=text,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "image: reg/rocm:1" in result.stdout
    assert "unverified" not in result.stderr  # a pinned image is the user's word


def test_other_kinds_are_skipped_with_a_note() -> None:
    result = invoke(
        "-f", str(EXAMPLES / "governance.yaml"), "-f", str(EXAMPLES / "quickstart.yaml")
    )
    assert result.exit_code == 0, result.stderr
    assert "skipped: applied as a custom resource itself" in result.stderr
    node = invoke("-f", str(EXAMPLES / "inventory-mixed.yaml"))
    assert node.exit_code == 1
    assert "no ModelDeployment" in node.stderr


def test_errors_name_the_document_and_field_and_print_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        LIVE
        + "---\n"
        + LIVE.replace("name: chat", "name: other").replace("engine: sim", "engine: tgi")
    )
    result = invoke("-f", str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "bad.yaml" in result.stderr
    assert "spec.engine" in result.stderr


def test_bad_options() -> None:
    for args, message in (
        (["--k8s-version", "1.33"], "too old"),
        (["--engine-image", "tgi=x"], "unknown engine 'tgi'"),
        (["--engine-image", "vllm"], "ENGINE[@DRIVER]=IMAGE"),
        (["--engine-image", "vllm@GPU.AMD=x"], "lower case"),
        (["--engine-image", "vllm@.amd=x"], "DNS subdomain"),
        (["--endpoint-picker", "epp:0"], "1-65535"),
        (["--endpoint-picker", "EPP"], "service name 'EPP'"),
    ):
        result = invoke("-f", "-", *args, stdin=LIVE)
        assert result.exit_code == 1, args
        assert message in result.stderr, result.stderr
