"""Trusted external issuers: JWKS files and URLs (over an in-process transport) and tokens mapped
onto agents, e.g. Kubernetes service-account tokens."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from aviator.identity.sources import JwksError, JwksFile, JwksUrl, TrustedIssuers
from aviator.identity.verify import InvalidToken, TokenVerifier, trusted_issuer
from aviator.settings import TrustedIssuerSettings

from .helpers import NOW, FakeClock, sign

K8S_ISSUER = "https://kubernetes.default.svc.cluster.local"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(*keys: tuple[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    out = []
    for kid, key in keys:
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        out.append({**jwk, "kid": kid, "use": "sig"})
    return {"keys": out}


def sa_claims(**overrides: Any) -> dict[str, Any]:
    """A projected Kubernetes service-account token's claims."""
    base: dict[str, Any] = {
        "iss": K8S_ISSUER,
        "sub": "system:serviceaccount:team-a:summarizer",
        "aud": ["aviator"],
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "summarizer"}},
    }
    base.update(overrides)
    return base


def k8s_settings(jwks: str) -> TrustedIssuerSettings:
    return TrustedIssuerSettings(
        issuer=K8S_ISSUER,
        jwks=jwks,
        audience="aviator",
        subject_template="system:serviceaccount:{namespace}:{name}",
    )


def write_jwks(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_a_kubernetes_service_account_token_maps_to_an_agent(
    tmp_path: Path, clock: FakeClock
) -> None:
    key = rsa_key()
    write_jwks(tmp_path / "jwks.json", jwks_of(("sa-key", key)))
    source = JwksFile(tmp_path / "jwks.json")
    source.load()
    verifier = TokenVerifier(
        issuers=[trusted_issuer(k8s_settings(str(tmp_path / "jwks.json")), keys=source)],
        trust_domain="aviator.local",
        clock=clock,
    )
    token = sign({"alg": "RS256", "kid": "sa-key"}, sa_claims(), key=key)
    principal = verifier.verify(token)
    assert principal.kind == "agent"
    assert principal.id == "spiffe://aviator.local/ns/team-a/agent/summarizer"
    assert (principal.namespace, principal.name, principal.token_id) == (
        "team-a",
        "summarizer",
        None,
    )

    def reason(token: str) -> str:
        with pytest.raises(InvalidToken) as info:
            verifier.verify(token)
        return info.value.reason

    assert (
        reason(sign({"alg": "RS256", "kid": "sa-key"}, sa_claims(aud=["api"]), key=key))
        == "wrong_audience"
    )
    # External issuers may name several audiences, one of them ours.
    assert (
        verifier.verify(
            sign({"alg": "RS256", "kid": "sa-key"}, sa_claims(aud=["api", "aviator"]), key=key)
        ).name
        == "summarizer"
    )
    assert (
        reason(sign({"alg": "RS256", "kid": "sa-key"}, sa_claims(sub="alice"), key=key))
        == "unknown_agent"
    )
    assert reason(sign({"alg": "RS256", "kid": "other"}, sa_claims(), key=key)) == "unknown_key"
    assert (
        reason(sign({"alg": "RS256", "kid": "sa-key"}, sa_claims(), key=rsa_key()))
        == "bad_signature"
    )
    assert (
        reason(sign({"alg": "HS256", "kid": "sa-key"}, sa_claims(), key=b"secret"))
        == "bad_algorithm"
    )
    assert (
        reason(sign({"alg": "RS256", "kid": "sa-key"}, sa_claims(iss="https://other"), key=key))
        == "unknown_issuer"
    )


def test_a_trusted_issuer_refuses_hmac_in_its_settings() -> None:
    bad = TrustedIssuerSettings(
        issuer="https://idp", jwks="x.json", audience="a", namespace="n", algorithms=("HS256",)
    )
    with pytest.raises(ValueError, match="algorithms"):
        trusted_issuer(bad, keys=JwksFile(Path("x.json")))


def test_a_jwks_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    first, second = rsa_key(), rsa_key()
    path = tmp_path / "jwks.json"
    write_jwks(path, jwks_of(("one", first)))
    source = JwksFile(path)
    source.load()
    assert source.key("one") is not None and source.key("two") is None
    assert source.reload_if_changed() is False
    write_jwks(path, jwks_of(("two", second)))
    assert source.reload_if_changed() is True
    assert source.key("one") is None and source.key("two") is not None
    # A broken new version keeps the previous keys.
    path.write_text("{not json")
    assert source.reload_if_changed() is False
    assert source.key("two") is not None
    path.unlink()
    assert source.reload_if_changed() is False
    assert source.key("two") is not None


@pytest.mark.parametrize(
    "content", [None, "[]", '{"keys": []}', '{"keys": [{"kty": "oct", "k": "AAAA"}]}']
)
def test_a_bad_jwks_file_fails_at_start(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(JwksError):
        JwksFile(path).load()


class FakeIdp:
    """A JWKS endpoint on an httpx.MockTransport: counts fetches, can fail or change keys."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.status = 200
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        assert request.url.path == "/jwks"
        return httpx.Response(self.status, json=self.doc)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


async def test_a_jwks_url_is_fetched_and_refreshed_on_unknown_kid() -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    idp = FakeIdp(jwks_of(("one", first)))
    clock = FakeClock(0.0)
    async with idp.client() as client:
        source = JwksUrl("https://idp.example/jwks", client=client, clock=clock, min_refresh_s=30)
        await source.refresh()
        assert source.key("one") is not None and idp.fetches == 1
        task = asyncio.create_task(source.run())
        try:
            idp.doc = jwks_of(("one", first), ("two", second))
            clock.advance(10)
            source.request_refresh()  # too soon after the last fetch: ignored
            await asyncio.sleep(0.05)
            assert idp.fetches == 1 and source.key("two") is None
            clock.advance(30)
            source.request_refresh()
            for _ in range(100):
                if source.key("two") is not None:
                    break
                await asyncio.sleep(0.01)
            assert source.key("two") is not None and idp.fetches == 2
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_a_failed_fetch_keeps_the_previous_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    idp = FakeIdp(jwks_of(("one", key)))
    async with idp.client() as client:
        source = JwksUrl("https://idp.example/jwks", client=client)
        await source.refresh()
        idp.status = 503
        with pytest.raises(JwksError, match="HTTP 503"):
            await source.refresh()
        assert source.key("one") is not None
        idp.status, idp.doc = 200, {"keys": "nope"}
        with pytest.raises(JwksError):
            await source.refresh()
        assert source.key("one") is not None


async def test_an_oversized_jwks_is_refused() -> None:
    idp = FakeIdp({"keys": [], "padding": "x" * (300 * 1024)})
    async with idp.client() as client:
        source = JwksUrl("https://idp.example/jwks", client=client)
        with pytest.raises(JwksError, match="larger than"):
            await source.refresh()


@pytest.mark.parametrize(
    "url", ["http://idp.example/jwks", "ftp://idp/jwks", "file:///etc/jwks.json", "https:///jwks"]
)
def test_jwks_urls_must_be_https(url: str) -> None:
    with pytest.raises(JwksError):
        JwksUrl(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8081/.well-known/jwks.json", "http://localhost/j", "http://[::1]/j"]
)
async def test_plain_http_is_fine_on_loopback(url: str) -> None:
    source = JwksUrl(url)
    await source.aclose()


async def test_trusted_issuers_load_files_and_urls(tmp_path: Path, clock: FakeClock) -> None:
    file_key, url_key = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    write_jwks(tmp_path / "k8s.json", jwks_of(("sa", file_key)))
    idp = FakeIdp(jwks_of(("idp", url_key)))
    configs = [
        k8s_settings(str(tmp_path / "k8s.json")),
        TrustedIssuerSettings(
            issuer="https://idp.example",
            jwks="https://idp.example/jwks",
            audience="aviator",
            subject_claim="azp",
            namespace="agents",
        ),
    ]
    async with idp.client() as client, TrustedIssuers(configs, client=client) as trusted:
        verifier = TokenVerifier(issuers=trusted.issuers, trust_domain="aviator.local", clock=clock)
        assert verifier.issuers == (K8S_ISSUER, "https://idp.example")
        sa = sign({"alg": "RS256", "kid": "sa"}, sa_claims(), key=file_key)
        assert verifier.verify(sa).agent_key == "team-a/summarizer"
        idp_token = sign(
            {"alg": "ES256", "kid": "idp"},
            {
                "iss": "https://idp.example",
                "sub": "0oa1b2",
                "azp": "billing",
                "aud": "aviator",
                "iat": int(NOW),
                "exp": int(NOW) + 300,
            },
            key=url_key,
        )
        assert verifier.verify(idp_token).agent_key == "agents/billing"
        tasks = list(trusted._tasks)
        assert len(tasks) == 2 and not any(t.done() for t in tasks)
    assert all(t.cancelled() for t in tasks)  # the refreshers stop with the block


async def test_a_missing_jwks_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(JwksError):
        async with TrustedIssuers([k8s_settings(str(tmp_path / "absent.json"))]):
            pass


async def test_an_unreachable_idp_does_not_stop_the_start() -> None:
    idp = FakeIdp({"keys": []})
    idp.status = 500
    async with idp.client() as client:
        config = TrustedIssuerSettings(
            issuer="https://idp.example",
            jwks="https://idp.example/jwks",
            audience="a",
            namespace="n",
        )
        async with TrustedIssuers([config], client=client) as trusted:
            assert trusted.issuers[0].keys.key("x") is None
