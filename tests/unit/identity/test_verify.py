"""The verifier against hostile and broken tokens: every refusal has its precise reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aviator.api.principal import Principal
from aviator.identity import tokens
from aviator.identity.jwk import JwkSet, PublicJwk, b64url_encode
from aviator.identity.keys import KeyRing
from aviator.identity.verify import (
    REASONS,
    InvalidToken,
    Issuer,
    TokenVerifier,
    plane_issuer,
)
from aviator.settings import IdentitySettings

from .helpers import ISSUER, NOW, SUB, FakeClock, claims, segment, sign

DUPLICATE_ALG = b'{"alg":"ES256","alg":"none"}'
NAN_EXP = b'{"exp":NaN}'
NOT_UTF8 = b"\xff\xfe"


def reason_of(verifier: TokenVerifier, token: str | None) -> str:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    assert info.value.reason in REASONS
    return info.value.reason


def mint(ring: KeyRing, clock: FakeClock, **kw: Any) -> tokens.MintedToken:
    args: dict[str, Any] = {
        "key": ring.active,
        "issuer": ISSUER,
        "trust_domain": "aviator.local",
        "namespace": "default",
        "name": "bot",
        "audience": "gateway",
        "ttl_s": 900,
        "now": clock(),
    }
    args.update(kw)
    return tokens.mint(**args)


def header(ring: KeyRing, **overrides: Any) -> dict[str, Any]:
    out = {"alg": "ES256", "kid": ring.active.kid, "typ": "JWT", **overrides}
    return {k: v for k, v in out.items() if v is not None}


# -- the good path ---------------------------------------------------------------------------


def test_a_minted_token_gives_the_agent_principal(
    ring: KeyRing, clock: FakeClock, verifier: TokenVerifier
) -> None:
    minted = mint(ring, clock)
    principal = verifier.verify(minted.token)
    assert principal == Principal(
        kind="agent", id=SUB, namespace="default", name="bot", token_id=minted.jti
    )
    assert principal.agent_key == "default/bot"
    assert verifier.authenticate(f"Bearer {minted.token}") == principal
    assert verifier.authenticate(f"bearer   {minted.token} ") == principal


def test_a_hand_signed_token_with_the_plane_key_verifies(
    ring: KeyRing, verifier: TokenVerifier
) -> None:
    token = sign(header(ring), claims(), key=ring.active.private_key)
    assert verifier.verify(token).id == SUB


# -- missing and malformed -------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_no_token_is_missing(verifier: TokenVerifier, value: str | None) -> None:
    assert reason_of(verifier, value) == "missing"


@pytest.mark.parametrize("header_value", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   "])
def test_no_bearer_header_is_missing(verifier: TokenVerifier, header_value: str | None) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier.authenticate(header_value)
    assert info.value.reason == "missing"
    assert info.value.www_authenticate() == 'Bearer realm="aviator"'


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        "eyJhbGciOiJFUzI1NiJ9.e30",  # two parts
        f"{segment(b'not json')}.{segment({})}.AAAA",
        f"{segment([1, 2])}.{segment({})}.AAAA",
        f"{segment({'alg': 'ES256'})}.{segment(b'[]')}.AAAA",
        f"{segment(DUPLICATE_ALG)}.{segment({})}.AAAA",
        f"{segment({'alg': 'ES256'})}.{segment(NAN_EXP)}.AAAA",
        f"{segment(NOT_UTF8)}.{segment({})}.AAAA",
        f"{segment({'alg': 'ES256'})}=.{segment({})}.AAAA",  # padding is not base64url
        f"{segment({'typ': 'JWT'})}.{segment({})}.AAAA",  # no alg at all
        "a" * 9000,
    ],
)
def test_garbage_is_malformed(verifier: TokenVerifier, token: str) -> None:
    assert reason_of(verifier, token) == "malformed"


def test_non_canonical_base64_in_the_signature_is_malformed(
    ring: KeyRing, clock: FakeClock, verifier: TokenVerifier
) -> None:
    token = mint(ring, clock).token
    head, body, sig = token.split(".")
    # 64 bytes make 86 characters with 4 unused low bits in the last one: flip one of them.
    last = sig[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]
    assert reason_of(verifier, f"{head}.{body}.{sig[:-1]}{twin}") == "malformed"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [({"typ": "at+jwt"}, "malformed"), ({"crit": ["exp"]}, "malformed"), ({"kid": 7}, "malformed")],
)
def test_odd_headers_are_refused(
    ring: KeyRing, verifier: TokenVerifier, extra: dict[str, Any], reason: str
) -> None:
    token = sign(header(ring, **extra), claims(), key=ring.active.private_key)
    assert reason_of(verifier, token) == reason


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": None},
        {"iat": None},
        {"sub": None},
        {"aud": None},
        {"jti": None},
        {"exp": "1795000900"},
        {"exp": True},
        {"iat": [1]},
        {"nbf": "soon"},
        {"sub": ""},
        {"sub": 42},
        {"aud": 42},
        {"aud": []},
        {"aud": ["gateway", 3]},
        {"jti": 5},
        {"exp": int(NOW) + 3601 + 60, "iat": int(NOW) - 60},  # longer than the plane ever mints
    ],
)
def test_bad_claims_are_malformed(
    ring: KeyRing, verifier: TokenVerifier, overrides: dict[str, Any]
) -> None:
    token = sign(header(ring), claims(**overrides), key=ring.active.private_key)
    assert reason_of(verifier, token) == "malformed"


# -- algorithms ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(ring: KeyRing, verifier: TokenVerifier, alg: str) -> None:
    unsigned = sign(header(ring, alg=alg), claims(), key=None)
    assert unsigned.endswith(".")
    assert reason_of(verifier, unsigned) == "bad_algorithm"
    # ... also with a signature part that is not empty
    assert reason_of(verifier, unsigned + "AAAA") == "bad_algorithm"


def test_hs256_keyed_with_the_public_key_is_refused(ring: KeyRing, verifier: TokenVerifier) -> None:
    public = ring.active.private_key.public_key()
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        str(ring.jwks()).encode(),
    ):
        token = sign(header(ring, alg="HS256"), claims(), key=secret)
        assert reason_of(verifier, token) == "bad_algorithm"


@pytest.mark.parametrize("alg", ["HS384", "HS512", "ES384", "ES512", "PS256", "RS512", "EdDSA", ""])
def test_other_algorithms_are_refused(ring: KeyRing, verifier: TokenVerifier, alg: str) -> None:
    token = f"{segment(header(ring, alg=alg))}.{segment(claims())}.AAAA"
    assert reason_of(verifier, token) == "bad_algorithm"


def test_rs256_is_not_accepted_from_the_plane(ring: KeyRing, verifier: TokenVerifier) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = sign(header(ring, alg="RS256"), claims(), key=rsa_key)
    assert reason_of(verifier, token) == "bad_algorithm"


# -- keys and signatures ---------------------------------------------------------------------


def test_a_forged_signature_is_refused(ring: KeyRing, verifier: TokenVerifier) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    token = sign(header(ring), claims(), key=forger)  # the plane's kid, another key
    assert reason_of(verifier, token) == "bad_signature"


def test_changed_claims_under_a_valid_signature_are_refused(
    ring: KeyRing, clock: FakeClock, verifier: TokenVerifier
) -> None:
    head, _, sig = mint(ring, clock).token.split(".")
    evil = segment(claims(sub="spiffe://aviator.local/ns/kube-system/agent/admin"))
    assert reason_of(verifier, f"{head}.{evil}.{sig}") == "bad_signature"


@pytest.mark.parametrize("signature", ["", "AAAA", b64url_encode(bytes(64))])
def test_empty_short_or_zero_signatures_are_refused(
    ring: KeyRing, clock: FakeClock, verifier: TokenVerifier, signature: str
) -> None:
    head, body, _ = mint(ring, clock).token.split(".")
    assert reason_of(verifier, f"{head}.{body}.{signature}") == "bad_signature"


def test_an_unknown_or_missing_kid_is_refused(ring: KeyRing, verifier: TokenVerifier) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = sign(header(ring, kid="not-a-key-of-ours"), claims(), key=stranger)
    assert reason_of(verifier, token) == "unknown_key"
    no_kid = sign(header(ring, kid=None), claims(), key=ring.active.private_key)
    assert reason_of(verifier, no_kid) == "unknown_key"


def test_unknown_key_asks_the_source_to_refresh(ring: KeyRing, clock: FakeClock) -> None:
    calls: list[int] = []
    verifier = TokenVerifier(
        issuers=[
            plane_issuer(
                IdentitySettings(),
                keys=ring,
                audience="gateway",
                on_unknown_key=lambda: calls.append(1),
            )
        ],
        trust_domain="aviator.local",
        clock=clock,
    )
    token = sign(header(ring, kid="rotated-elsewhere"), claims(), key=ring.active.private_key)
    assert reason_of(verifier, token) == "unknown_key"
    assert calls == [1]


# -- time ------------------------------------------------------------------------------------


def test_expiry_with_leeway(ring: KeyRing, clock: FakeClock, verifier: TokenVerifier) -> None:
    token = mint(ring, clock, ttl_s=900).token
    clock.advance(900 + 29)  # inside the 30 s leeway
    verifier.clear_cache()
    assert verifier.verify(token).name == "bot"
    clock.advance(1)
    verifier.clear_cache()
    assert reason_of(verifier, token) == "expired"


def test_an_old_token_is_expired(ring: KeyRing, verifier: TokenVerifier) -> None:
    token = sign(
        header(ring), claims(iat=int(NOW) - 7200, exp=int(NOW) - 6300), key=ring.active.private_key
    )
    assert reason_of(verifier, token) == "expired"


@pytest.mark.parametrize(
    "overrides",
    [
        {"iat": int(NOW) + 31, "exp": int(NOW) + 900},
        {"nbf": int(NOW) + 31},
        {"iat": int(NOW) + 3000, "exp": int(NOW) + 3600},
    ],
)
def test_future_tokens_are_not_yet_valid(
    ring: KeyRing, verifier: TokenVerifier, overrides: dict[str, Any]
) -> None:
    token = sign(header(ring), claims(**overrides), key=ring.active.private_key)
    assert reason_of(verifier, token) == "not_yet_valid"


def test_a_little_clock_skew_is_tolerated(ring: KeyRing, verifier: TokenVerifier) -> None:
    token = sign(
        header(ring), claims(iat=int(NOW) + 30, nbf=int(NOW) + 30), key=ring.active.private_key
    )
    assert verifier.verify(token).name == "bot"


# -- audience, issuer, agent -----------------------------------------------------------------


@pytest.mark.parametrize(
    "aud", ["control-api", ["control-api"], ["gateway", "control-api"], "Gateway"]
)
def test_wrong_audience(ring: KeyRing, verifier: TokenVerifier, aud: Any) -> None:
    token = sign(header(ring), claims(aud=aud), key=ring.active.private_key)
    assert reason_of(verifier, token) == "wrong_audience"


def test_a_single_audience_list_is_accepted(ring: KeyRing, verifier: TokenVerifier) -> None:
    token = sign(header(ring), claims(aud=["gateway"]), key=ring.active.private_key)
    assert verifier.verify(token).name == "bot"


@pytest.mark.parametrize("iss", [None, "", "spiffe://other.example", "https://evil", 7])
def test_unknown_issuer(ring: KeyRing, verifier: TokenVerifier, iss: Any) -> None:
    token = sign(header(ring), claims(iss=iss), key=ring.active.private_key)
    assert reason_of(verifier, token) == "unknown_issuer"


@pytest.mark.parametrize(
    "sub",
    [
        "spiffe://other.example/ns/default/agent/bot",
        "spiffe://aviator.local/ns/default/sa/bot",
        "spiffe://aviator.local/ns/Default/agent/bot",
        "spiffe://aviator.local/ns/default/agent/",
        "spiffe://aviator.local/ns/default/agent/bot/extra",
        "spiffe://aviator.local/ns//agent/bot",
        "system:serviceaccount:default:bot",
        "spiffe://aviator.local/ns/default/agent/" + "a" * 300,
    ],
)
def test_subjects_that_name_no_agent(ring: KeyRing, verifier: TokenVerifier, sub: str) -> None:
    token = sign(header(ring), claims(sub=sub), key=ring.active.private_key)
    assert reason_of(verifier, token) == "unknown_agent"


def test_a_deleted_agent_is_unknown_even_from_the_cache(ring: KeyRing, clock: FakeClock) -> None:
    agents = {("default", "bot")}
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience="gateway")],
        trust_domain="aviator.local",
        clock=clock,
        agents=agents,
    )
    token = mint(ring, clock).token
    assert verifier.verify(token).name == "bot"
    agents.clear()
    assert reason_of(verifier, token) == "unknown_agent"
    assert verifier.cache_stats().hits == 1


# -- rotation --------------------------------------------------------------------------------


def test_tokens_of_a_rotated_key_verify_until_it_is_pruned(
    ring: KeyRing, clock: FakeClock, verifier: TokenVerifier
) -> None:
    old = mint(ring, clock, ttl_s=3600).token
    clock.advance(60)
    ring.rotate(clock.datetime())
    new = mint(ring, clock).token
    assert verifier.verify(old).name == "bot"
    assert verifier.verify(new).name == "bot"
    # Up to the old token's expiry (plus leeway) it keeps working, from the cache or not.
    clock.advance(3600 - 60 + 29)
    assert ring.prune(clock.datetime()) == []
    verifier.clear_cache()
    assert verifier.verify(old).name == "bot"
    clock.advance(1)
    assert reason_of(verifier, old) == "expired"
    # At retired_at + max TTL + leeway the key is gone: no token it signed can be valid.
    retired = ring.keys[0]
    assert retired.retired_at is not None
    assert retired.published_until == retired.retired_at + timedelta(seconds=3630)
    clock.now = retired.published_until.timestamp() - 1
    assert ring.prune(clock.datetime()) == []
    clock.advance(1)
    assert ring.prune(clock.datetime()) == [retired.kid]
    assert reason_of(verifier, old) == "unknown_key"
    assert verifier.verify(mint(ring, clock).token).name == "bot"  # the active key signs on


def test_a_pruned_key_drops_its_cached_tokens(ring: KeyRing, clock: FakeClock) -> None:
    ring.retain_for = timedelta(seconds=0)  # prune the old key at once
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience="gateway")],
        trust_domain="aviator.local",
        clock=clock,
    )
    token = mint(ring, clock).token
    assert verifier.verify(token).name == "bot"
    ring.rotate(clock.datetime())
    assert reason_of(verifier, token) == "unknown_key"


# -- the cache -------------------------------------------------------------------------------


def test_the_cache_is_bounded_lru(ring: KeyRing, clock: FakeClock) -> None:
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience="gateway")],
        trust_domain="aviator.local",
        clock=clock,
        cache_size=2,
    )
    a, b, c = (mint(ring, clock, jti=f"j{i}").token for i in range(3))
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now the most recent
    verifier.verify(c)  # evicts b
    stats = verifier.cache_stats()
    assert (stats.size, stats.capacity, stats.hits, stats.misses) == (2, 2, 1, 3)
    verifier.verify(a)
    verifier.verify(c)
    assert verifier.cache_stats().hits == 3
    verifier.verify(b)
    assert verifier.cache_stats().misses == 4


def test_the_cache_respects_expiry(
    ring: KeyRing, clock: FakeClock, verifier: TokenVerifier
) -> None:
    token = mint(ring, clock, ttl_s=60).token
    assert verifier.verify(token).name == "bot"
    clock.advance(60 + 29)
    assert verifier.verify(token).name == "bot"
    assert verifier.cache_stats().hits == 1
    clock.advance(1)
    assert reason_of(verifier, token) == "expired"
    assert verifier.cache_stats().size == 0


def test_refusals_are_not_cached(ring: KeyRing, verifier: TokenVerifier) -> None:
    token = sign(header(ring), claims(aud="elsewhere"), key=ring.active.private_key)
    for _ in range(3):
        assert reason_of(verifier, token) == "wrong_audience"
    assert verifier.cache_stats().size == 0


def test_a_zero_sized_cache_verifies_every_time(ring: KeyRing, clock: FakeClock) -> None:
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience="gateway")],
        trust_domain="aviator.local",
        clock=clock,
        cache_size=0,
    )
    token = mint(ring, clock).token
    verifier.verify(token)
    verifier.verify(token)
    assert verifier.cache_stats() == verifier.cache_stats().__class__(0, 2, 0, 0)


# -- errors say nothing secret ---------------------------------------------------------------


def test_refusals_never_carry_the_token(ring: KeyRing, clock: FakeClock) -> None:
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience="control-api")],
        trust_domain="aviator.local",
        clock=clock,
    )
    token = mint(ring, clock).token
    head, body, sig = token.split(".")
    for bad in (token, f"{head}.{body}.{sig[:-2]}AA", f"{head}.{body}"):
        with pytest.raises(InvalidToken) as info:
            verifier.verify(bad)
        text = f"{info.value} {info.value!r} {info.value.detail}"
        assert sig[:20] not in text and body[:20] not in text
        assert "invalid_token" in info.value.www_authenticate()
    assert token not in repr(mint(ring, clock))


def test_issuers_must_be_distinct(ring: KeyRing) -> None:
    issuer = plane_issuer(IdentitySettings(), keys=ring, audience="gateway")
    with pytest.raises(ValueError, match="twice"):
        TokenVerifier(issuers=[issuer, issuer], trust_domain="aviator.local")


def test_a_key_of_the_wrong_type_for_the_alg_is_refused(clock: FakeClock) -> None:
    """An issuer allowing both ES256 and RS256: a token saying ES256 under an RSA kid."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = JwkSet((PublicJwk(kid="k", key=rsa_key.public_key()),))
    from aviator.identity.subjects import SpiffeSubjects

    verifier = TokenVerifier(
        issuers=[
            Issuer(
                issuer=ISSUER,
                keys=keys,
                audience="gateway",
                subjects=SpiffeSubjects("aviator.local"),
                algorithms=frozenset({"ES256", "RS256"}),
            )
        ],
        trust_domain="aviator.local",
        clock=clock,
    )
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert (
        reason_of(verifier, sign({"alg": "ES256", "kid": "k"}, claims(), key=ec_key))
        == "bad_algorithm"
    )
    assert verifier.verify(sign({"alg": "RS256", "kid": "k"}, claims(), key=rsa_key)).name == "bot"
