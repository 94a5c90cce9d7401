"""JWK/JWKS parsing: only public signature keys of supported types are ever used."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from aviator.identity.jwk import (
    JwkError,
    JwkSet,
    PublicJwk,
    b64url_decode,
    b64url_encode,
    parse_jwk,
)


def ec_jwk(**extra: Any) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**ECAlgorithm.to_jwk(key, as_dict=True), **extra}


def rsa_jwk(bits: int = 2048, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return {**RSAAlgorithm.to_jwk(key, as_dict=True), **extra}


def test_ec_and_rsa_public_keys_parse_and_round_trip() -> None:
    for doc, alg in ((ec_jwk(kid="e"), "ES256"), (rsa_jwk(kid="r"), "RS256")):
        key = parse_jwk(doc)
        assert key.allows(alg)
        assert not key.allows("HS256") and not key.allows("none")
        again = key.to_dict()
        assert again["use"] == "sig" and again["kid"] == doc["kid"]
        assert parse_jwk(again).to_dict() == again
        # PyJWT reads what we write.
        jwt.PyJWK.from_dict({**again, "alg": alg})


def test_an_ec_key_is_not_an_rsa_key() -> None:
    assert not parse_jwk(ec_jwk()).allows("RS256")
    assert not parse_jwk(rsa_jwk()).allows("ES256")


def test_a_pinned_alg_is_respected() -> None:
    key = parse_jwk(rsa_jwk(alg="RS256"))
    assert key.allows("RS256")
    assert PublicJwk(kid=None, key=key.key, alg="ES256").allows("RS256") is False


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not an object", "JSON object"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "private key material"),
        (
            {**{"kty": "EC", "crv": "P-256"}, "d": "AAAA", "x": "A", "y": "A"},
            "private key material",
        ),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "not supported"),
        ({"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"}, "P-256"),
        ({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, "wrong length"),
        (
            {
                "kty": "EC",
                "crv": "P-256",
                "x": b64url_encode(bytes(32)),
                "y": b64url_encode(bytes(32)),
            },
            "not on P-256",
        ),
        ({"kty": "EC", "crv": "P-256", "y": "AAAA"}, "missing"),
        ({"kty": "EC", "crv": "P-256", "x": "A=A", "y": "AAAA"}, "base64url"),
    ],
)
def test_unusable_keys_are_refused(doc: Any, message: str) -> None:
    with pytest.raises(JwkError, match=message):
        parse_jwk(doc)


def test_small_rsa_keys_and_encryption_keys_are_refused() -> None:
    with pytest.raises(JwkError, match="under 2048"):
        parse_jwk(rsa_jwk(bits=1024))
    with pytest.raises(JwkError, match="'use'"):
        parse_jwk(ec_jwk(use="enc"))
    with pytest.raises(JwkError, match="not supported"):
        parse_jwk(ec_jwk(alg="HS256"))


def test_a_jwks_skips_bad_entries_and_says_why() -> None:
    good = ec_jwk(kid="a")
    keys = JwkSet.from_document(
        {"keys": [good, {"kty": "oct", "k": "AAAA", "kid": "s"}, ec_jwk(kid="a"), rsa_jwk(kid="b")]}
    )
    assert [k.kid for k in keys.keys] == ["a", "b"]
    assert len(keys.skipped) == 2
    assert "private key material" in keys.skipped[0] and "duplicate kid" in keys.skipped[1]
    assert keys.key("a") is keys.keys[0]
    assert keys.key("zzz") is None
    assert keys.key(None) is None  # two keys: a kid is needed


def test_a_single_key_serves_tokens_without_kid() -> None:
    keys = JwkSet.from_document({"keys": [ec_jwk()]})
    assert keys.key(None) is keys.keys[0]


@pytest.mark.parametrize("doc", [[], {}, {"keys": {}}, "x"])
def test_a_jwks_of_the_wrong_shape_is_an_error(doc: Any) -> None:
    with pytest.raises(JwkError):
        JwkSet.from_document(doc)


@pytest.mark.parametrize("text", ["", "QQ", "QUI", "QUJD", "_-_-"])
def test_base64url_round_trips(text: str) -> None:
    assert b64url_encode(b64url_decode(text)) == text


@pytest.mark.parametrize("text", ["QR", "QUJ", "A", "QQ==", "Q Q", "QQ\n", "+/+/"])
def test_base64url_refuses_non_canonical_and_foreign_text(text: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)
