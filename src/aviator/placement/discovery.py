"""Turning what the local machine reports into Node devices. Pure parsing, no I/O.

``aviator.runtime.discovery`` runs the tools (each optional, failing soft) and hands their output
here. The devices come out in the shape the upstream DRA drivers publish, so a discovered node and
a declared inventory are placed by the same rules:

- ``nvidia-smi --query-gpu=index,uuid,name,memory.total,compute_cap,driver_version,pci.bus_id
  --format=csv,noheader,nounits`` → driver ``gpu.nvidia.com`` (attributes of
  kubernetes-sigs/dra-driver-nvidia-gpu: type, uuid, productName, cudaComputeCapability,
  driverVersion, resource.kubernetes.io/pciBusID; capacity memory).
- ``rocm-smi --showproductname --showmeminfo vram --csv`` → driver ``gpu.amd.com``.
- ``hl-smi -Q index,name,memory.total,bus_id -f csv,noheader`` → driver ``gaudi.intel.com``.
- ``/proc/cpuinfo``, ``/proc/meminfo`` and ``/sys/devices/system/node`` → one ``dra.cpu`` device
  per NUMA node, as kubernetes-sigs/dra-driver-cpu groups them.

No GPU is present where this project is developed: the GPU parsers are tested against recorded
output of those tools, not against hardware.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

Device = dict[str, Any]


def _version(text: str) -> str | None:
    """``9.0`` → ``9.0.0``; ``570.86.15`` stays; anything else → None (attribute omitted)."""
    parts = re.findall(r"\d+", text)
    if not parts:
        return None
    parts = [*parts, "0", "0"][:3]
    return ".".join(str(int(p)) for p in parts)


def _rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in row]
        for row in csv.reader(io.StringIO(text))
        if any(c.strip() for c in row)
    ]


def parse_nvidia_smi(text: str) -> list[Device]:
    devices = []
    for row in _rows(text):
        if len(row) < 7 or not row[0].isdigit():
            continue
        index, uuid, name, memory_mib, compute_cap, driver_version, bus_id = row[:7]
        attributes: dict[str, Any] = {
            "type": "gpu",
            "uuid": uuid,
            "productName": name[:64],
            "index": int(index),
        }
        if (cc := _version(compute_cap)) is not None:
            attributes["cudaComputeCapability"] = {"version": cc}
        if (dv := _version(driver_version)) is not None:
            attributes["driverVersion"] = {"version": dv}
        if bus_id:
            attributes["resource.kubernetes.io/pciBusID"] = bus_id.lower()[-12:]
        capacity = (
            {"memory": f"{int(float(memory_mib))}Mi"}
            if memory_mib.replace(".", "").isdigit()
            else {}
        )
        devices.append(
            {
                "name": f"gpu-{index}",
                "driver": "gpu.nvidia.com",
                "attributes": attributes,
                "capacity": capacity,
            }
        )
    return devices


def parse_rocm_smi(text: str) -> list[Device]:
    """``rocm-smi --showproductname --showmeminfo vram --csv``: a header row, then ``card0,…``."""
    rows = _rows(text)
    if not rows:
        return []
    header = [h.lower() for h in rows[0]]

    def column(row: list[str], *needles: str) -> str:
        for i, name in enumerate(header):
            if all(n in name for n in needles) and i < len(row):
                return row[i]
        return ""

    devices = []
    for row in rows[1:]:
        card = row[0]
        if not card.lower().startswith("card"):
            continue
        index = card[4:]
        attributes: dict[str, Any] = {"type": "amdgpu"}
        product = column(row, "card series") or column(row, "card model")
        if product:
            attributes["productName"] = product[:64]
        capacity = {}
        total = column(row, "vram total memory")
        if total.isdigit():
            capacity["memory"] = total  # bytes
        devices.append(
            {
                "name": f"gpu-{index}",
                "driver": "gpu.amd.com",
                "attributes": attributes,
                "capacity": capacity,
            }
        )
    return devices


def parse_hl_smi(text: str) -> list[Device]:
    """``hl-smi -Q index,name,memory.total,bus_id -f csv,noheader``; memory is ``N MiB``."""
    devices = []
    for row in _rows(text):
        if len(row) < 3 or not row[0].isdigit():
            continue
        index, name, memory = row[:3]
        attributes: dict[str, Any] = {"productName": name[:64], "index": int(index)}
        if len(row) > 3 and row[3]:
            attributes["resource.kubernetes.io/pciBusID"] = row[3].lower()[-12:]
        mib = re.match(r"(\d+)", memory)
        capacity = {"memory": f"{mib.group(1)}Mi"} if mib else {}
        devices.append(
            {
                "name": f"hpu-{index}",
                "driver": "gaudi.intel.com",
                "attributes": attributes,
                "capacity": capacity,
            }
        )
    return devices


def parse_cpus(
    *, cpuinfo: str, meminfo: str, numa_nodes: list[int], machine: str, cpu_count: int
) -> list[Device]:
    """One ``dra.cpu`` device per NUMA node, CPUs and memory split evenly (what /proc tells)."""
    product = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith(("model name", "Model", "cpu model"))
        ),
        "",
    )
    mem_kib = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0
    )
    nodes = numa_nodes or [0]
    devices = []
    for numa in nodes:
        attributes: dict[str, Any] = {"architecture": machine, "numaNode": numa}
        if product:
            attributes["productName"] = product[:64]
        capacity = {"cpu": str(max(1, cpu_count // len(nodes)))}
        if mem_kib:
            capacity["memory"] = f"{mem_kib // len(nodes)}Ki"
        devices.append(
            {
                "name": f"cpudevnuma{numa:03d}",
                "driver": "dra.cpu",
                "attributes": attributes,
                "capacity": capacity,
            }
        )
    return devices
