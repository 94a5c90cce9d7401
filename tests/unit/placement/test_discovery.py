"""Parsing what vendor tools print into DRA-shaped devices (recorded outputs, no hardware)."""

from aviator.api import admission, kinds
from aviator.placement import discovery

NVIDIA_SMI = """\
0, GPU-5a8c0e5e-1b7f-4c1e-9a1f-1d2b3c4d5e6f, NVIDIA H100 80GB HBM3, 81559, 9.0, 570.86.15, 00000000:18:00.0
1, GPU-6b9d1f6f-2c80-5d2f-ab20-2e3c4d5e6f70, NVIDIA H100 80GB HBM3, 81559, 9.0, 570.86.15, 00000000:2A:00.0
"""
ROCM_SMI = """\
device,Card series,Card model,Card vendor,Card SKU,VRAM Total Memory (B),VRAM Total Used Memory (B)
card0,AMD Instinct MI300X,0x74a1,Advanced Micro Devices Inc. [AMD/ATI],M3000100,206141652992,297615360
"""
HL_SMI = "0, HL-325L, 131072 MiB, 0000:19:00.0\n1, HL-325L, 131072 MiB, 0000:1a:00.0\n"


def node_with(devices: list[dict[str, object]]) -> dict[str, object]:
    body = {"metadata": {"name": "local"}, "spec": {"devices": devices}}
    return admission.admit(body, kind=kinds.NODE, namespace=None)


def test_nvidia_smi_gives_the_attributes_the_nvidia_dra_driver_publishes() -> None:
    devices = discovery.parse_nvidia_smi(NVIDIA_SMI)
    assert [d["name"] for d in devices] == ["gpu-0", "gpu-1"]
    first = devices[0]
    assert first["driver"] == "gpu.nvidia.com"
    assert first["attributes"]["productName"] == "NVIDIA H100 80GB HBM3"
    assert first["attributes"]["cudaComputeCapability"] == {"version": "9.0.0"}
    assert first["attributes"]["driverVersion"] == {"version": "570.86.15"}
    assert first["capacity"] == {"memory": "81559Mi"}
    node_with(devices)  # admissible as is


def test_rocm_smi_and_hl_smi() -> None:
    [amd] = discovery.parse_rocm_smi(ROCM_SMI)
    assert amd["driver"] == "gpu.amd.com"
    assert amd["attributes"]["productName"] == "AMD Instinct MI300X"
    assert amd["capacity"] == {"memory": "206141652992"}
    gaudi = discovery.parse_hl_smi(HL_SMI)
    assert [d["name"] for d in gaudi] == ["hpu-0", "hpu-1"]
    assert gaudi[0]["capacity"] == {"memory": "131072Mi"}
    node_with([amd, *gaudi])


def test_garbage_yields_no_devices() -> None:
    for parse in (discovery.parse_nvidia_smi, discovery.parse_rocm_smi, discovery.parse_hl_smi):
        assert parse("") == []
        assert parse("No devices were found\n") == []


def test_one_cpu_device_per_numa_node() -> None:
    devices = discovery.parse_cpus(
        cpuinfo="processor\t: 0\nmodel name\t: AMD EPYC 9654\n",
        meminfo="MemTotal:       24683652 kB\n",
        numa_nodes=[0, 1],
        machine="x86_64",
        cpu_count=8,
    )
    assert [d["name"] for d in devices] == ["cpudevnuma000", "cpudevnuma001"]
    assert devices[1]["attributes"] == {
        "architecture": "x86_64",
        "numaNode": 1,
        "productName": "AMD EPYC 9654",
    }
    assert devices[0]["capacity"] == {"cpu": "4", "memory": "12341826Ki"}
    node_with(devices)
