"""The gateway's credential chain: admin token, API keys, agent tokens; what each refusal says."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from multidict import CIMultiDict

from aviator.api.principal import ADMIN, ANONYMOUS
from aviator.gateway.auth import Credentials, Unauthenticated, api_key_principal, load_api_keys
from aviator.identity import tokens
from aviator.identity.keys import KeyRing
from aviator.identity.verify import TokenVerifier, plane_issuer
from aviator.settings import IdentitySettings

IDENTITY = IdentitySettings()


def headers(value: str | None) -> CIMultiDict[str]:
    return CIMultiDict() if value is None else CIMultiDict({"authorization": value})


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


def verifier(ring: KeyRing) -> TokenVerifier:
    return TokenVerifier(
        issuers=[plane_issuer(IDENTITY, keys=ring, audience="gateway")],
        trust_domain=IDENTITY.trust_domain,
    )


def mint(ring: KeyRing, *, audience: str = "gateway") -> str:
    return tokens.mint(
        key=ring.active,
        issuer=IDENTITY.effective_issuer,
        trust_domain=IDENTITY.trust_domain,
        namespace="default",
        name="bot",
        audience=audience,
        ttl_s=300,
        now=time.time(),
    ).token


def test_the_admin_token_api_keys_and_agent_tokens_each_name_their_principal(
    ring: KeyRing,
) -> None:
    chain = Credentials(admin_token="adm", api_keys=["sk-one", "sk-two"], verifier=verifier(ring))
    assert chain.authenticate(headers("Bearer adm")) is ADMIN
    one = chain.authenticate(headers("bearer   sk-one "))
    assert one == api_key_principal("sk-one")
    assert one.kind == "apikey" and one.id.startswith("apikey:")
    assert "sk-" not in repr(one)
    assert chain.authenticate(headers("Bearer sk-two")) != one
    agent = chain.authenticate(headers(f"Bearer {mint(ring)}"))
    assert agent.kind == "agent" and agent.agent_key == "default/bot"


def test_a_remembered_agent_token_is_the_same_principal_however_the_header_is_spaced(
    ring: KeyRing,
) -> None:
    checker = verifier(ring)
    chain = Credentials(admin_token="adm", verifier=checker)
    token = mint(ring)
    first = chain.authenticate(headers(f"Bearer {token}"))  # verified, then remembered
    for value in (
        f"Bearer {token}",  # the usual form (cut without strip/partition)
        f"bearer {token}",
        f"Bearer  {token}",
        f" Bearer {token}\t",
        f"BEARER {token} ",
    ):
        assert chain.authenticate(headers(value)) == first, value
    stats = checker.cache_stats()
    assert (stats.misses, stats.hits) == (1, 5)  # each found remembered, none verified again
    for value in (f"Bearer {token}x", f"Bearer x{token}", f"Basic {token}"):
        with pytest.raises(Unauthenticated):
            chain.authenticate(headers(value))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer", "missing"),
        ("Bearer ", "missing"),
        ("Basic sk-one", "missing"),
        ("Bearer sk-on", "malformed"),
        ("Bearer sk-one2", "malformed"),
        ("Bearer a.b.c", "malformed"),
    ],
)
def test_anything_else_is_refused_with_a_reason_and_never_the_credential(
    ring: KeyRing, value: str | None, reason: str
) -> None:
    chain = Credentials(admin_token="adm", api_keys=["sk-one"], verifier=verifier(ring))
    with pytest.raises(Unauthenticated) as info:
        chain.authenticate(headers(value))
    assert info.value.reason == reason
    assert info.value.challenge.startswith('Bearer realm="aviator"')
    if value and (secret := value.partition(" ")[2].strip()):
        assert secret not in info.value.challenge


def test_without_a_verifier_only_the_configured_secrets_work(ring: KeyRing) -> None:
    chain = Credentials(admin_token="adm")
    with pytest.raises(Unauthenticated):
        chain.authenticate(headers(f"Bearer {mint(ring)}"))


def test_insecure_lets_only_requests_without_credentials_in_as_anonymous(ring: KeyRing) -> None:
    chain = Credentials(admin_token="adm", verifier=verifier(ring), insecure=True)
    assert chain.authenticate(headers(None)) is ANONYMOUS
    assert chain.authenticate(headers("Bearer adm")) is ADMIN
    with pytest.raises(Unauthenticated) as info:  # a credential sent is checked even so
        chain.authenticate(headers(f"Bearer {mint(ring, audience='control-api')}"))
    assert info.value.reason == "wrong_audience"


def test_key_files_skip_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# clients\n\nsk-one\n  sk-two  \n")
    assert load_api_keys(path) == ["sk-one", "sk-two"]
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no API key") as info:
        load_api_keys(path)
    assert str(path) in str(info.value)
