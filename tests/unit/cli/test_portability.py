"""``aviator portability``: what it prints, and the command against a real Control API."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aviator.api import kinds
from aviator.cli import main
from aviator.cli.portability import fleet_lines, render, table_rows
from aviator.placement.portability import FleetReport, report

from .conftest import TOKEN, ApiServer

MD = kinds.MODEL_DEPLOYMENT
REP = kinds.REPLICA
NVIDIA, AMD, GAUDI = "gpu.nvidia.com", "gpu.amd.com", "gaudi.intel.com"
ENGINES = ["vllm", "sglang", "llamacpp", "sim"]


def path(driver: str, engines: list[str] | None = None) -> dict[str, Any]:
    return {
        "request": driver, "deviceClass": driver, "driver": driver, "product": None, "count": 1,
        "devices": 4, "free": 4, "replicas": 4, "fitsNow": 4,
        "engines": ENGINES if engines is None else engines,
    }  # fmt: skip


def md(
    name: str, *classes: str, namespace: str = "default", engine: str = "auto"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": f"org/{name}"}, "engine": engine}
    if len(classes) == 1:
        spec["accelerators"] = {"deviceClassName": classes[0]}
    elif classes:
        spec["accelerators"] = {"firstAvailable": [{"deviceClassName": c} for c in classes]}
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec,
    }


def with_paths(doc: dict[str, Any], *paths: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "status": {"observedGeneration": 1, "alternatives": list(paths)}}


def replica(
    name: str, owner: str, *devices: tuple[str, str], node: str, namespace: str = "default"
) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Replica",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"aviator.dev/model-deployment": owner},
        },
        "spec": {
            "model": {"name": f"org/{owner}"},
            "engine": "sim",
            "node": node,
            "devices": [{"request": d, "driver": d, "device": dev} for d, dev in devices],
        },
    }


def sample() -> FleetReport:
    """chat: NVIDIA only, on 5 H100s; reasoning: AMD or NVIDIA, on 4 MI300X; summarize: Intel."""
    deployments = [
        with_paths(md("chat", NVIDIA), path(NVIDIA), path(NVIDIA)),
        with_paths(md("reasoning", AMD, NVIDIA), path(AMD), path(NVIDIA)),
        with_paths(md("summarize", GAUDI), path(GAUDI, ["vllm", "sim"])),
        with_paths(md("tpu-only", "tpu.google.com")),
        with_paths(md("echo", engine="sim")),
    ]
    replicas = [
        replica("chat-0", "chat", *((NVIDIA, f"gpu-{i}") for i in range(5)), node="h100-a"),
        replica("reasoning-0", "reasoning", *((AMD, f"gpu-{i}") for i in range(4)), node="mi300x"),
        replica("summarize-0", "summarize", (GAUDI, "hpu-0"), node="gaudi3-a"),
    ]
    return report(deployments, replicas)


# -- formatting ----------------------------------------------------------------------------------


def test_table_one_row_per_deployment_then_the_fleet() -> None:
    assert render(sample(), namespace="default").splitlines() == [
        "NAME        PATHS   VENDORS      ENGINES                    RUNS-ON   FLAGS",
        "chat        2       NVIDIA       vllm,sglang,llamacpp,sim   NVIDIA    single-path",
        "echo        -       any          sim                        <none>    <none>",
        "reasoning   2       AMD,NVIDIA   vllm,sglang,llamacpp,sim   AMD       <none>",
        "summarize   1       Intel        vllm,sim                   Intel     single-path",
        "tpu-only    0       <none>       <none>                     <none>    no-path",
        "",
        "allocated devices by vendor (namespace default): NVIDIA 5 (50.0%), AMD 4 (40.0%), "
        "Intel 1 (10.0%); 10 in all",
        "vendor concentration (HHI): 4,200 — highly concentrated",  # 50² + 40² + 10²
    ]


def test_across_all_namespaces_the_namespace_comes_first() -> None:
    rows = table_rows(sample(), all_namespaces=True)
    assert rows[0] == ["NAMESPACE", "NAME", "PATHS", "VENDORS", "ENGINES", "RUNS-ON", "FLAGS"]
    assert rows[1][:2] == ["default", "chat"]
    assert fleet_lines(sample(), namespace=None)[0].startswith("allocated devices by vendor: ")


def test_without_allocated_devices_the_hhi_is_undefined() -> None:
    empty = report([with_paths(md("echo", engine="sim"))], [])
    assert fleet_lines(empty, namespace="default") == [
        "allocated devices by vendor (namespace default): none",
        "vendor concentration (HHI): undefined — no devices are allocated",
    ]
    assert render(report([], []), namespace=None).splitlines() == [
        "allocated devices by vendor: none",
        "vendor concentration (HHI): undefined — no devices are allocated",
    ]


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        ({NVIDIA: 1}, "10,000 — highly concentrated"),
        ({NVIDIA: 1, AMD: 1, GAUDI: 1, "tpu.google.com": 1}, "2,500 — moderately concentrated"),
        ({f"gpu.vendor{i}.com": 1 for i in range(8)}, "1,250 — unconcentrated"),
    ],
)
def test_hhi_is_printed_rounded_with_its_band(counts: dict[str, int], text: str) -> None:
    replicas = [
        replica(f"r{i}", "x", *((d, f"dev-{j}") for j in range(n)), node=f"node-{i}")
        for i, (d, n) in enumerate(counts.items())
    ]
    assert fleet_lines(report([], replicas), namespace=None)[1] == (
        f"vendor concentration (HHI): {text}"
    )


# -- the command ---------------------------------------------------------------------------------


@pytest.fixture
def fleet(api: ApiServer) -> ApiServer:
    api.app = main.app
    for namespace, name, classes, paths in [
        ("default", "chat", (NVIDIA,), (path(NVIDIA),)),
        ("default", "reasoning", (AMD, NVIDIA), (path(AMD), path(NVIDIA))),
        ("team", "summarize", (GAUDI,), (path(GAUDI, ["vllm", "sim"]),)),
    ]:
        api.create(MD, md(name, *classes, namespace=namespace), namespace=namespace)
        api.set_status(
            MD, name, {"observedGeneration": 1, "alternatives": list(paths)}, namespace=namespace
        )
    for doc in [
        replica("chat-0", "chat", (NVIDIA, "gpu-0"), (NVIDIA, "gpu-1"), node="h100-a"),
        replica("reasoning-0", "reasoning", (AMD, "gpu-0"), node="mi300x-a"),
        replica("summarize-0", "summarize", (GAUDI, "hpu-0"), node="gaudi3-a", namespace="team"),
    ]:
        api.create(REP, doc, namespace=doc["metadata"]["namespace"])
    return api


def test_the_command_reports_one_namespace_like_get(fleet: ApiServer) -> None:
    result = fleet.run(["portability"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["NAME", "chat", "reasoning"]
    assert lines[1].split()[-1] == "single-path"
    assert lines[2].split()[-1] == "<none>"
    assert lines[-2] == (
        "allocated devices by vendor (namespace default): NVIDIA 2 (66.7%), AMD 1 (33.3%); 3 in all"
    )
    assert lines[-1] == "vendor concentration (HHI): 5,556 — highly concentrated"

    team = fleet.run(["portability", "-n", "team"])
    assert team.stdout.splitlines()[1].split() == [
        "summarize", "1", "Intel", "vllm,sim", "Intel", "single-path",
    ]  # fmt: skip
    assert (
        team.stdout.splitlines()[-1] == "vendor concentration (HHI): 10,000 — highly concentrated"
    )

    nobody = fleet.run(["portability", "-n", "empty"])
    assert nobody.exit_code == 0
    assert nobody.stderr == "No resources found in empty namespace.\n"
    assert nobody.stdout.splitlines()[-1].endswith("undefined — no devices are allocated")


def test_the_command_across_all_namespaces_as_json_and_yaml(fleet: ApiServer) -> None:
    table = fleet.run(["portability", "-A"])
    assert table.exit_code == 0, table.output
    assert [line.split()[:2] for line in table.stdout.splitlines()[:4]] == [
        ["NAMESPACE", "NAME"], ["default", "chat"], ["default", "reasoning"], ["team", "summarize"],
    ]  # fmt: skip

    result = fleet.run(["portability", "-A", "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    flags = {d["name"]: d["flags"] for d in doc["deployments"]}
    assert flags == {"chat": ["single-path"], "reasoning": [], "summarize": ["single-path"]}
    assert doc["fleet"]["allocatedDevices"] == 4
    assert [(v["vendor"], v["devices"]) for v in doc["fleet"]["byVendor"]] == [
        ("NVIDIA", 2), ("AMD", 1), ("Intel", 1),
    ]  # fmt: skip
    assert doc["fleet"]["hhi"] == pytest.approx(3_750)
    assert doc["fleet"]["concentration"] == "highly concentrated"
    assert yaml.safe_load(fleet.run(["portability", "-A", "-o", "yaml"]).stdout) == doc


def test_usage_errors_and_connection_problems(fleet: ApiServer, tmp_path: Path) -> None:
    bad = fleet.run(["portability", "-o", "wide"])
    assert bad.exit_code == 2
    assert "unknown output format 'wide'; use one of: table, json, yaml" in bad.stderr

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    down = fleet.run(["--server", url, "portability"])
    assert down.exit_code == 1
    assert (
        down.stderr == f"error: cannot reach the Control API at {url}; is `aviator up` running?\n"
    )
    assert TOKEN not in down.output

    missing = CliRunner().invoke(main.app, ["--data-dir", str(tmp_path / "none"), "portability"])
    assert missing.exit_code == 1 and "no running plane found" in missing.stderr
