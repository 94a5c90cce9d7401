"""Local discovery fails soft: missing, failing or hanging tools are skipped; the CPU is always there."""

from __future__ import annotations

import sys
from pathlib import Path

from aviator.api import admission, kinds
from aviator.runtime import discovery


def fake_tool(tmp_path: Path, name: str, script: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{script}\n")
    path.chmod(0o755)
    return str(path)


async def test_a_machine_without_accelerators_is_a_cpu_node() -> None:
    node = await discovery.discover_local_node(
        name="here", tools=[(["no-such-tool-xyz"], lambda text: [])]
    )
    admission.admit(node, kind=kinds.NODE, namespace=None)
    drivers = {d["driver"] for d in node["spec"]["devices"]}
    assert drivers == {"dra.cpu"}
    assert node["metadata"]["labels"]["aviator.dev/discovered"] == "true"


async def test_tools_that_fail_or_hang_are_skipped_and_good_ones_used(tmp_path: Path) -> None:
    good = fake_tool(
        tmp_path, "good-smi", "print('0, GPU-1, NVIDIA L4, 23034, 8.9, 570.1, 00000000:01:00.0')"
    )
    bad = fake_tool(tmp_path, "bad-smi", "import sys; sys.exit(3)")
    slow = fake_tool(tmp_path, "slow-smi", "import time; time.sleep(30)")
    from aviator.placement.discovery import parse_nvidia_smi

    assert await discovery.run_tool([slow], timeout=0.2) is None
    node = await discovery.discover_local_node(
        name="here", tools=[([good], parse_nvidia_smi), ([bad], parse_nvidia_smi)]
    )
    products = [
        d["attributes"].get("productName")
        for d in node["spec"]["devices"]
        if d["driver"] == "gpu.nvidia.com"
    ]
    assert products == ["NVIDIA L4"]


def test_the_node_name_is_a_dns_label() -> None:
    name = discovery.local_node_name()
    assert name and len(name) <= 63 and name == name.lower()
