"""Agent identity on the real plane: apply an Agent, `aviator token issue`, and check the token
independently with PyJWT against the public `/.well-known/jwks.json`; rotation and a restart."""

from __future__ import annotations

import json
import stat

import httpx
import jwt
import pytest
from tests.integration.plane import PlaneProcess

AGENT = """
apiVersion: aviator.dev/v1alpha1
kind: Agent
metadata: {name: support-bot, namespace: support}
spec:
  owner: team-support
  purpose: answers support tickets
  budgets: {tokensPerMinute: 20000, maxConcurrentRequests: 4}
"""


def jwks_url(plane: PlaneProcess) -> str:
    return f"{plane.api_url}/.well-known/jwks.json"


def check(plane: PlaneProcess, token: str) -> dict[str, object]:
    """Verify as any third party would: fetch the JWKS (no credentials), pick the key by kid."""
    key = jwt.PyJWKClient(jwks_url(plane), cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, object] = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience="gateway",
        issuer="spiffe://aviator.local",
        options={"require": ["exp", "iat", "sub", "aud", "jti"]},
    )
    return claims


@pytest.fixture
def plane(headless_plane: PlaneProcess) -> PlaneProcess:
    """A plane without the gateway: nothing here talks to it."""
    return headless_plane


def test_issue_verify_rotate_restart(plane: PlaneProcess) -> None:
    assert plane.apply(AGENT) == ["agent.aviator.dev/support-bot created"]
    # Four independent commands at once (each spends seconds starting its interpreter).
    listed, issued, refused, missing = plane.cli_concurrently(
        ("get", "agents", "-n", "support"),
        ("token", "issue", "agent/support-bot", "-n", "support", "--ttl", "10m",
         "--audience", "gateway"),
        ("token", "issue", "agent/support-bot", "-n", "support", "--ttl", "2h"),
        ("token", "issue", "agent/nobody", "-n", "support"),
    )  # fmt: skip
    assert listed.stdout.split()[:4] == ["NAME", "OWNER", "PURPOSE", "AGE"], listed.stdout
    assert "support-bot" in listed.stdout and "team-support" in listed.stdout

    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n"
    assert token not in issued.stderr

    claims = check(plane, token)
    assert claims["sub"] == "spiffe://aviator.local/ns/support/agent/support-bot"
    assert claims["aud"] == "gateway"
    assert claims["exp"] - claims["iat"] == 600  # type: ignore[operator]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"

    # The JWKS needs no credentials; everything else does.
    assert httpx.get(jwks_url(plane)).status_code == 200
    assert httpx.get(f"{plane.api_url}/apis/aviator.dev/v1alpha1/keys").status_code == 401

    assert refused.returncode == 1 and "at most 3600 seconds" in refused.stderr
    assert missing.returncode == 1 and "NotFound" in missing.stderr

    # Key files are private.
    keys_dir = plane.data_dir / "keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    old_kid = jwt.get_unverified_header(token)["kid"]
    rotated = plane.cli("keys", "rotate", "-o", "json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["kid"]
    assert new_kid != old_kid
    # The old token still verifies against the published JWKS; new tokens use the new key.
    assert check(plane, token)["sub"] == claims["sub"]
    fresh = plane.agent_token("support-bot", namespace="support")  # what `token issue` calls
    assert jwt.get_unverified_header(fresh)["kid"] == new_kid
    check(plane, fresh)

    # A restart keeps the keys: both tokens still verify, the same key is active.
    plane.stop()
    plane.start("--no-gateway")
    assert check(plane, token)["jti"] == claims["jti"]
    check(plane, fresh)
    listing = plane.cli("keys", "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[1:]}
    assert rows == {old_kid: "retired", new_kid: "active"}
