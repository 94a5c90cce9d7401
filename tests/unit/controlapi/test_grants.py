"""Grants through the Control API: requests decided by the example policies, the approve / deny /
revoke endpoints, the immutable spec, the audit trail, and the view seeing each change at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from tests.unit.controlapi.governed import ADMIN_TOKEN, BOT, GROUP, NS, World, grant

from aviator.api import kinds
from aviator.api.principal import Principal

GRANTS = f"{GROUP}/namespaces/{NS}/grants"
MERGE = {"Content-Type": "application/merge-patch+json"}
BOT_PRINCIPAL = Principal(kind="agent", id=BOT, namespace=NS, name="bot")


@pytest.fixture
async def admin(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as c:
        yield c


@pytest.fixture
async def bot(world: World, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {world.token()}"}
    ) as c:
        yield c


@pytest.fixture
async def helper(world: World, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {world.token('helper')}"}
    ) as c:
        yield c


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_small_inference_grant_is_approved_at_once(
    world: World, bot: httpx.AsyncClient
) -> None:
    response = await bot.post(GRANTS, json={**grant("q3"), "status": {"phase": "Active"}})
    assert response.status_code == 201, response.text
    status = response.json()["status"]
    assert status["phase"] == "Active"
    assert status["reason"].startswith("approved automatically by grant-requests#0")
    assert status["requestedBy"] == BOT and status["decidedBy"] == "policy"
    assert status["policies"] == ["grant-requests"]
    lasts = _time(status["expiresAt"]) - _time(status["decidedAt"])
    assert lasts.total_seconds() == 600
    # This process decides with it at once, without waiting for the watch.
    assert "team-a/q3" in world.view.compiled.active_grants
    record = world.records()[-1]
    assert (record["action"], record["decision"], record["resource"]) == (
        "requestGrant",
        "allow",
        f'Grant::"{NS}/q3"',
    )
    assert record["extra"]["phase"] == "Active" and record["principal"] == BOT


async def test_client_supplied_status_is_ignored_and_denials_are_stored(
    world: World, bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    # Rights on governance objects are refused outright; the refusal is kept so the requester
    # can read why.
    body = grant("policies", actions=["update"], resources=["policy/baseline"])
    body["status"] = {"phase": "Active", "decidedBy": "policy"}
    response = await bot.post(GRANTS, json=body)
    assert response.status_code == 201
    status = response.json()["status"]
    assert status["phase"] == "Denied"
    assert "forbidden by grant-requests#2" in status["reason"]
    stored = (await admin.get(f"{GRANTS}/policies")).json()
    assert stored["status"]["phase"] == "Denied"
    assert world.records()[-1]["decision"] == "deny"
    assert "team-a/policies" not in world.view.compiled.active_grants


async def test_asking_for_another_agent_is_denied(bot: httpx.AsyncClient) -> None:
    response = await bot.post(GRANTS, json=grant("for-helper", agent="helper"))
    assert response.status_code == 201
    assert response.json()["status"]["phase"] == "Denied"
    assert "default deny" in response.json()["status"]["reason"]


async def test_pending_then_approved_by_the_admin_never_by_its_requester(
    world: World, bot: httpx.AsyncClient, helper: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    body = grant("tune", actions=["update"], resources=["md/crit"], durationSeconds=1800)
    requested = await bot.post(GRANTS, json=body)
    assert requested.json()["status"]["phase"] == "Pending"

    own = await bot.post(f"{GRANTS}/tune/approve", json={"reason": "I need it"})
    assert own.status_code == 403
    assert "can never approve its own grant" in own.json()["message"]
    # Another agent needs a policy permitting approve; none does.
    other = await helper.post(f"{GRANTS}/tune/approve")
    assert other.status_code == 403 and "default deny" in other.json()["message"]

    approved = await admin.post(f"{GRANTS}/tune/approve", json={"reason": "ticket OPS-7"})
    assert approved.status_code == 200, approved.text
    status = approved.json()["status"]
    assert status["phase"] == "Active" and status["reason"] == "ticket OPS-7"
    assert status["decidedBy"] == "admin" and status["requestedBy"] == BOT
    assert (_time(status["expiresAt"]) - _time(status["decidedAt"])).total_seconds() == 1800
    assert "team-a/tune" in world.view.compiled.active_grants

    # With the grant the agent may now update its critical deployment.
    patched = await bot.patch(
        f"{GROUP}/namespaces/{NS}/modeldeployments/crit",
        json={"metadata": {"labels": {"by": "grant"}}},
        headers=MERGE,
    )
    assert patched.status_code == 200, patched.text
    update = [r for r in world.records() if r["action"] == "update"][-1]
    assert update["policies"] == ["grant:team-a/tune"]

    again = await admin.post(f"{GRANTS}/tune/approve")
    assert again.status_code == 409 and "only Pending grants" in again.json()["message"]
    denied_late = await admin.post(f"{GRANTS}/tune/deny")
    assert denied_late.status_code == 409

    verbs = [(r["action"], r["decision"], r["principal"]) for r in world.records()]
    assert ("approve", "deny", BOT) in verbs
    assert ("approve", "allow", "admin") in verbs
    assert ("approve", "deny", "admin") in verbs  # the refused second approval


async def test_deny_and_revoke(
    world: World, bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await bot.post(GRANTS, json=grant("a", actions=["update"], resources=["md/crit"]))
    denied = await admin.post(f"{GRANTS}/a/deny", json={"reason": "not this quarter"})
    assert denied.json()["status"]["phase"] == "Denied"
    assert denied.json()["status"]["reason"] == "not this quarter"

    await bot.post(GRANTS, json=grant("b"))
    assert "team-a/b" in world.view.compiled.active_grants
    revoked = await bot.post(f"{GRANTS}/b/revoke")  # the agent may always give it up
    assert revoked.status_code == 200
    assert revoked.json()["status"]["phase"] == "Revoked"
    assert revoked.json()["status"]["decidedBy"] == BOT
    assert "team-a/b" not in world.view.compiled.active_grants
    twice = await bot.post(f"{GRANTS}/b/revoke")
    assert twice.status_code == 409


async def test_verb_bodies_and_targets_are_checked(
    bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await bot.post(GRANTS, json=grant("c", actions=["update"], resources=["md/crit"]))
    for body, code in (
        ([1], 400),
        ({"reason": "x" * 600}, 422),
        ({"because": "x"}, 422),
    ):
        response = await admin.post(f"{GRANTS}/c/approve", json=body)
        assert response.status_code == code, (body, response.text)
    assert (await admin.get(f"{GRANTS}/c")).json()["status"]["phase"] == "Pending"
    missing = await admin.post(f"{GRANTS}/nope/approve")
    assert missing.status_code == 404
    bad_ns = await admin.post(f"{GROUP}/namespaces/Bad_NS/grants/c/approve")
    assert bad_ns.status_code == 400


async def test_the_spec_is_immutable_and_deletion_follows_policy(
    world: World, bot: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await bot.post(GRANTS, json=grant("d"))
    widened = await admin.patch(
        f"{GRANTS}/d", json={"spec": {"resources": ["ns/team-b"]}}, headers=MERGE
    )
    assert widened.status_code == 422
    assert widened.json()["details"]["causes"][0]["field"] == "spec"
    labelled = await admin.patch(
        f"{GRANTS}/d", json={"metadata": {"labels": {"ticket": "ops-1"}}}, headers=MERGE
    )
    assert labelled.status_code == 200
    assert labelled.json()["status"]["phase"] == "Active"  # the status is kept
    # Agents may not change a grant at all (grants-are-immutable-to-agents), nor delete it.
    by_bot = await bot.patch(
        f"{GRANTS}/d", json={"metadata": {"labels": {"x": "y"}}}, headers=MERGE
    )
    assert by_bot.status_code == 403
    assert (await bot.delete(f"{GRANTS}/d")).status_code == 403
    assert (await admin.delete(f"{GRANTS}/d")).status_code == 200
    assert "team-a/d" not in world.view.compiled.active_grants
    stored, _ = await world.store.list(kinds.GRANT, namespace=NS)
    assert stored == []
