"""Governance on the real plane's Control API: an agent's token (audience control-api) under the
example policies, grants requested, approved and revoked through the CLI, and an audit log that
verifies and holds every decision with its principal. One plane (no gateway) for the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.plane import REPO, PlaneProcess, async_wait_until

from aviator.api import errors, kinds
from aviator.audit.log import AuditReader
from aviator.client import Client

pytestmark = pytest.mark.integration

NS = "team-a"
BOT = f"spiffe://aviator.local/ns/{NS}/agent/bot"
SETUP = """
apiVersion: aviator.dev/v1alpha1
kind: Agent
metadata: {name: bot, namespace: team-a}
spec: {owner: team-a, purpose: tunes deployments, audiences: [gateway, control-api]}
---
apiVersion: aviator.dev/v1alpha1
kind: ModelDeployment
metadata: {name: chat, namespace: team-a}
spec: {model: {name: org/chat}, priority: standard, replicas: 0}
---
apiVersion: aviator.dev/v1alpha1
kind: ModelDeployment
metadata: {name: crit, namespace: team-a}
spec: {model: {name: org/crit}, priority: critical, replicas: 0}
"""
WIDENING = {
    "apiVersion": "aviator.dev/v1alpha1",
    "kind": "Policy",
    "metadata": {"name": "let-me-do-anything"},
    "spec": {"cedar": "permit (principal, action, resource);"},
}


async def _set_up(plane: PlaneProcess) -> str:
    """Apply the example policies, the agent and its deployments as the admin; return a token
    of the agent for the Control API (through the API, as `aviator token issue` does)."""
    documents = [
        *yaml.safe_load_all((REPO / "examples" / "governance.yaml").read_text()),
        *yaml.safe_load_all(SETUP),
    ]
    async with plane.client() as admin:
        for doc in documents:
            await admin.create(kinds.KINDS[doc["kind"]], doc)
        issued = await admin.request(
            "POST",
            f"/apis/aviator.dev/v1alpha1/namespaces/{NS}/agents/bot/token",
            json={"audience": "control-api"},
        )
    return str(issued["token"])


@pytest.fixture(scope="module")
def plane_and_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlaneProcess, str]]:
    handle = PlaneProcess(data_dir=tmp_path_factory.mktemp("governance") / "aviator")
    handle.start("--no-gateway")
    try:
        yield handle, asyncio.run(_set_up(handle))
    finally:
        handle.cleanup()


@pytest.fixture
def plane(plane_and_token: tuple[PlaneProcess, str]) -> PlaneProcess:
    return plane_and_token[0]


@pytest.fixture
def bot_token(plane_and_token: tuple[PlaneProcess, str]) -> str:
    return plane_and_token[1]


@pytest.fixture
async def bot(plane: PlaneProcess, bot_token: str) -> AsyncIterator[Client]:
    async with Client(plane.api_url, token=bot_token) as c:
        yield c


def grant(name: str, action: str, resource: str) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Grant",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"agent": "bot", "actions": [action], "resources": [resource],
                 "purpose": "failover drill", "durationSeconds": 60},
    }  # fmt: skip


def as_bot(plane: PlaneProcess, token: str, *args: str) -> tuple[int, str, str]:
    done = plane.cli("--token", token, *args)
    return done.returncode, done.stdout, done.stderr


async def test_an_agent_writes_only_what_policy_permits(plane: PlaneProcess, bot: Client) -> None:
    async def tuned() -> bool:
        # The plane's view compiles the policies just applied within milliseconds; poll.
        try:
            await bot.patch(
                kinds.MODEL_DEPLOYMENT, "chat", {"metadata": {"labels": {"t": "1"}}}, namespace=NS
            )
        except errors.Forbidden:
            return False
        return True

    await async_wait_until(tuned, timeout=10, message="agent never allowed to tune chat")
    assert (await bot.get(kinds.MODEL_DEPLOYMENT, "chat", namespace=NS))["metadata"]["labels"] == {
        "t": "1"
    }
    # A non-admin applying a Policy that widens its own rights.
    with pytest.raises(errors.Forbidden, match="governance-is-admin-only"):
        await bot.create(kinds.POLICY, WIDENING)
    # Lowering a critical deployment's priority to escape the tuning policy.
    with pytest.raises(errors.Forbidden, match="as stored"):
        await bot.patch(
            kinds.MODEL_DEPLOYMENT, "crit", {"spec": {"priority": "standard"}}, namespace=NS
        )
    # Signing keys and tokens stay the admin's.
    with pytest.raises(errors.Forbidden, match="only the administrator"):
        await bot.request("POST", "/apis/aviator.dev/v1alpha1/keys/rotate")
    async with plane.client() as admin:
        policies, _ = await admin.list(kinds.POLICY)
        assert "let-me-do-anything" not in {p["metadata"]["name"] for p in policies}
        crit = await admin.get(kinds.MODEL_DEPLOYMENT, "crit", namespace=NS)
        assert crit["spec"]["priority"] == "critical"


def test_grants_through_the_cli(plane: PlaneProcess, bot_token: str) -> None:
    code, out, err = as_bot(
        plane, bot_token, "grant", "request", "bot", "-n", NS, "--name", "small",
        "--action", "infer", "--resource", "md/chat", "--purpose", "q3 report", "--duration", "30m",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("grant/small is Active: approved automatically")

    async def pending() -> dict[str, Any]:
        async with Client(plane.api_url, token=bot_token) as bot:
            return await bot.create(kinds.GRANT, grant("tune-crit", "update", "md/crit"))

    assert asyncio.run(pending())["status"]["phase"] == "Pending"

    async def approve_own() -> None:
        async with Client(plane.api_url, token=bot_token) as bot:
            with pytest.raises(errors.Forbidden, match="can never approve its own grant"):
                await bot.approve_grant(NS, "tune-crit")

    asyncio.run(approve_own())

    approved = plane.cli("grant", "approve", "tune-crit", "-n", NS, "--reason", "drill OPS-9")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith("grant/tune-crit is Active: drill OPS-9")

    async def revoke() -> dict[str, Any]:
        async with plane.client() as admin:
            return await admin.revoke_grant(NS, "tune-crit", reason="drill over")

    assert asyncio.run(revoke())["status"]["phase"] == "Revoked"


async def test_a_grant_widens_then_revocation_narrows_at_once(
    plane: PlaneProcess, bot: Client
) -> None:
    requested = await bot.create(kinds.GRANT, grant("crit-labels", "update", "md/crit"))
    assert requested["status"]["phase"] == "Pending"
    label = {"metadata": {"labels": {"drill": "yes"}}}
    with pytest.raises(errors.Forbidden):
        await bot.patch(kinds.MODEL_DEPLOYMENT, "crit", label, namespace=NS)
    async with plane.client() as admin:
        approved = await admin.approve_grant(NS, "crit-labels")
        assert approved["status"]["phase"] == "Active"
        # The Control API's own view has the grant once approve returns.
        await bot.patch(kinds.MODEL_DEPLOYMENT, "crit", label, namespace=NS)
        await admin.revoke_grant(NS, "crit-labels", reason="drill over")
    with pytest.raises(errors.Forbidden):
        await bot.patch(
            kinds.MODEL_DEPLOYMENT,
            "crit",
            {"metadata": {"labels": {"drill": "again"}}},
            namespace=NS,
        )


def test_the_audit_log_verifies_and_holds_every_decision(
    plane: PlaneProcess, bot_token: str
) -> None:
    verified = plane.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK:")
    reader = AuditReader(Path(plane.data_dir) / "audit.db")
    records = [entry.data() for entry in reader.iterate()]
    seen = {(r["principal"], r["action"], r["decision"]) for r in records}
    assert ("admin", "create", "allow") in seen  # the policies and objects applied
    assert (BOT, "update", "allow") in seen
    assert (BOT, "create", "deny") in seen  # the widening Policy
    assert (BOT, "requestGrant", "allow") in seen
    assert (BOT, "approve", "deny") in seen  # its own grant
    assert ("admin", "approve", "allow") in seen
    assert ("admin", "revoke", "allow") in seen
    assert ("admin", "issueToken", "allow") in seen
    widening = next(r for r in records if r["resource"] == 'Policy::"let-me-do-anything"')
    assert widening["policies"] == ["governance-is-admin-only"]
    assert all(r["source"] == "controlapi" for r in records)
    assert not any(bot_token in json.dumps(r) for r in records)
