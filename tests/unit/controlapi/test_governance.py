"""Governance on the Control API: principals from agent tokens, policy on every write, the audit
record of every decision, admin-only endpoints, and failing closed when the audit log cannot
record. Against the example policies (``examples/governance.yaml``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.controlapi.governed import (
    ADMIN_TOKEN,
    BOT,
    GROUP,
    NS,
    World,
    deployment,
    open_world,
)

from aviator.api import kinds
from aviator.api.principal import ADMIN, Principal
from aviator.audit.log import AuditLog
from aviator.controlapi.governance import combine_update, write_decision
from aviator.policy.engine import Decision, PolicyEngine
from aviator.settings import AuditSettings

MDS = f"{GROUP}/namespaces/{NS}/modeldeployments"
MERGE = {"Content-Type": "application/merge-patch+json"}


def client(base_url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def admin(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(base_url, ADMIN_TOKEN) as c:
        yield c


@pytest.fixture
async def bot(world: World, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(base_url, world.token()) as c:
        yield c


def last(world: World, **match: Any) -> dict[str, Any]:
    found = [r for r in world.records() if all(r.get(k) == v for k, v in match.items())]
    assert found, (match, world.records())
    return found[-1]


# -- who is asking -------------------------------------------------------------------------------


async def test_an_agent_token_for_the_control_api_authenticates(
    bot: httpx.AsyncClient, world: World
) -> None:
    response = await bot.get(f"{MDS}/chat")
    assert response.status_code == 200, response.text
    listed = await bot.get(f"{GROUP}/policies")
    assert listed.status_code == 200 and len(listed.json()["items"]) == 5
    assert world.records() == []  # reads are not decisions


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, 'Bearer realm="aviator"'),
        ("Bearer not.a.jwt", "malformed"),
        ("Basic dXNlcjpwdw==", 'Bearer realm="aviator"'),
    ],
)
async def test_bad_credentials_are_401_with_www_authenticate(
    base_url: str, header: str | None, error: str
) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=base_url) as raw:
        response = await raw.get(MDS, headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == "Unauthorized"
    assert error in response.headers["WWW-Authenticate"]


async def test_a_gateway_token_is_not_a_control_api_token(world: World, base_url: str) -> None:
    token = world.token("gw-only", audience="gateway")
    async with client(base_url, token) as c:
        response = await c.get(MDS)
    assert response.status_code == 401
    assert 'error_description="wrong_audience"' in response.headers["WWW-Authenticate"]
    assert token not in response.text


async def test_a_deleted_agents_token_stops_working(
    world: World, bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    assert (await bot.get(MDS)).status_code == 200
    deleted = await admin.delete(f"{GROUP}/namespaces/{NS}/agents/bot")
    assert deleted.status_code == 200
    for _ in range(400):  # the view learns of the deletion through its watch
        if world.view.agent(NS, "bot") is None:
            break
        await asyncio.sleep(0.005)
    response = await bot.get(MDS)
    assert response.status_code == 401
    assert "unknown_agent" in response.headers["WWW-Authenticate"]


async def test_admin_only_endpoints_refuse_agents_clearly(
    world: World, bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    for method, path in (
        ("POST", f"{GROUP}/namespaces/{NS}/agents/bot/token"),
        ("GET", f"{GROUP}/keys"),
        ("POST", f"{GROUP}/keys/rotate"),
        ("PUT", f"{MDS}/chat/status"),
    ):
        response = await bot.request(method, path, json={"status": {}})
        assert response.status_code == 403, (method, path, response.text)
        assert "only the administrator may" in response.json()["message"]
    kids = [k.kid for k in world.ring.keys]
    assert len(kids) == 1  # nothing rotated
    denied = last(world, action="rotateKeys")
    assert denied["decision"] == "deny" and denied["principal"] == BOT
    assert (await admin.get(f"{GROUP}/keys")).status_code == 200
    assert last(world, action="listKeys", principal="admin")["decision"] == "allow"
    # The JWKS stays public.
    async with httpx.AsyncClient(base_url=str(bot.base_url)) as raw:
        assert (await raw.get("/.well-known/jwks.json")).status_code == 200


# -- policy on writes ----------------------------------------------------------------------------


async def test_an_agent_may_tune_its_own_standard_deployment(
    world: World, bot: httpx.AsyncClient
) -> None:
    response = await bot.patch(
        f"{MDS}/chat", json={"metadata": {"labels": {"tuned": "yes"}}}, headers=MERGE
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["labels"] == {"tuned": "yes"}
    record = last(world, action="update")
    assert record["decision"] == "allow"
    assert record["principal"] == BOT and record["principal_kind"] == "agent"
    assert record["resource"] == f'ModelDeployment::"{NS}/chat"'
    assert record["policies"] == ["agents-tune-their-deployments"]
    assert record["source"] == "controlapi" and record["extra"]["method"] == "PATCH"


async def test_an_update_is_judged_before_and_after(world: World, bot: httpx.AsyncClient) -> None:
    # Lowering a critical deployment's priority would make the result permitted: refused on
    # the object as stored.
    lowered = await bot.patch(f"{MDS}/crit", json={"spec": {"priority": "standard"}}, headers=MERGE)
    assert lowered.status_code == 403
    assert "as stored" in lowered.json()["message"]
    assert (await world.store.get(kinds.MODEL_DEPLOYMENT, NS, "crit"))["spec"][
        "priority"
    ] == "critical"
    # Raising a standard one to critical: refused on the object as proposed.
    current = (await bot.get(f"{MDS}/chat")).json()
    current["spec"]["priority"] = "critical"
    raised = await bot.put(f"{MDS}/chat", json=current)
    assert raised.status_code == 403
    assert "as proposed" in raised.json()["message"]
    record = last(world, action="update", decision="deny")
    assert record["extra"]["status"] == 403 and record["extra"]["method"] == "PUT"


async def test_an_agent_cannot_write_policies_create_or_delete(
    world: World, bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    widening = {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": "let-me"},
        "spec": {"cedar": "permit (principal, action, resource);"},
    }
    response = await bot.post(
        f"{GROUP}/policies", json=widening, headers={"x-request-id": "req-42"}
    )
    assert response.status_code == 403
    assert "forbidden by governance-is-admin-only" in response.json()["message"]
    assert [p["metadata"]["name"] for p in (await admin.get(f"{GROUP}/policies")).json()["items"]]
    assert (await admin.get(f"{GROUP}/policies/let-me")).status_code == 404
    record = last(world, action="create", request_id="req-42")
    assert record["decision"] == "deny" and record["resource"] == 'Policy::"let-me"'
    assert record["policies"] == ["governance-is-admin-only"]
    # Nothing permits creating or deleting deployments: the default deny, named as such.
    created = await bot.post(MDS, json=deployment("new"))
    assert created.status_code == 403 and "default deny" in created.json()["message"]
    gone = await bot.delete(f"{MDS}/chat")
    assert gone.status_code == 403
    assert (await admin.get(f"{MDS}/chat")).status_code == 200


async def test_the_admin_writes_anything_and_is_audited(
    world: World, admin: httpx.AsyncClient
) -> None:
    created = await admin.post(MDS, json=deployment("new"))
    assert created.status_code == 201
    deleted = await admin.delete(f"{MDS}/new")
    assert deleted.status_code == 200
    actions = [(r["action"], r["decision"], r["principal"]) for r in world.records()]
    assert actions == [("create", "allow", "admin"), ("delete", "allow", "admin")]
    assert world.records()[0]["request_id"]  # a fresh one when the caller sends none


async def test_a_write_the_audit_log_cannot_record_is_not_performed(tmp_path: Path) -> None:
    closed = AuditLog.open(tmp_path / "closed.db", settings=AuditSettings())
    closed.close()
    world = await open_world(tmp_path, audit=closed)
    server = TestServer(world.app)
    await server.start_server()
    try:
        async with client(str(server.make_url("")), ADMIN_TOKEN) as admin:
            response = await admin.post(MDS, json=deployment("unrecorded"))
            assert response.status_code == 503
            assert response.json()["reason"] == "ServiceUnavailable"
            assert "nothing was done" in response.json()["message"]
            assert (await admin.get(f"{MDS}/unrecorded")).status_code == 404
            # Reads need no record.
            assert (await admin.get(MDS)).status_code == 200
    finally:
        await server.close()
        await world.close()


# -- the pure decision ---------------------------------------------------------------------------


def test_write_decision_needs_the_objects_it_judges() -> None:
    compiled = PolicyEngine().compile((), now=datetime.now(UTC))
    with pytest.raises(ValueError, match="needs the object"):
        write_decision(compiled, ADMIN, "update", kinds.MODEL_DEPLOYMENT, current={})


def test_write_decision_on_an_unbuildable_object_is_no_decision() -> None:
    compiled = PolicyEngine().compile((), now=datetime.now(UTC))
    agent_p = Principal(kind="agent", id=BOT, namespace=NS, name="bot")
    verdict = write_decision(
        compiled, agent_p, "create", kinds.MODEL_DEPLOYMENT, proposed={"metadata": {"name": "x"}}
    )
    assert not verdict.decision.allowed and verdict.decision.no_decision
    assert verdict.resource == 'ModelDeployment::"x"'


decisions = st.builds(
    Decision,
    allowed=st.booleans(),
    decided_by=st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True).map(tuple),
    reason=st.sampled_from(["permitted by a", "forbidden by b", "default deny"]),
)


@settings(max_examples=150, deadline=None)
@given(decisions, decisions)
def test_an_update_is_allowed_only_when_both_sides_are(
    current: Decision, proposed: Decision
) -> None:
    combined = combine_update(current, proposed)
    assert combined.allowed == (current.allowed and proposed.allowed)
    if not current.allowed:
        assert combined.decided_by == current.decided_by and "as stored" in combined.reason
    elif not proposed.allowed:
        assert combined.decided_by == proposed.decided_by and "as proposed" in combined.reason
    else:
        assert set(combined.decided_by) == {*current.decided_by, *proposed.decided_by}
