"""``aviator gateway --discovery kubernetes`` in-process against kmock: endpoints from an
EndpointSlice, agents and policies from the CRDs, agent tokens from a trusted issuer only."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import typer
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from kmock import KubernetesEmulator
from typer.testing import CliRunner

from aviator.api.kinds import AGENT, MODEL_DEPLOYMENT, POLICY
from aviator.cli.gateway import KubernetesHome, _run, gateway, load_identity_config
from aviator.kube.api import KubeApi
from aviator.kube.store import KubeStore
from aviator.settings import GatewaySettings

from .conftest import agent
from .kubeconfig import write_kubeconfig

K8S = "https://kubernetes.default.svc.cluster.local"
ADMIN_TOKEN = "cluster-admin-secret-7"
COMPLETION = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
POLICY_TEXT = """
permit (principal == Agent::"default/assistant", action == Action::"infer",
        resource == ModelDeployment::"default/chat");
"""


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    """An engine Pod: answers chat completions."""

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_the_gateway_routes_to_the_pods_an_endpoint_slice_lists(
    tmp_path: Path,
    api: KubeApi,
    cluster: KubernetesEmulator,
    upstream: TestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # The cluster: a ModelDeployment, its Service's EndpointSlice, an Agent and a Policy.
    store = KubeStore(api=api)
    await store.create(
        MODEL_DEPLOYMENT,
        {
            "apiVersion": "aviator.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "chat", "namespace": "default"},
            "spec": {"model": {"name": "m"}, "engine": "sim", "replicas": 1},
        },
    )
    await api.request(
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        verb="create",
        body={
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "chat-x1",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "chat",
                    "aviator.dev/model-deployment": "chat",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": upstream.port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": "chat-7d9-abc", "namespace": "default"},
                }
            ],
        },
    )
    await store.create(AGENT, agent("assistant"))
    await store.create(
        POLICY,
        {
            "apiVersion": "aviator.dev/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": "assistant-may-chat"},
            "spec": {"cedar": POLICY_TEXT},
        },
    )

    # A trusted issuer standing in for the cluster's service-account token issuer.
    signer = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(signer.public_key(), as_dict=True), "kid": "sa-1"}
    (tmp_path / "sa-jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "identity.yaml").write_text(
        "trustedIssuers:\n"
        f"  - issuer: {K8S}\n"
        "    jwks: sa-jwks.json\n"
        "    audience: aviator\n"
        '    subjectTemplate: "system:serviceaccount:{namespace}:{name}"\n'
    )
    now = int(time.time())

    def service_account_token(name: str) -> str:
        claims = {
            "iss": K8S,
            "sub": f"system:serviceaccount:default:{name}",
            "aud": ["aviator"],
            "iat": now,
            "exp": now + 600,
        }
        return jwt.encode(claims, signer, algorithm="ES256", headers={"kid": "sa-1"})

    home = KubernetesHome(
        namespace=None,
        kubeconfig=write_kubeconfig(
            tmp_path / "kubeconfig", str(cluster.url).rstrip("/"), token="sa-token-not-checked"
        ),
        context=None,
        admin_token=ADMIN_TOKEN,
    )
    stop = asyncio.Event()
    serving: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(
        _run(
            GatewaySettings(host="127.0.0.1", port=0),
            home=home,
            identity=load_identity_config(tmp_path / "identity.yaml"),
            api_keys=[],
            insecure=False,
            audit_file=None,
            exit_with_parent=False,
            stop=stop,
            on_serving=serving.set_result,
        )
    )
    try:
        url = await asyncio.wait_for(serving, 10)
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:  # healthy once the slices, deployments and policies are loaded
                async with session.get(f"{url}/health") as resp:
                    health: dict[str, Any] = await resp.json()
                    if resp.status == 200 and health["endpoints"] == 1:
                        break
                assert loop.time() < deadline, health
                await asyncio.sleep(0.05)

            async def chat(token: str) -> tuple[int, dict[str, Any], str]:
                async with session.post(
                    f"{url}/v1/chat/completions",
                    json=CHAT,
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    return resp.status, await resp.json(), resp.headers.get("x-aviator-replica", "")

            status, body, replica = await chat(ADMIN_TOKEN)
            assert (status, body) == (200, COMPLETION)
            assert replica == "default/chat-7d9-abc"
            # The agent's service-account token, permitted by the Policy CR.
            status, body, _ = await chat(service_account_token("assistant"))
            assert (status, body) == (200, COMPLETION)
            # A service account that is no Agent: not authenticated.
            status, body, _ = await chat(service_account_token("intruder"))
            assert status == 401
            # The Agent deleted in the cluster: its token stops working.
            await store.delete(AGENT, "default", "assistant")
            deadline = loop.time() + 10
            while (await chat(service_account_token("assistant")))[0] != 401:
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
    text = caplog.text
    assert "pod default/chat-7d9-abc (model m) is routable at http://127.0.0.1:" in text
    assert ADMIN_TOKEN not in text
    assert "sa-token-not-checked" not in text


def test_options_of_the_other_mode_are_refused(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(gateway)
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN)
    control = ["--control-url", "http://127.0.0.1:1", "--token-file", str(token)]
    result = CliRunner().invoke(app, [*control, "--kube-namespace", "ns"])
    assert result.exit_code == 2
    assert "--kube-namespace: only with --discovery kubernetes" in result.output
    result = CliRunner().invoke(app, ["--discovery", "kubernetes", *control])
    assert result.exit_code == 2
    assert "--control-url: not with --discovery kubernetes" in result.output
    result = CliRunner().invoke(app, ["--discovery", "kubernetes", "--kube-namespace", "Bad_NS"])
    assert result.exit_code == 2
    assert "not a namespace name" in result.output
    result = CliRunner().invoke(
        app, ["--discovery", "kubernetes", "--kubeconfig", str(tmp_path / "missing")]
    )
    assert result.exit_code == 2
    assert "no Kubernetes credentials" in result.output
    assert ADMIN_TOKEN not in result.output
