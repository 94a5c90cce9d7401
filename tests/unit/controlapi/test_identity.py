"""The identity endpoints of the Control API: public JWKS, token requests, key rotation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp.test_utils import TestServer

from aviator.api import admission, kinds
from aviator.controlapi.app import build_app
from aviator.controlapi.identity import IdentityApi
from aviator.identity.keys import KeyRing
from aviator.identity.verify import InvalidToken, TokenVerifier, plane_issuer
from aviator.settings import ApiSettings, IdentitySettings, StoreSettings
from aviator.store.sqlite import SqliteStore

TOKEN = "admin-t0ken"
NOW = 1_795_000_000.0
GROUP = "/apis/aviator.dev/v1alpha1"
TOKEN_PATH = f"{GROUP}/namespaces/default/agents/bot/token"
JWKS = "/.well-known/jwks.json"


def agent(name: str = "bot", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"owner": "alice@example.com", "purpose": "answers tickets", **spec},
    }


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "db.sqlite", settings=StoreSettings())
    await s.create(kinds.AGENT, admission.admit(agent(), kind=kinds.AGENT, namespace="default"))
    await s.create(
        kinds.AGENT,
        admission.admit(
            agent("multi", audiences=["gateway", "control-api"]), kind=kinds.AGENT, namespace="team"
        ),
    )
    yield s
    await s.close()


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


@pytest.fixture
async def http(store: SqliteStore, ring: KeyRing, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(
        store=store,
        settings=ApiSettings(max_body_bytes=64 * 1024),
        token=TOKEN,
        identity=IdentityApi(keyring=ring, settings=IdentitySettings(max_ttl_s=3600), clock=clock),
    )
    server = TestServer(app)
    await server.start_server()
    async with httpx.AsyncClient(
        base_url=str(server.make_url("")), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client
    await server.close()


def verifier(ring: KeyRing, clock: Clock, audience: str = "gateway") -> TokenVerifier:
    return TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience=audience)],
        trust_domain="aviator.local",
        clock=clock,
    )


async def test_jwks_is_public(http: httpx.AsyncClient, ring: KeyRing) -> None:
    response = await http.get(JWKS, headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert "max-age" in response.headers["Cache-Control"]
    doc = response.json()
    assert doc == ring.jwks()
    (key,) = doc["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"], key["kid"]) == (
        "EC",
        "P-256",
        "ES256",
        "sig",
        ring.active.kid,
    )
    head = await http.head(JWKS, headers={"Authorization": ""})
    assert head.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", TOKEN_PATH),
        ("GET", f"{GROUP}/keys"),
        ("POST", f"{GROUP}/keys/rotate"),
        ("POST", JWKS),  # only reading the JWKS is public
        ("GET", JWKS + "/"),
        ("GET", "/.well-known/JWKS.json"),
        ("GET", "/.well-known/jwks.json/../../apis/aviator.dev/v1alpha1/keys"),
        ("GET", "/.well-known/openid-configuration"),
        ("GET", f"{GROUP}/namespaces/default/agents"),
    ],
)
async def test_everything_else_needs_the_admin_token(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-the-token"}):
        response = await http.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["reason"] == "Unauthorized"


async def test_issue_a_token(http: httpx.AsyncClient, ring: KeyRing, clock: Clock) -> None:
    response = await http.post(TOKEN_PATH, json={"audience": "gateway", "ttlSeconds": 600})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"token", "expiresAt", "kid"}
    assert body["kid"] == ring.active.kid
    assert body["expiresAt"] == "2026-11-18T11:16:40Z"  # NOW + 600 s
    principal = verifier(ring, clock).verify(body["token"])
    assert principal.id == "spiffe://aviator.local/ns/default/agent/bot"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600 and claims["aud"] == "gateway"


async def test_defaults_are_the_first_audience_and_15_minutes(
    http: httpx.AsyncClient, ring: KeyRing, clock: Clock
) -> None:
    for kwargs in ({}, {"json": {}}, {"content": b"", "headers": {"Content-Type": ""}}):
        response = await http.post(TOKEN_PATH, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 201, response.text
        claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
        assert claims["aud"] == "gateway" and claims["exp"] - claims["iat"] == 900


async def test_another_of_the_agents_audiences(
    http: httpx.AsyncClient, ring: KeyRing, clock: Clock
) -> None:
    path = f"{GROUP}/namespaces/team/agents/multi/token"
    response = await http.post(path, json={"audience": "control-api"})
    assert response.status_code == 201
    token = response.json()["token"]
    assert verifier(ring, clock, "control-api").verify(token).agent_key == "team/multi"
    with pytest.raises(InvalidToken) as info:
        verifier(ring, clock, "gateway").verify(token)
    assert info.value.reason == "wrong_audience"


async def test_unknown_agent_is_404(http: httpx.AsyncClient) -> None:
    for path in (
        f"{GROUP}/namespaces/default/agents/nobody/token",
        f"{GROUP}/namespaces/team/agents/bot/token",  # bot lives in default
    ):
        response = await http.post(path, json={})
        assert response.status_code == 404
        assert response.json()["reason"] == "NotFound"


async def test_an_audience_outside_the_spec_is_422(http: httpx.AsyncClient) -> None:
    response = await http.post(TOKEN_PATH, json={"audience": "control-api"})
    assert response.status_code == 422
    (cause,) = response.json()["details"]["causes"]
    assert cause["field"] == "audience"
    assert "spec.audiences (gateway)" in cause["message"]


@pytest.mark.parametrize(
    ("ttl", "message"),
    [
        (3601, "at most 3600 seconds (1h)"),
        (86400, "at most 3600"),
        (30, "at least 60"),
        (0, "at least"),
    ],
)
async def test_a_lifetime_outside_the_bounds_is_422(
    http: httpx.AsyncClient, ttl: int, message: str
) -> None:
    response = await http.post(TOKEN_PATH, json={"ttlSeconds": ttl})
    assert response.status_code == 422
    (cause,) = response.json()["details"]["causes"]
    assert cause["field"] == "ttlSeconds" and message in cause["message"]


async def test_both_problems_are_reported_together(http: httpx.AsyncClient) -> None:
    response = await http.post(TOKEN_PATH, json={"audience": "x", "ttlSeconds": 7200})
    assert response.status_code == 422
    assert [c["field"] for c in response.json()["details"]["causes"]] == ["audience", "ttlSeconds"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"ttl": 600}', 422, "ttl"),
        (b'{"ttlSeconds": "ten"}', 422, "ttlSeconds"),
        (b'{"audience": ""}', 422, "audience"),
        (b"[1]", 400, None),
        (b"{not json", 400, None),
    ],
)
async def test_bad_bodies(
    http: httpx.AsyncClient, body: bytes, status: int, field: str | None
) -> None:
    response = await http.post(
        TOKEN_PATH, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    if field:
        assert response.json()["details"]["causes"][0]["field"] == field


async def test_an_invalid_namespace_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{GROUP}/namespaces/Bad_NS/agents/bot/token", json={})
    assert response.status_code == 400


async def test_rotate_and_list_keys(http: httpx.AsyncClient, ring: KeyRing, clock: Clock) -> None:
    old_kid = ring.active.kid
    before = (await http.post(TOKEN_PATH, json={"ttlSeconds": 3600})).json()["token"]
    response = await http.post(f"{GROUP}/keys/rotate")
    assert response.status_code == 200
    body = response.json()
    assert body["kid"] == ring.active.kid != old_kid
    assert [k["kid"] for k in body["jwks"]["keys"]] == [ring.active.kid, old_kid]
    rows = {k["kid"]: k for k in body["keys"]}
    assert rows[old_kid]["active"] is False and rows[old_kid]["retiredAt"]
    assert rows[old_kid]["publishedUntil"] and rows[body["kid"]]["publishedUntil"] is None

    listed = (await http.get(f"{GROUP}/keys")).json()
    assert listed == {"keys": body["keys"]}
    jwks = (await http.get(JWKS, headers={"Authorization": ""})).json()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, ring.active.kid}

    after = (await http.post(TOKEN_PATH, json={})).json()
    assert jwt.get_unverified_header(after["token"])["kid"] == ring.active.kid
    check = verifier(ring, clock)
    assert check.verify(before).name == "bot"  # issued before the rotation, still good
    assert check.verify(after["token"]).name == "bot"


async def test_a_kind_called_keys_does_not_exist(http: httpx.AsyncClient) -> None:
    response = await http.get(f"{GROUP}/namespaces/default/keys")
    assert response.status_code == 404


async def test_without_identity_the_jwks_is_simply_absent(store: SqliteStore) -> None:
    app = build_app(store=store, settings=ApiSettings(), token=TOKEN)
    server = TestServer(app)
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
            assert (await client.get(JWKS)).status_code == 404
            assert (await client.post(TOKEN_PATH, json={})).status_code == 401
    finally:
        await server.close()
