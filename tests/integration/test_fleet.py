"""The fleet the plane plans on: a declared inventory, or the discovered local machine."""

from __future__ import annotations

from pathlib import Path

from tests.integration.plane import REPO, PlaneProcess


def test_inventory_nodes_and_builtin_device_classes(plane_dir: object) -> None:
    plane = PlaneProcess(data_dir=plane_dir)  # type: ignore[arg-type]
    plane.start("--no-gateway", "--inventory", str(REPO / "examples" / "inventory-mixed.yaml"))
    try:
        nodes = plane.items("nodes", namespace=None)
        assert sorted(n["metadata"]["name"] for n in nodes) == [
            "cpu-a", "cpu-b", "gaudi3-a", "h100-a", "l40s-a", "mi300x-a",
        ]  # fmt: skip
        h100 = next(n for n in nodes if n["metadata"]["name"] == "h100-a")
        assert h100["spec"]["devices"][0]["attributes"]["productName"] == {
            "string": "NVIDIA H100 80GB HBM3"
        }
        classes = plane.cli("get", "dc", "-o", "name").stdout.split()
        assert (
            "deviceclass.aviator.dev/gpu.nvidia.com" in classes
            and "deviceclass.aviator.dev/cpu" in classes
        )
        # A second start with the same inventory updates in place instead of failing.
        assert plane.stop() == 0
        plane.start("--no-gateway", "--inventory", str(REPO / "examples" / "inventory-mixed.yaml"))
        assert len(plane.items("nodes", namespace=None)) == 6
    finally:
        plane.cleanup()


def test_without_an_inventory_the_local_machine_is_discovered(plane_dir: Path) -> None:
    plane = PlaneProcess(data_dir=plane_dir)
    plane.start("--no-gateway")
    try:
        nodes = plane.items("nodes", namespace=None)
    finally:
        plane.cleanup()
    assert len(nodes) == 1
    [node] = nodes
    assert node["metadata"]["labels"]["aviator.dev/discovered"] == "true"
    assert {d["driver"] for d in node["spec"]["devices"]} >= {"dra.cpu"}


def test_an_inventory_with_other_kinds_is_refused_before_start(plane_dir: object) -> None:
    plane = PlaneProcess(data_dir=plane_dir)  # type: ignore[arg-type]
    result = plane.cli("up", "--inventory", str(REPO / "examples" / "quickstart.yaml"), timeout=30)
    assert result.returncode == 1
    assert "an inventory holds only Node objects" in result.stderr
