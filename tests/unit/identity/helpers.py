"""Shared pieces of the identity tests: a settable clock and a hand-rolled JWS signer, so that
tests can build tokens the plane would never mint (other algorithms, odd headers, bad claims)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from aviator.identity.jwk import b64url_encode

NOW = 1_795_000_000.0
"""A fixed "now" (November 2026), seconds since the epoch."""
TRUST_DOMAIN = "aviator.local"
ISSUER = "spiffe://aviator.local"
SUB = "spiffe://aviator.local/ns/default/agent/bot"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def segment(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return b64url_encode(raw)


def sign(
    header: dict[str, Any] | bytes,
    claims: dict[str, Any] | bytes,
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | bytes | None,
    alg: str | None = None,
) -> str:
    """A compact JWS over ``header``/``claims`` signed as ``alg`` (default: the header's)."""
    head, body = segment(header), segment(claims)
    signing_input = f"{head}.{body}".encode()
    alg = alg or (header.get("alg") if isinstance(header, dict) else None)
    if key is None:
        signature = b""
    elif alg == "ES256":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "RS256":
        assert isinstance(key, rsa.RSAPrivateKey)
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "HS256":
        assert isinstance(key, bytes)
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    else:
        raise ValueError(alg)
    return f"{head}.{body}.{b64url_encode(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid plane claims at ``NOW`` (15 minutes), with overrides (``None`` removes a claim)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": SUB,
        "aud": "gateway",
        "iat": int(NOW),
        "exp": int(NOW) + 900,
        "jti": "j-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}
