"""``aviator gateway``: its help, its refusals, and one real process watching a fake Control API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest
import typer
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from typer.testing import CliRunner

from aviator.cli.gateway import gateway
from aviator.identity import tokens
from aviator.identity.keys import KeyRing

from .conftest import CHAT_BODY, FakeUpstream, replica

K8S = "https://kubernetes.default.svc.cluster.local"
AGENT: dict[str, object] = {
    "apiVersion": "aviator.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "assistant", "namespace": "default", "resourceVersion": "5"},
    "spec": {"owner": "ops@example.com", "purpose": "tests", "audiences": ["gateway"]},
}
ADMIN_TOKEN = "admin-token-secret-1"
API_KEY = "sk-cli-secret-2"
ROOT = Path(__file__).resolve().parents[3]


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(gateway)
    return app


def test_help_names_every_option() -> None:
    result = CliRunner().invoke(cli_app(), ["--help"])
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--control-url",
        "--token-file",
        "--api-key-file",
        "--audit-file",
        "--identity-config",
        "--insecure",
    ):
        assert option in result.output
    assert "--no-auth" not in result.output


def test_it_refuses_to_start_with_an_unusable_key_file(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN)
    args = ["--control-url", "http://127.0.0.1:1", "--token-file", str(token)]
    keys = tmp_path / "keys"
    keys.write_text("# empty\n")
    result = CliRunner().invoke(cli_app(), [*args, "--api-key-file", str(keys)])
    assert result.exit_code == 2
    assert "no API key" in result.output
    result = CliRunner().invoke(cli_app(), [*args, "--api-key-file", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "cannot read the API key file" in result.output


def test_it_refuses_to_start_with_a_bad_identity_config(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN)
    args = ["--control-url", "http://127.0.0.1:1", "--token-file", str(token)]
    config = tmp_path / "identity.yaml"
    config.write_text(f"trustedIssuers:\n  - issuer: {K8S}\n    jwks: k8s.json\n")
    result = CliRunner().invoke(cli_app(), [*args, "--identity-config", str(config)])
    assert result.exit_code == 2
    assert f"{config}: trustedIssuers[0].audience: required" in result.output
    # A JWKS file is looked for next to the configuration, and must be there and usable.
    config.write_text(f"{config.read_text()}    audience: aviator\n    namespace: agents\n")
    result = CliRunner().invoke(cli_app(), [*args, "--identity-config", str(config)])
    assert result.exit_code == 2
    assert (
        f"{config}: trustedIssuers[0].jwks: cannot read JWKS file {tmp_path / 'k8s.json'}"
        in result.output
    )
    (tmp_path / "k8s.json").write_text('{"keys": []}')
    result = CliRunner().invoke(cli_app(), [*args, "--identity-config", str(config)])
    assert result.exit_code == 2
    assert "no usable key" in result.output
    result = CliRunner().invoke(cli_app(), [*args, "--identity-config", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "cannot read the identity configuration" in result.output


@pytest.fixture
async def control_api(
    upstreams: Callable[..., Awaitable[FakeUpstream]], tmp_path: Path
) -> AsyncIterator[str]:
    """A Control API that lists one ready Replica (pointing at a fake upstream), the Agent
    ``default/assistant``, no policies or grants, publishes a JWKS (of ``tmp_path/plane-keys``),
    and then idles."""
    up = await upstreams("a")
    ring = KeyRing.load_or_create(tmp_path / "plane-keys")

    def listing(
        kind: str, items: list[dict[str, object]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
                return web.json_response(
                    {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "no"},
                    status=401,
                )
            if "watch" not in request.query:
                return web.json_response(
                    {"kind": kind, "metadata": {"resourceVersion": "5"}, "items": items}
                )
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await asyncio.Event().wait()
            return resp

        return handler

    app = web.Application()
    app.router.add_get(
        "/apis/aviator.dev/v1alpha1/replicas",
        listing("ReplicaList", [replica("a", url=up.url, rv=5)]),
    )
    app.router.add_get(
        "/apis/aviator.dev/v1alpha1/modeldeployments", listing("ModelDeploymentList", [])
    )
    for kind, plural in (("Policy", "policies"), ("Grant", "grants")):
        app.router.add_get(f"/apis/aviator.dev/v1alpha1/{plural}", listing(f"{kind}List", []))
    app.router.add_get("/apis/aviator.dev/v1alpha1/agents", listing("AgentList", [AGENT]))

    async def jwks(request: web.Request) -> web.StreamResponse:
        return web.json_response(ring.jwks())

    app.router.add_get("/.well-known/jwks.json", jwks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_process_serves_what_it_watches_and_exits_0_on_sigterm(
    tmp_path: Path, control_api: str
) -> None:
    process, url, output = await _start(tmp_path, control_api)
    assert process.stdout is not None
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(10):
                while True:
                    async with session.get(f"{url}/health") as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.02)
            async with session.post(
                f"{url}/v1/chat/completions",
                data=orjson.dumps(CHAT_BODY),
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                # An API key is subject to policy, and this Control API lists no Policy.
                assert resp.status == 403
            async with session.post(
                f"{url}/v1/chat/completions",
                data=orjson.dumps(CHAT_BODY),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as resp:
                assert resp.status == 200
                assert resp.headers["x-aviator-replica"] == "default/a"
            async with session.get(f"{url}/metrics") as resp:
                assert "aviator_gateway_insecure 0.0" in await resp.text()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = await process.stdout.read()
            assert await process.wait() == 0
        output.append(rest.decode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "".join(output)
    assert "gateway stopped" in text
    assert ADMIN_TOKEN not in text
    assert API_KEY not in text


async def _start(
    tmp_path: Path, control_api: str, *extra: str
) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """``aviator gateway`` with ``extra`` options; the process, its URL, and its output so far."""
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (tmp_path / "keys").write_text(f"# test clients\n{API_KEY}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aviator",
        "gateway",
        "--port",
        "0",
        "--control-url",
        control_api,
        "--token-file",
        str(tmp_path / "admin.token"),
        "--api-key-file",
        str(tmp_path / "keys"),
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    output: list[str] = []
    urls: list[str] = []
    async with asyncio.timeout(30):
        while len(urls) < (2 if "--workers" in extra else 1):
            line = (await process.stdout.readline()).decode()
            assert line, "the gateway exited early:\n" + "".join(output)
            output.append(line)
            if "gateway listening on " in line:
                urls.append(line.rsplit(" ", 1)[1].strip())
    assert len(set(urls)) == 1  # every worker listens on the one port
    return process, urls[0], output


def _worker_pids(supervisor: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def _served(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(10):
            while True:
                async with session.get(f"{url}/health") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.02)
        async with session.post(
            f"{url}/v1/chat/completions",
            data=orjson.dumps(CHAT_BODY),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as resp:
            return resp.status


async def test_workers_share_the_port_and_stop_together(tmp_path: Path, control_api: str) -> None:
    process, url, output = await _start(tmp_path, control_api, "--workers", "2")
    try:
        workers = _worker_pids(process.pid)
        assert len(workers) == 2
        for _ in range(4):  # new connections each time: the kernel spreads them
            assert await _served(url) == 200
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert process.stdout is not None
            output.append((await process.stdout.read()).decode())
            assert await process.wait() == 0
        assert "".join(output).count("gateway stopped") == 2
        assert not any(_running(pid) for pid in workers)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_worker_that_dies_takes_the_gateway_down(tmp_path: Path, control_api: str) -> None:
    process, url, _ = await _start(tmp_path, control_api, "--workers", "2")
    try:
        assert await _served(url) == 200
        first, second = _worker_pids(process.pid)
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(15):
            assert process.stdout is not None
            rest = (await process.stdout.read()).decode()
            assert await process.wait() == 1  # whoever supervises it restarts all of it
        assert f"gateway worker {first} exited (signal 9)" in rest
        assert not _running(second)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_identity_config_sets_the_trust_domain_and_the_trusted_issuers(
    tmp_path: Path, control_api: str
) -> None:
    external = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(external.public_key(), as_dict=True), "kid": "k8s-1"}
    (tmp_path / "k8s-jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "identity.yaml").write_text(
        "trustDomain: example.org\n"
        "trustedIssuers:\n"
        f"  - issuer: {K8S}\n"
        "    jwks: k8s-jwks.json\n"
        "    audience: aviator\n"
        '    subjectTemplate: "system:serviceaccount:{namespace}:{name}"\n'
        "    algorithms: [ES256]\n"
    )
    now = time.time()

    def service_account(name: str) -> str:
        claims = {
            "iss": K8S,
            "sub": f"system:serviceaccount:default:{name}",
            "aud": ["aviator"],
            "iat": int(now),
            "exp": int(now) + 600,
        }
        return jwt.encode(claims, external, algorithm="ES256", headers={"kid": "k8s-1"})

    ring = KeyRing.load_or_create(tmp_path / "plane-keys")  # the fake Control API's keys

    def plane_token(trust_domain: str) -> str:
        return tokens.mint(
            key=ring.active,
            issuer=f"spiffe://{trust_domain}",
            trust_domain=trust_domain,
            namespace="default",
            name="assistant",
            audience="gateway",
            ttl_s=600,
            now=now,
        ).token

    process, url, output = await _start(
        tmp_path, control_api, "--identity-config", str(tmp_path / "identity.yaml")
    )
    sent = {
        "service account of an agent": service_account("assistant"),
        "service account of no agent": service_account("ghost"),
        "plane token, configured domain": plane_token("example.org"),
        "plane token, default domain": plane_token("aviator.local"),
    }
    try:
        assert await _served(url) == 200  # the admin token, once healthy
        answers = {}
        async with aiohttp.ClientSession() as session:
            for what, token in sent.items():
                async with session.post(
                    f"{url}/v1/chat/completions",
                    data=orjson.dumps(CHAT_BODY),
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    answers[what] = (resp.status, resp.headers.get("WWW-Authenticate", ""))
        # Authenticated (then refused by policy: this Control API lists no Policy), or not.
        assert answers["service account of an agent"][0] == 403
        assert answers["plane token, configured domain"][0] == 403
        assert answers["service account of no agent"][0] == 401
        assert 'error_description="unknown_agent"' in answers["service account of no agent"][1]
        assert answers["plane token, default domain"][0] == 401
        assert 'error_description="unknown_issuer"' in answers["plane token, default domain"][1]
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert process.stdout is not None
            output.append((await process.stdout.read()).decode())
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "".join(output)
    assert f"trusting tokens of '{K8S}' besides the plane's (trust domain example.org)" in text
    assert not any(token in text for token in sent.values())
