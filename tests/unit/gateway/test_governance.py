"""Governance in the gateway's request path: agent tokens (every way one can be wrong), policy,
declared intent, budgets, grant leases cut mid-stream, insecure mode, and the audit records.

The policies, agents and grants live in a real SQLite store that the gateway's ``PolicyView``
lists and watches (in production it watches the Control API); tokens are minted with a real
``KeyRing`` in the test's directory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from aviator.api import admission, kinds
from aviator.api.kinds import KindInfo
from aviator.api.meta import format_time
from aviator.api.principal import Principal
from aviator.audit.log import AuditReader
from aviator.audit.record import AuditRecord
from aviator.gateway.app import Gateway
from aviator.gateway.auth import Credentials
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.governance import Governance, estimate_tokens
from aviator.gateway.models import ModelDirectory
from aviator.governance.view import PolicyView
from aviator.identity import tokens
from aviator.identity.jwk import b64url_encode
from aviator.identity.keys import KeyRing
from aviator.identity.verify import TokenVerifier, plane_issuer
from aviator.settings import GatewaySettings, IdentitySettings, StoreSettings
from aviator.store.sqlite import SqliteStore

from .conftest import (
    CHAT_BODY,
    FakeUpstream,
    GatewayClient,
    NoObjects,
    StaticFeed,
    governed,
    replica,
    sample,
    until,
)

Start = Callable[..., Awaitable[FakeUpstream]]
IDENTITY = IdentitySettings()
ADMIN_TOKEN = "admin-secret-0123"
BODY = {**CHAT_BODY, "max_tokens": 10}
BOT_POLICY = """
permit (principal == Agent::"team/bot", action == Action::"infer",
        resource == ModelDeployment::"team/chat");
"""


class Clock:
    """The governance clock (seconds since the epoch), moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    store: SqliteStore
    ring: KeyRing
    view: PolicyView
    gateway: Gateway
    client: GatewayClient
    clock: Clock
    audit_path: Path

    def token(self, name: str = "bot", **claims: Any) -> str:
        return tokens.mint(
            key=self.ring.active,
            issuer=IDENTITY.effective_issuer,
            trust_domain=IDENTITY.trust_domain,
            namespace="team",
            name=name,
            audience=claims.pop("audience", "gateway"),
            ttl_s=claims.pop("ttl_s", 300),
            now=claims.pop("now", time.time()),
        ).token

    async def chat(
        self, token: str | None, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.client.post(
            "/v1/chat/completions", data=orjson.dumps(body or BODY), headers=sent
        ) as resp:
            raw = await resp.read()
            doc = orjson.loads(raw) if resp.content_type == "application/json" else {}
            return resp.status, dict(resp.headers), doc

    async def put(self, kind: kinds.KindInfo, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"].get("namespace")
        return await self.store.create(kind, admission.admit(body, kind=kind, namespace=namespace))

    async def grant(self, name: str, *, agent: str = "other", seconds: float = 600) -> None:
        created = await self.put(
            kinds.GRANT,
            {
                "metadata": {"name": name, "namespace": "team"},
                "spec": {
                    "agent": agent,
                    "actions": ["infer"],
                    "resources": ["md/chat"],
                    "purpose": "backfill",
                    "durationSeconds": 600,
                },
            },
        )
        created["status"] = {
            "phase": "Active",
            "expiresAt": format_time(datetime.now(UTC) + timedelta(seconds=seconds)),
        }
        await self.store.replace_status(kinds.GRANT, created)
        await until(lambda: f"grant:team/{name}" in self.view.compiled.statements)

    async def revoke(self, name: str) -> None:
        current = await self.store.get(kinds.GRANT, "team", name)
        current["status"]["phase"] = "Revoked"
        await self.store.replace_status(kinds.GRANT, current)

    def records(self) -> list[AuditRecord]:
        return [AuditRecord.from_json(e.record) for e in AuditReader(self.audit_path).iterate()]


async def stream_slowly(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b'data: {"n": 1}\n\n')
    await up.proceed.wait()
    for n in range(2, 50):
        await resp.write(b'data: {"n": %d}\n\n' % n)
        await asyncio.sleep(0.01)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def answer_with_usage(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )


@pytest.fixture
async def world(tmp_path: Path, upstreams: Start) -> AsyncIterator[World]:
    store = await SqliteStore.open(tmp_path / "store.db", settings=StoreSettings())
    ring = KeyRing.load_or_create(tmp_path / "keys")
    md = {
        "metadata": {"name": "chat", "namespace": "team"},
        "spec": {"model": {"name": "m"}, "engine": "sim"},
    }
    clock = Clock()
    view = PolicyView(source=store)
    verifier = TokenVerifier(
        issuers=[plane_issuer(IDENTITY, keys=ring, audience="gateway")],
        trust_domain=IDENTITY.trust_domain,
        agents=view.agents,
    )
    directory = ModelDirectory()
    table = EndpointTable()
    gateway = Gateway(
        settings=GatewaySettings(max_body_bytes=64 * 1024, metrics_interval_s=0),
        table=table,
        feed=StaticFeed(),
        authenticator=Credentials(admin_token=ADMIN_TOKEN, verifier=verifier),
        governance=Governance(view=view, audit_path=tmp_path / "audit.db", clock=clock),
        directory=directory,
    )
    client = GatewayClient(gateway)
    w = World(store, ring, view, gateway, client, clock, tmp_path / "audit.db")
    stored = await w.put(kinds.MODEL_DEPLOYMENT, md)
    directory.apply("ADDED", stored)
    budgets = {"tokensPerMinute": 100, "maxConcurrentRequests": 1}
    for name, spec in (("bot", {"budgets": budgets}), ("other", {})):
        body = {"metadata": {"name": name, "namespace": "team"}, "spec": {"owner": "a", **spec}}
        await w.put(kinds.AGENT, body)
    await w.put(kinds.POLICY, {"metadata": {"name": "bot"}, "spec": {"cedar": BOT_POLICY}})
    up = await upstreams("a", answer_with_usage)
    table.apply("ADDED", replica("a", url=up.url, namespace="team"))
    await client.start_server()
    try:
        await until(lambda: view.synced.is_set() and view.agent("team", "other") is not None)
        await until(lambda: "bot" in view.compiled.policy_names)
        await until(lambda: gateway.governance.synced)  # the audit writer runs too
        yield w
    finally:
        await client.close()
        await store.close()


def _jwt(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    head = b64url_encode(json.dumps(header).encode())
    body = b64url_encode(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url_encode(sign(f'{head}.{body}'.encode()))}"


def _claims(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    token = world.token()
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "==")) for p in token.split(".")[:2])
    return header, claims


async def test_every_bad_token_is_401_with_its_reason_and_none_is_audited(
    world: World, tmp_path: Path
) -> None:
    header, claims = _claims(world)
    public = world.ring.active.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    valid = world.token()
    head, body, signature = valid.split(".")
    forged = f"{head}.{body}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    stranger = KeyRing.load_or_create(tmp_path / "stranger")
    unknown_kid = tokens.mint(
        key=stranger.active,
        issuer=IDENTITY.effective_issuer,
        trust_domain=IDENTITY.trust_domain,
        namespace="team",
        name="bot",
        audience="gateway",
        ttl_s=300,
        now=time.time(),
    ).token
    cases = {
        None: "missing",
        "not-a-token": "malformed",
        world.token(now=time.time() - 3600): "expired",
        world.token(now=time.time() + 3600): "not_yet_valid",
        world.token(audience="control-api"): "wrong_audience",
        _jwt({**header, "alg": "none"}, claims, lambda _: b""): "bad_algorithm",
        _jwt(
            {**header, "alg": "HS256"},
            claims,
            lambda data: hmac.new(public, data, hashlib.sha256).digest(),
        ): "bad_algorithm",
        unknown_kid: "unknown_key",
        forged: "bad_signature",
        world.token(name="ghost"): "unknown_agent",
    }
    for token, reason in cases.items():
        status, headers, doc = await world.chat(token)
        assert status == 401, (reason, doc)
        challenge = headers["WWW-Authenticate"]
        if reason == "missing":
            assert challenge == 'Bearer realm="aviator"'
        else:
            assert f'error_description="{reason}"' in challenge
        assert doc["error"]["type"] == "authentication_error"
        if token is not None:
            assert token not in json.dumps(doc) and token not in challenge
    assert (await world.chat(valid))[0] == 200
    await world.gateway.governance.aclose()
    records = world.records()
    assert [r.decision for r in records] == ["allow"]  # 401s are not policy decisions
    text = await (await world.client.get("/metrics")).text()
    assert sample(text, "aviator_gateway_refused_requests_total", reason="unauthenticated") == len(
        cases
    )


async def test_policy_permits_the_bot_denies_others_and_both_are_audited(world: World) -> None:
    status, _, doc = await world.chat(world.token())
    assert status == 200
    status, _, doc = await world.chat(world.token("other"))
    assert status == 403
    assert doc["error"]["type"] == "permission_error"
    assert doc["error"]["code"] == "policy_denied"
    assert "default deny" in doc["error"]["message"]
    assert (await world.chat(ADMIN_TOKEN))[0] == 200  # never subject to policy
    await world.gateway.governance.aclose()
    allow, deny, admin = world.records()
    assert (allow.principal_kind, allow.decision, allow.action) == ("agent", "allow", "infer")
    assert allow.resource == 'ModelDeployment::"team/chat"'
    assert allow.policies == ("bot",) and allow.source == "gateway"
    assert allow.tokens is not None and (allow.tokens.prompt, allow.tokens.completion) == (7, 3)
    assert allow.extra["status"] == 200
    assert deny.decision == "deny" and deny.principal.endswith("/ns/team/agent/other")
    assert deny.extra["status"] == 403 and "default deny" in deny.reason
    assert admin.principal_kind == "admin" and admin.decision == "allow"


async def test_two_principals_of_one_agent_are_each_recorded_as_themselves(world: World) -> None:
    """Their requests share one decision lane (the policies see the Agent), and the lane
    remembers its record templates: each principal's records still name that principal."""
    governance = world.gateway.governance
    assert (await world.chat(world.token()))[0] == 200  # the bot's token: the lane is made
    elsewhere = Principal(  # the same Agent, through another issuer's token
        kind="agent", id="spiffe://idp.example/ns/team/agent/bot", namespace="team", name="bot"
    )
    for request_id in ("r-idp-1", "r-idp-2"):
        admission = governance.admit(
            elsewhere,
            operation="chat",
            model="m",
            deployment="team/chat",
            body=BODY,
            priority="standard",
            intent_header=None,
            request_id=request_id,
        )
        governance.finish(admission, code=200)
    assert (await world.chat(world.token()))[0] == 200
    await governance.aclose()
    records = world.records()
    bot = f"spiffe://{IDENTITY.trust_domain}/ns/team/agent/bot"
    assert [r.principal for r in records] == [bot, elsewhere.id, elsewhere.id, bot]
    assert {(r.decision, r.policies) for r in records} == {("allow", ("bot",))}


async def test_policy_decisions_are_timed_and_the_admins_are_not(world: World) -> None:
    async def decisions() -> float | None:
        text = await (await world.client.get("/metrics")).text()
        return sample(text, "aviator_gateway_policy_decision_seconds_count")

    assert await decisions() == 0
    assert (await world.chat(world.token()))[0] == 200
    assert (await world.chat(world.token("other")))[0] == 403  # a denial is a decision too
    assert (await world.chat(ADMIN_TOKEN))[0] == 200  # not decided: not timed
    assert (await world.chat("not-a-token"))[0] == 401  # never reached the policies
    assert await decisions() == 2
    text = await (await world.client.get("/metrics")).text()
    total = sample(text, "aviator_gateway_policy_decision_seconds_sum")
    assert total is not None and 0 < total < 1


async def test_a_declared_grant_scopes_the_request_to_it(world: World) -> None:
    await world.grant("q3")
    other = world.token("other")
    assert (await world.chat(other))[0] == 200  # the grant permits it, declared or not
    status, _, _ = await world.chat(other, headers={"x-aviator-intent": "q3"})
    assert status == 200
    assert (await world.chat(other, headers={"x-aviator-intent": "backfill"}))[0] == 200
    # The bot is allowed by standing policy, but declaring a grant that is not its own scopes
    # the request to that grant, which does not cover it.
    status, _, doc = await world.chat(world.token(), headers={"x-aviator-intent": "team/q3"})
    assert status == 403 and "outside the declared intent" in doc["error"]["message"]
    await world.revoke("q3")
    await until(lambda: "grant:team/q3" not in world.view.compiled.statements)
    status, _, doc = await world.chat(other, headers={"x-aviator-intent": "q3"})
    assert status == 403 and "not active" in doc["error"]["message"]
    await world.gateway.governance.aclose()
    extras = [r.extra for r in world.records()]
    assert extras[1]["grant"] == "team/q3" and extras[2]["intent"] == "backfill"


async def test_a_long_intent_header_is_read_and_remembered_cut(world: World) -> None:
    """Only the first 256 characters of ``x-aviator-intent`` count, and only they are kept in the
    lanes a gateway remembers (a client's kilobytes would otherwise stay in memory)."""
    long = "backfill" + "x" * 4_000
    assert (await world.chat(world.token(), headers={"x-aviator-intent": long}))[0] == 200
    lanes = world.gateway.governance._lanes
    assert lanes and all(len(key[-1] or "") <= 256 for key in lanes)
    await world.gateway.governance.aclose()
    assert world.records()[-1].extra["intent"] == long[:256]


async def test_budgets_refuse_with_429_and_retry_after(world: World, upstreams: Start) -> None:
    bot = world.token()
    assert estimate_tokens("chat", BODY) == 2 + 10  # "hi there": 8 characters
    assert (await world.chat(bot))[0] == 200  # settled at its usage: 10 tokens
    big = {**BODY, "max_tokens": 95}  # 10 used + 97 estimated > 100
    status, headers, doc = await world.chat(bot, big)
    assert status == 429
    assert doc["error"]["code"] == "budget_exceeded" and doc["error"]["param"] == "tokensPerMinute"
    assert doc["error"]["type"] == "rate_limit_error"
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Concurrency: one request in flight at a time.
    held = await upstreams("held", stream_slowly)
    world.gateway.table.apply("DELETED", replica("a", namespace="team"))
    world.gateway.table.apply("ADDED", replica("held", url=held.url, namespace="team"))
    first = asyncio.create_task(world.chat(bot, {**BODY, "stream": True}))
    await asyncio.wait_for(held.started.wait(), 5)
    status, headers, doc = await world.chat(bot)
    assert status == 429 and doc["error"]["param"] == "maxConcurrentRequests"
    assert headers["Retry-After"] == "1"
    held.proceed.set()
    assert (await first)[0] == 200
    await world.gateway.governance.aclose()
    refusals = [r for r in world.records() if r.decision == "deny"]
    assert [r.extra["budget"] for r in refusals] == ["tokensPerMinute", "maxConcurrentRequests"]
    assert all(r.extra["status"] == 429 for r in refusals)


async def test_a_changed_budget_applies_once_the_view_recompiles(world: World) -> None:
    """Limits are remembered per agent until the next compile of the view, which every change of
    an Agent brings: a raised budget admits what the old one refused."""
    bot = world.token()
    big = {**BODY, "max_tokens": 150}  # 152 estimated > 100 per minute
    assert (await world.chat(bot, big))[0] == 429
    generation = world.view.generation
    current = await world.store.get(kinds.AGENT, "team", "bot")
    current["spec"]["budgets"] = {"tokensPerMinute": 1_000, "maxConcurrentRequests": 1}
    await world.store.replace(
        kinds.AGENT, admission.admit(current, kind=kinds.AGENT, namespace="team")
    )
    await until(lambda: world.view.generation > generation)
    assert (await world.chat(bot, big))[0] == 200


async def _stream_cut(world: World, upstreams: Start, end: Callable[[], Awaitable[None]]) -> str:
    """Start a grant-permitted streamed request, ``end`` its grant, and return why it was cut."""
    up = await upstreams("slow", stream_slowly)
    world.gateway.table.apply("DELETED", replica("a", namespace="team"))
    world.gateway.table.apply("ADDED", replica("slow", url=up.url, namespace="team"))
    await world.grant("live")
    headers = {"Authorization": f"Bearer {world.token('other')}"}
    async with world.client.post(
        "/v1/chat/completions", data=orjson.dumps({**BODY, "stream": True}), headers=headers
    ) as resp:
        assert resp.status == 200
        assert await resp.content.readline() == b'data: {"n": 1}\n'
        await end()
        up.proceed.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    await until(up.cancelled.is_set)  # the replica saw the request cancelled
    await world.gateway.governance.aclose()
    last = world.records()[-1]
    assert last.extra["status"] == 403
    text = await (await world.client.get("/metrics")).text()
    assert sample(text, "aviator_gateway_refused_requests_total", reason="grant_ended") == 1
    return str(last.extra["cutOff"])


async def test_a_stream_ends_when_its_grant_is_revoked(world: World, upstreams: Start) -> None:
    async def revoke() -> None:
        await world.revoke("live")
        await until(lambda: "grant:team/live" not in world.view.compiled.statements)

    assert await _stream_cut(world, upstreams, revoke) == "grant team/live was revoked"


async def test_a_stream_ends_when_its_grant_expires(world: World, upstreams: Start) -> None:
    async def expire() -> None:
        world.clock.now += 3600  # the grant's 600 s are over by the gateway's clock

    assert await _stream_cut(world, upstreams, expire) == "grant team/live expired"


async def test_insecure_lets_anonymous_callers_in_and_says_so(upstreams: Start) -> None:
    up = await upstreams("a")
    credentials, governance = governed(insecure=True)
    table = EndpointTable()
    table.apply("ADDED", replica("a", url=up.url))
    gateway = Gateway(
        settings=GatewaySettings(metrics_interval_s=0),
        table=table,
        feed=StaticFeed(),
        authenticator=credentials,
        governance=governance,
    )
    async with GatewayClient(gateway) as client:
        async with client.post("/v1/chat/completions", data=orjson.dumps(BODY)) as resp:
            assert resp.status == 200
        text = await (await client.get("/metrics")).text()
        assert sample(text, "aviator_gateway_insecure") == 1
    with pytest.raises(ValueError, match="PolicyView"):
        Governance(view=None)


class NeverListed(NoObjects):
    """A source whose lists never answer: the policy view never syncs."""

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_health_waits_for_the_policies_too() -> None:
    gateway = Gateway(
        settings=GatewaySettings(metrics_interval_s=0),
        table=EndpointTable(),
        feed=StaticFeed(),  # the replicas are synced
        authenticator=Credentials(admin_token=ADMIN_TOKEN),
        governance=Governance(view=PolicyView(source=NeverListed())),
    )
    async with GatewayClient(gateway) as client:
        async with client.get("/health") as resp:
            assert resp.status == 503
        assert sample(await (await client.get("/metrics")).text(), "aviator_gateway_insecure") == 0


async def test_an_audit_log_that_cannot_be_written_keeps_the_gateway_closed(
    tmp_path: Path, upstreams: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: until the audit writer runs (here: never, the path is a directory) the gateway
    is not healthy and answers every request, the admin's too, with 503 rather than unrecorded."""
    up = await upstreams("a")
    table = EndpointTable()
    table.apply("ADDED", replica("a", url=up.url))
    (tmp_path / "audit.db").mkdir()
    governance = Governance(view=PolicyView(source=NoObjects()), audit_path=tmp_path / "audit.db")
    gateway = Gateway(
        settings=GatewaySettings(metrics_interval_s=0),
        table=table,
        feed=StaticFeed(),
        authenticator=Credentials(admin_token=ADMIN_TOKEN),
        governance=governance,
    )
    async with GatewayClient(gateway) as client:
        await until(lambda: any("cannot be written" in r.getMessage() for r in caplog.records))
        assert governance.view is not None and governance.view.synced.is_set()
        async with client.get("/health") as resp:
            assert resp.status == 503
        async with client.post(
            "/v1/chat/completions",
            data=orjson.dumps(BODY),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as resp:
            assert resp.status == 503
    assert up.hits == []
