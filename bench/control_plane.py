"""Control-plane benchmarks: apply→Available, reconciling 1,000 deployments, idle memory.

Runs the real plane (``python -m aviator up``) in a temporary data directory on ephemeral loopback
ports, drives it through the Control API, and prints a Markdown table to paste into
docs/benchmarks.md. Budgets (DESIGN §10): apply→Available ≤ 2 s (simulated engine), reconcile
1,000 ModelDeployments ≤ 10 s (engine ``external``, so no processes), idle RSS ≤ 150 MB.

    python bench/control_plane.py [--deployments 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from aviator.api import kinds
from aviator.client import Client
from aviator.runtime.processes import free_port

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_plane(
    data_dir: Path, *, profile: Path | None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    argv = [sys.executable, "-m", "aviator", "--data-dir", str(data_dir), "up"]
    argv += ["--api-port", "0", "--gateway-port", "0"]
    if profile is not None:  # pyinstrument must be installed; it writes its report at exit
        renderer = "html" if profile.suffix == ".html" else "text"
        argv[1:1] = ["-m", "pyinstrument", "-r", renderer, "-o", str(profile)]
    with (data_dir.parent / "plane.out").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return proc, json.loads((data_dir / "plane.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("plane did not start")


def md(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def available(obj: dict[str, Any]) -> bool:
    status = obj.get("status", {})
    fresh = status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
    return fresh and any(
        c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions", [])
    )


async def apply_to_available(client: Client, *, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        name = f"bench-{i}"
        spec = {"model": {"name": f"bench-{i}"}, "engine": "sim", "replicas": 1}
        started = time.perf_counter()
        await client.create(kinds.MODEL_DEPLOYMENT, md(name, spec))
        while not available(await client.get(kinds.MODEL_DEPLOYMENT, name, namespace="default")):
            await asyncio.sleep(0.005)
        times.append(time.perf_counter() - started)
        await client.delete(kinds.MODEL_DEPLOYMENT, name, namespace="default")
    return times


async def reconcile_many(client: Client, *, count: int, url: str) -> tuple[float, float]:
    sem = asyncio.Semaphore(16)
    started = time.perf_counter()

    async def create(i: int) -> None:
        async with sem:
            spec = {
                "model": {"name": f"ext-{i}"},
                "engine": "external",
                "external": {"url": url},
                "replicas": 1,
            }
            await client.create(kinds.MODEL_DEPLOYMENT, md(f"many-{i}", spec))

    await asyncio.gather(*(create(i) for i in range(count)))
    created = time.perf_counter() - started
    while True:
        items, _ = await client.list(kinds.MODEL_DEPLOYMENT, namespace="default", selector=None)
        done = sum(
            1 for item in items if item["metadata"]["name"].startswith("many-") and available(item)
        )
        if done >= count:
            return created, time.perf_counter() - started
        await asyncio.sleep(0.1)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "aviator"
        proc, info = start_plane(data_dir, profile=args.profile)
        sim = None
        try:
            token = (data_dir / "admin.token").read_text().strip()
            async with Client(info["apiUrl"], token=token, timeout=60) as client:
                await asyncio.sleep(1.0)
                idle_empty = rss_mb(proc.pid)
                times = await apply_to_available(client, runs=args.runs)
                await client.create(
                    kinds.MODEL_DEPLOYMENT,
                    md("chat", {"model": {"name": "chat"}, "engine": "sim", "replicas": 2}),
                )
                while not available(
                    await client.get(kinds.MODEL_DEPLOYMENT, "chat", namespace="default")
                ):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(3.0)
                idle_quickstart = rss_mb(proc.pid)

                port = free_port("127.0.0.1")
                sim = subprocess.Popen(
                    [sys.executable, "-m", "aviator", "sim", "--port", str(port), "--model", "ext"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(url + "/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.05)
                created_s, total_s = await reconcile_many(client, count=args.deployments, url=url)
                loaded = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            if sim is not None:
                sim.terminate()
                sim.wait()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )
    print()
    print("| measurement | result | budget |")
    print("|---|---|---|")
    print(
        f"| apply → Available, 1 simulated replica ({args.runs} runs) | median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s | ≤ 2 s |"
    )
    print(
        f"| reconcile {args.deployments} ModelDeployments (engine external) to Available | {total_s:.1f} s "
        f"(creates acknowledged after {created_s:.1f} s) | ≤ 10 s |"
    )
    print(f"| plane RSS, idle, empty | {idle_empty:.0f} MB | |")
    print(
        f"| plane RSS, idle, quickstart applied (2 simulated replicas) | {idle_quickstart:.0f} MB | ≤ 150 MB |"
    )
    print(f"| plane RSS with {args.deployments} deployments + replicas | {loaded:.0f} MB | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--profile", type=Path, help="profile the plane with pyinstrument into this HTML file"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
