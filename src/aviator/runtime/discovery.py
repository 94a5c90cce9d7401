"""Discover the local machine as a ``Node``: GPUs through their vendors' tools, the CPU always.

Each tool is optional: a missing executable, a non-zero exit, a timeout or unparsable output is
logged and skipped (failing soft), so a machine without accelerators still yields a CPU node.
Parsing is pure and lives in ``aviator.placement.discovery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aviator.api.meta import GROUP_VERSION
from aviator.placement import discovery

log = logging.getLogger("aviator.runtime.discovery")

TOOL_TIMEOUT_S = 10.0
"""An accelerator tool that has not answered by then is skipped (a wedged driver must not block
start-up)."""

Parser = Callable[[str], list[dict[str, Any]]]

TOOLS: tuple[tuple[Sequence[str], Parser], ...] = (
    (
        [
            "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total,compute_cap,driver_version,pci.bus_id",
            "--format=csv,noheader,nounits",
        ],
        discovery.parse_nvidia_smi,
    ),
    (["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--csv"], discovery.parse_rocm_smi),
    (
        ["hl-smi", "-Q", "index,name,memory.total,bus_id", "-f", "csv,noheader"],
        discovery.parse_hl_smi,
    ),
)


async def run_tool(argv: Sequence[str], *, timeout: float = TOOL_TIMEOUT_S) -> str | None:
    """The tool's stdout, or None when it is absent or failed (logged, never raised)."""
    executable = shutil.which(argv[0])
    if executable is None:
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            *argv[1:],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.warning("device discovery: cannot run %s: %s", argv[0], exc)
        return None
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        log.warning("device discovery: %s did not answer within %.0fs; skipped", argv[0], timeout)
        return None
    if process.returncode != 0:
        log.warning("device discovery: %s exited with %s; skipped", argv[0], process.returncode)
        return None
    return stdout.decode(errors="replace")


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text()
    return ""


def _numa_nodes(root: Path = Path("/sys/devices/system/node")) -> list[int]:
    with contextlib.suppress(OSError):
        return sorted(
            int(p.name[4:])
            for p in root.iterdir()
            if p.name.startswith("node") and p.name[4:].isdigit()
        )
    return []


async def discover_local_node(
    *,
    name: str | None = None,
    tools: Sequence[tuple[Sequence[str], Parser]] = TOOLS,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The local machine as a Node wire object (devices renamed uniquely across tools)."""
    devices: list[dict[str, Any]] = []
    outputs = await asyncio.gather(*(run_tool(argv) for argv, _ in tools))
    for (argv, parse), output in zip(tools, outputs, strict=True):
        if output is None:
            continue
        try:
            found = parse(output)
        except (ValueError, IndexError) as exc:
            log.warning(
                "device discovery: cannot parse the output of %s (%s); skipped", argv[0], exc
            )
            continue
        log.info("device discovery: %s reported %d device(s)", argv[0], len(found))
        devices.extend(found)
    cpuinfo, meminfo = await asyncio.to_thread(
        lambda: (_read("/proc/cpuinfo"), _read("/proc/meminfo"))
    )
    devices.extend(
        discovery.parse_cpus(
            cpuinfo=cpuinfo,
            meminfo=meminfo,
            numa_nodes=await asyncio.to_thread(_numa_nodes),
            machine=platform.machine(),
            cpu_count=os.cpu_count() or 1,
        )
    )
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Node",
        "metadata": {
            "name": name or local_node_name(),
            "labels": {"aviator.dev/discovered": "true", **(labels or {})},
        },
        "spec": {"region": "", "zone": "", "devices": devices},
    }


def local_node_name() -> str:
    """The hostname as a DNS-1123 label (``local`` if nothing usable is left)."""
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in raw).strip("-")[:63]
    return cleaned or "local"
