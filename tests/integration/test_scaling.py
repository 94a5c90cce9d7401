"""Scaling on the real plane: an SLO sets the replica count; the autoscaler follows load."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from tests.integration.plane import PlaneProcess, async_wait_until, wait_until


@pytest.fixture(scope="module")
def shared_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaneProcess]:
    """One plane for the module: each test deploys under its own name."""
    handle = PlaneProcess(data_dir=tmp_path_factory.mktemp("scaling") / "aviator")
    handle.start("--no-gateway")
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def plane(shared_plane: PlaneProcess) -> Iterator[PlaneProcess]:
    """The shared plane; what a test deployed is deleted after it, so its engines do not take
    the CPU from the next test's."""
    yield shared_plane
    shared_plane.delete_all("modeldeployments")


def apply(plane: PlaneProcess, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "aviator.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"model": {"name": "org/small-8B"}, "engine": "sim", **spec},
    }  # fmt: skip
    plane.apply(orjson.dumps(body).decode())


def md(plane: PlaneProcess, name: str) -> dict[str, Any]:
    """The deployment, read through the API (polls call this many times a second)."""
    return plane.get("modeldeployments", name)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"].get("conditions", ()) if c["type"] == type_)


def test_an_slo_sets_the_replica_count_within_the_bounds(plane: PlaneProcess) -> None:
    # One simulated replica: 4 sequences at once, 40 ms + 199 x 8 ms each: 0.9 x 4 / 1.632 s,
    # 2.2 req/s. 5 req/s need 3 replicas.
    sim = {"ttftMs": 40, "itlMs": 8, "maxNumSeqs": 4}
    slo = {"requestsPerSecond": 5, "promptTokens": 500, "outputTokens": 200, "ttftP90Ms": 500}
    apply(plane, "planned", simulator=sim, slo=slo, replicas={"min": 1, "max": 5})
    wait_until(lambda: md(plane, "planned")["status"].get("readyReplicas") == 3, timeout=30,
               message="three replicas ready")  # fmt: skip
    status = md(plane, "planned")["status"]
    assert status["desiredReplicas"] == 3
    assert status["capacity"]["attainable"] is True
    assert status["capacity"]["paths"][0]["replicas"] == 3
    assert status["capacity"]["paths"][0]["replicaRps"] == pytest.approx(2.206, abs=0.01)
    assert condition(md(plane, "planned"), "ScalingLimited")["status"] == "False"

    # replicas.max holds it back, and the condition says so
    apply(plane, "planned", simulator=sim, slo=slo, replicas={"min": 1, "max": 2})
    wait_until(lambda: md(plane, "planned")["status"].get("replicas") == 2, timeout=30,
               message="scaled down to the bound")  # fmt: skip
    limited = condition(md(plane, "planned"), "ScalingLimited")
    assert limited["status"] == "True"
    assert limited["message"] == "the SLO needs 3 replicas; replicas.max is 2"


def test_an_slo_no_replica_can_meet_is_reported(plane: PlaneProcess) -> None:
    slo = {"requestsPerSecond": 1, "ttftP90Ms": 10}
    apply(plane, "hopeless", simulator={"ttftMs": 40}, slo=slo, replicas={"min": 1, "max": 3})
    wait_until(lambda: "ScalingLimited" in str(md(plane, "hopeless")["status"]), timeout=30,
               message="scaling condition")  # fmt: skip
    obj = md(plane, "hopeless")
    assert obj["status"]["desiredReplicas"] == 1
    assert obj["status"]["capacity"]["attainable"] is False
    assert "no execution path meets TTFT p90 10 ms" in condition(obj, "ScalingLimited")["message"]


async def test_the_autoscaler_follows_queue_depth_up_and_back_down(plane: PlaneProcess) -> None:
    # One sequence at a time, each ~3 s: concurrent requests queue at once.
    apply(
        plane, "elastic",
        simulator={"ttftMs": 20, "itlMs": 30, "maxNumSeqs": 1},
        replicas={"min": 1, "max": 3},
        autoscaling={"targetQueueDepth": 1, "syncPeriodSeconds": 0.3,
                     "scaleDownStabilizationSeconds": 2},
    )  # fmt: skip
    wait_until(lambda: md(plane, "elastic")["status"].get("readyReplicas") == 1, timeout=30,
               message="first replica ready")  # fmt: skip
    endpoint = md(plane, "elastic")["status"]["endpoints"][0]["url"]

    async with httpx.AsyncClient(base_url=endpoint, timeout=60) as http:
        body = {"model": "org/small-8B", "prompt": "hello", "max_tokens": 100}
        # 11 waiting against a target of 1 (and ~30 s of work queued, so the queue stays long
        # while the test looks): up to the bound of 3 at once (no up window), and held there.
        load = [asyncio.create_task(http.post("/v1/completions", json=body)) for _ in range(12)]

        def limited_at_max() -> bool:
            obj = md(plane, "elastic")
            if obj["status"].get("desiredReplicas") != 3:
                return False
            cond = condition(obj, "ScalingLimited")
            return cond["status"] == "True" and "replicas.max is 3" in cond["message"]

        await async_wait_until(limited_at_max, timeout=30, message="scaled up to replicas.max")
        await async_wait_until(
            lambda: md(plane, "elastic")["status"].get("readyReplicas") == 3, timeout=30,
            message="three replicas ready",
        )  # fmt: skip
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)

    # Idle: back to replicas.min once the 2 s scale-down window has forgotten the busy readings.
    await async_wait_until(
        lambda: md(plane, "elastic")["status"].get("replicas") == 1, timeout=30,
        message="scaled back down to replicas.min",
    )  # fmt: skip
    assert md(plane, "elastic")["status"]["desiredReplicas"] == 1
