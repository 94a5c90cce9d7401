"""``aviator operator`` as a whole: flags to options, and the composition root running against
kmock through a kubeconfig, elected through a Lease, answering its liveness probe."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
from tests.unit.kube.kubeconfig import write_kubeconfig
from tests.unit.operator.cluster import (
    DEPLOYMENTS,
    GRANTS,
    WATCHED,
    VersionedEmulator,
    configuration,
    declare,
    eventually,
    objects,
    watched,
)
from tests.unit.operator.test_grants import grant, put
from tests.unit.operator.test_handlers import NS, cr, create_md

from aviator.cli.operator import options_from_flags
from aviator.k8s.install import OPERATOR_ARGS
from aviator.kube.api import KubeApi
from aviator.operator.objects import ObjectApi
from aviator.operator.runner import LivenessAddress, OperatorOptions, parse_liveness, run

FLAGS: dict[str, Any] = {
    "namespaces": [],
    "all_namespaces": False,
    "liveness": None,
    "field_manager": "aviator",
    "standalone": False,
    "lease_namespace": "aviator-system",
    "identity": "operator-0",
    "kubeconfig": None,
    "context": None,
    "image": "aviator:1",
    "engine_images": [],
    "endpoint_picker": None,
    "picker_fail_open": False,
    "k8s_version": "1.34",
    "resync_s": 300.0,
}


def test_the_install_bundles_arguments_parse() -> None:
    liveness = OPERATOR_ARGS[OPERATOR_ARGS.index("--liveness") + 1]
    options = options_from_flags(**{**FLAGS, "liveness": liveness})
    assert options.liveness == LivenessAddress(host="0.0.0.0", port=8081, path="/healthz")
    assert (options.namespaces, options.standalone, options.identity) == ((), False, "operator-0")


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"namespaces": ["a"], "all_namespaces": True}, "exclude each other"),
        ({"namespaces": ["Team_A"]}, "'Team_A': not a DNS label"),
        ({"lease_namespace": "-x"}, "'-x': not a DNS label"),
        ({"field_manager": "a b"}, "--field-manager"),
        ({"liveness": "http://0.0.0.0/healthz"}, "with a port"),
        ({"engine_images": ["vllm"]}, "--engine-image"),
        ({"k8s_version": "1.30"}, "too old"),
        ({"resync_s": -1.0}, "--resync"),
        ({"inference_pool": "maybe"}, "--inference-pool"),
    ],
)
def test_bad_flags_are_refused_by_name(flags: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        options_from_flags(**{**FLAGS, **flags})


def test_resync_zero_turns_it_off_and_namespaces_are_deduplicated() -> None:
    options = options_from_flags(**{**FLAGS, "resync_s": 0.0, "namespaces": ["a", "b", "a"]})
    assert options.resync_s is None
    assert options.namespaces == ("a", "b")


def test_the_inference_pool_mode_defaults_to_auto() -> None:
    assert options_from_flags(**FLAGS).inference_pool == "auto"
    assert options_from_flags(**{**FLAGS, "inference_pool": "off"}).inference_pool == "off"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.kmock(cls=VersionedEmulator)
async def test_the_operator_runs_elected_from_a_kubeconfig(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    declare(kmock)
    port = free_port()
    options = OperatorOptions(
        liveness=parse_liveness(f"http://127.0.0.1:{port}/healthz"),
        lease_namespace="aviator-system",
        identity="operator-0",
        kubeconfig=str(write_kubeconfig(tmp_path / "config", str(kmock.url).rstrip("/"))),
        resync_s=None,
        lease_retry_s=0.2,
    )
    task = asyncio.create_task(run(options))
    try:
        async with aiohttp.ClientSession() as http:

            async def alive() -> dict[str, Any]:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 200
                    return dict(await response.json())

            lease = await eventually(
                lambda: objects(kmock, "coordination.k8s.io/v1/leases").get(
                    ("aviator-system", "aviator-operator")
                )
            )
            assert lease["spec"]["holderIdentity"] == "operator-0"
            await eventually(lambda: watched(kmock) >= WATCHED)
            assert await alive() == {"ok": True}
            await create_md(kmock, cr())
            dep = await eventually(lambda: objects(kmock, DEPLOYMENTS).get((NS, "chat")))
            assert dep["spec"]["replicas"] == 2
            # The leader also runs the plane's Grant expiry controller.
            async with KubeApi(configuration(kmock)) as kube:
                await put(kube, grant("g", phase="Active", expires=datetime.now(UTC)))
            await eventually(
                lambda: objects(kmock, GRANTS)[("team-a", "g")]["status"]["phase"] == "Expired"
            )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The operator stops with its task (SIGTERM cancels it in ``aviator operator``).
    assert task.cancelled()


@pytest.mark.kmock(cls=VersionedEmulator)
async def test_a_follower_runs_no_controller(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    declare(kmock)
    async with KubeApi(configuration(kmock)) as kube:
        await put(kube, grant("g", phase="Active", expires=datetime.now(UTC) - timedelta(hours=1)))
        await ObjectApi(kube=kube).create(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "aviator-operator", "namespace": "aviator-system"},
                "spec": {"holderIdentity": "operator-1", "leaseDurationSeconds": 60},
            }
        )
    options = OperatorOptions(
        identity="operator-0",
        kubeconfig=str(write_kubeconfig(tmp_path / "config", str(kmock.url).rstrip("/"))),
        resync_s=None,
        lease_retry_s=0.05,
    )
    before = len(list(kmock))
    task = asyncio.create_task(run(options))
    try:
        lease_reads = kmock.resource("coordination.k8s.io", "v1", "leases")
        await eventually(lambda: sum(1 for r in kmock if r.resource == lease_reads) >= 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    touched = {r.resource.plural for r in list(kmock)[before:] if r.resource is not None}
    assert touched == {"leases"}  # neither kopf nor the Grant expiry controller runs
    assert objects(kmock, GRANTS)[(NS, "g")]["status"]["phase"] == "Active"
