"""Crashes and kills: nothing acknowledged is lost, nothing is duplicated, nothing is orphaned."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from tests.integration.plane import REPO, PlaneProcess, async_wait_until, pid_alive, wait_until

from aviator.api import errors, kinds
from aviator.client import Unavailable

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def external_md(name: str) -> dict[str, Any]:
    # Port 9 (discard) has no HTTP server: these replicas never become Ready, which is fine here —
    # they exercise the store and the controllers without starting processes.
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"name": f"m-{name}"},
            "engine": "external",
            "external": {"url": "http://127.0.0.1:9"},
            "replicas": 1,
        },
    }


def apply_quickstart(plane: PlaneProcess) -> None:
    """``aviator apply -f examples/quickstart.yaml`` (its code, in this process), then wait
    (through the API) until chat is Available."""
    plane.apply(REPO / "examples" / "quickstart.yaml")
    plane.wait_for_condition("modeldeployments", "chat", "Available", timeout=30)


def ready_replicas(plane: PlaneProcess) -> list[dict[str, Any]]:
    """The Ready replicas, read through the API (this is polled)."""
    return [
        r
        for r in plane.items("replicas")
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in r["status"].get("conditions", [])
        )
    ]


def test_a_killed_engine_is_restarted_and_routed_around(plane: PlaneProcess) -> None:
    apply_quickstart(plane)
    victim = ready_replicas(plane)[0]
    name, pid = victim["metadata"]["name"], victim["status"]["pid"]
    routed_as = f"default/{name}"  # the gateway names replicas namespace/name

    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with plane.gateway() as gw:
        assert metric(gw, f'aviator_gateway_endpoints{{model="{MODEL}"}}') == 2
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # The gateway's routing table drops the dead replica within 1 s ...
        wait_until(
            lambda: metric(gw, f'aviator_gateway_endpoints{{model="{MODEL}"}}') == 1,
            timeout=5,
            interval=0.01,
            message="gateway dropped the killed replica",
        )
        assert time.monotonic() - killed_at < 1.0
        # ... so no request is even tried on it: every one succeeds first time on the survivor.
        retries = metric(gw, "aviator_gateway_upstream_retries_total")
        for _ in range(10):
            resp = gw.post("/v1/chat/completions", json=body)
            assert resp.status_code == 200
            assert resp.headers["x-aviator-replica"] != routed_as or ready_again(plane, name)
        assert metric(gw, "aviator_gateway_upstream_retries_total") == retries

        # It is restarted, becomes Ready again, and gets traffic again.
        wait_until(
            lambda: ready_again(plane, name), timeout=20, message="replica restarted and Ready"
        )
        rep = plane.get("replicas", name)
        assert rep["status"]["restarts"] >= 1
        assert rep["status"]["pid"] != pid
        assert rep["status"]["lastExit"]["signal"] == signal.SIGKILL
        wait_until(
            lambda: (
                gw.post("/v1/chat/completions", json=body).headers.get("x-aviator-replica")
                == routed_as
            ),
            timeout=5,
            interval=0.01,
            message="traffic returned to the restarted replica",
        )


def metric(gw: httpx.Client, series: str) -> float:
    """The value of one series in the gateway's Prometheus exposition (0 when absent)."""
    for line in gw.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ready_again(plane: PlaneProcess, name: str) -> bool:
    return any(
        r["metadata"]["name"] == name and r["status"].get("restarts", 0) >= 1
        for r in ready_replicas(plane)
    )


async def test_kill9_of_the_plane_during_a_burst_of_applies_loses_nothing(
    plane: PlaneProcess,
) -> None:
    apply_quickstart(plane)
    engines_before = {r["metadata"]["name"]: r["status"]["pid"] for r in ready_replicas(plane)}
    gateway_before = int(plane.info["gatewayPid"])

    acknowledged: list[str] = []
    async with plane.client() as client:

        async def burst(worker: int) -> None:
            for i in range(1000):
                name = f"burst-{worker}-{i}"
                try:
                    await client.create(kinds.MODEL_DEPLOYMENT, external_md(name))
                except (Unavailable, errors.InternalError, httpx.HTTPError):
                    return  # the plane died mid-request: not acknowledged
                acknowledged.append(name)

        workers = [asyncio.create_task(burst(w)) for w in range(4)]
        await async_wait_until(
            lambda: len(acknowledged) >= 40, timeout=30, message="burst under way"
        )
        plane.kill9()
        await asyncio.gather(*workers)
    assert len(acknowledged) >= 40

    # Engines survive a crash of the plane (they run in their own sessions) ...
    assert all(pid_alive(pid) for pid in engines_before.values())
    # ... the orphaned gateway notices and stops by itself ...
    wait_until(lambda: not pid_alive(gateway_before), timeout=10, message="orphaned gateway exits")
    plane.start()
    assert int(plane.info["gatewayPid"]) != gateway_before
    async with plane.client() as client:
        items, _ = await client.list(kinds.MODEL_DEPLOYMENT, namespace="default")
        names = {i["metadata"]["name"] for i in items}
        missing = set(acknowledged) - names
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"

        async def converged() -> bool:
            reps, _ = await client.list(kinds.REPLICA, namespace="default")
            per_owner: dict[str, int] = {}
            for r in reps:
                owner = r["metadata"]["ownerReferences"][0]["name"]
                per_owner[owner] = per_owner.get(owner, 0) + 1
            return per_owner.get("chat") == 2 and all(
                per_owner.get(n) == 1 for n in names if n != "chat"
            )

        await async_wait_until(
            converged, timeout=60, interval=0.2, message="one replica per deployment"
        )
        reps, _ = await client.list(kinds.REPLICA, namespace="default")
        assert len(reps) == len(names) + 1  # chat has two

    # ... and the restarted plane adopted them instead of starting new ones: same pids, no orphans.
    wait_until(
        lambda: (
            {r["metadata"]["name"]: r["status"]["pid"] for r in ready_replicas(plane)}
            == engines_before
        ),
        timeout=20,
        message="engines adopted with their pids",
    )
    assert plane.stop() == 0
    wait_until(
        lambda: not any(pid_alive(p) for p in engines_before.values()),
        timeout=10,
        message="engines stopped with the plane",
    )


def test_sigint_stops_the_plane_and_every_engine(plane: PlaneProcess) -> None:
    apply_quickstart(plane)
    pids = plane.record_engine_pids()
    assert len(pids) == 2
    started = time.monotonic()
    assert plane.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 10
    assert not any(pid_alive(p) for p in pids)
    assert not (plane.data_dir / "plane.json").exists()
    # A second plane can take the data directory over and finds the deployment again.
    plane.start()
    plane.wait_for_condition("modeldeployments", "chat", "Available", timeout=30)


def test_a_second_plane_on_the_same_data_directory_is_refused(plane_dir: Path) -> None:
    # A plane of its own, and no gateway (what refuses is the data directory's lock).
    plane = PlaneProcess(data_dir=plane_dir)
    plane.start("--no-gateway")
    try:
        info = (plane_dir / "plane.json").read_text()
        second = plane.cli("up", "--api-port", "0", "--gateway-port", "0", timeout=30)
        # The refused plane leaves the running one's plane.json alone: it stays reachable.
        assert (plane_dir / "plane.json").read_text() == info
        assert plane.cli("get", "md").returncode == 0
    finally:
        plane.cleanup()
    assert second.returncode == 1
    assert "another aviator plane is running" in second.stderr
