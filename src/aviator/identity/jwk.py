"""JSON Web Keys (RFC 7517) and the key types tokens are signed and verified with. Pure.

``SigningKey`` is one ES256 key pair of the plane; ``PublicJwk`` is a public key as a verifier
holds it (the plane's own, or one from a trusted issuer's JWKS); ``JwkSet`` is a parsed JWKS
document. Only public, signature keys are ever accepted from outside: a JWKS entry carrying
private members, a ``use`` other than ``sig``, an unsupported key type or curve, or an RSA key
under 2048 bits is skipped (and said why), never used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aviator.api.errors import AviatorError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "JwkError",
    "JwkSet",
    "PublicJwk",
    "PublicKey",
    "SigningKey",
    "b64url_decode",
    "b64url_encode",
    "ec_thumbprint",
    "parse_jwk",
]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

SUPPORTED_ALGORITHMS = frozenset({"ES256", "RS256"})
"""What a verifier can check at all: ES256 (the plane's keys) and RS256 (common for IdPs and
Kubernetes service-account tokens). Never ``none`` or HS* (a shared secret is no identity)."""

MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_P256_COORDINATE_BYTES = 32


class JwkError(AviatorError, ValueError):
    """A JWK or JWKS document that cannot be used; the message says why."""


def b64url_encode(raw: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url: alphabet only, no padding, and the canonical encoding of its bytes.

    Canonical matters: the unused low bits of the last character would otherwise let several
    spellings decode to the same signature, so a changed token could still verify.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def _coordinate(value: int) -> str:
    return b64url_encode(value.to_bytes(_P256_COORDINATE_BYTES, "big"))


def _int_member(jwk: Mapping[str, Any], name: str, *, size: int | None = None) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JwkError(f"member {name!r} is missing or not a string")
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise JwkError(f"member {name!r} is not base64url") from None
    if not raw or (size is not None and len(raw) != size):
        raise JwkError(f"member {name!r} has the wrong length")
    return int.from_bytes(raw, "big")


def ec_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a P-256 public key: the plane's ``kid``."""
    numbers = key.public_numbers()
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": _coordinate(numbers.x), "y": _coordinate(numbers.y)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True, slots=True)
class PublicJwk:
    """A public verification key and the algorithm its JWK pins (if it pins one)."""

    kid: str | None
    key: PublicKey
    alg: str | None = None

    def allows(self, alg: str) -> bool:
        """Whether a token whose header says ``alg`` may be checked with this key."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg == "ES256":
            return isinstance(self.key, ec.EllipticCurvePublicKey) and isinstance(
                self.key.curve, ec.SECP256R1
            )
        if alg == "RS256":
            return isinstance(self.key, rsa.RSAPublicKey) and self.key.key_size >= MIN_RSA_BITS
        return False

    def to_dict(self) -> dict[str, str]:
        """The public JWK (RFC 7517) with ``use: sig`` and, for the plane's keys, ``alg``."""
        out: dict[str, str]
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            numbers = self.key.public_numbers()
            out = {"kty": "EC", "crv": "P-256", "x": _coordinate(numbers.x)}
            out["y"] = _coordinate(numbers.y)
        else:
            rsa_numbers = self.key.public_numbers()
            n = rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")
            e = rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")
            out = {"kty": "RSA", "n": b64url_encode(n), "e": b64url_encode(e)}
        if self.kid is not None:
            out["kid"] = self.kid
        out["use"] = "sig"
        if self.alg is not None:
            out["alg"] = self.alg
        return out


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of the plane's ES256 key pairs, with its lifecycle.

    Active while ``retired_at`` is None; once retired it signs nothing more but stays published
    until ``published_until``, when the last token it signed has expired.
    """

    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created: datetime
    retired_at: datetime | None = None
    published_until: datetime | None = None

    @property
    def active(self) -> bool:
        return self.retired_at is None

    @property
    def public(self) -> PublicJwk:
        return PublicJwk(kid=self.kid, key=self.private_key.public_key(), alg="ES256")


def parse_jwk(jwk: Any) -> PublicJwk:
    """One public signature key from its JWK, or ``JwkError`` saying why it cannot be used."""
    if not isinstance(jwk, Mapping):
        raise JwkError("a JWK must be a JSON object")
    if private := sorted(_PRIVATE_MEMBERS & set(jwk)):
        raise JwkError(f"holds private key material ({', '.join(private)}); refusing it")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JwkError("'kid' must be a string")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise JwkError(f"'use' is {use!r}, not 'sig'")
    alg = jwk.get("alg")
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        raise JwkError(f"'alg' {alg!r} is not supported (only {sorted(SUPPORTED_ALGORITHMS)})")
    kty = jwk.get("kty")
    key: PublicKey
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise JwkError(f"curve {jwk.get('crv')!r} is not supported (only P-256)")
        x = _int_member(jwk, "x", size=_P256_COORDINATE_BYTES)
        y = _int_member(jwk, "y", size=_P256_COORDINATE_BYTES)
        try:
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError:
            raise JwkError("the point (x, y) is not on P-256") from None
    elif kty == "RSA":
        n, e = _int_member(jwk, "n"), _int_member(jwk, "e")
        if n.bit_length() < MIN_RSA_BITS:
            raise JwkError(f"RSA modulus of {n.bit_length()} bits is under {MIN_RSA_BITS}")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise JwkError(f"not a valid RSA public key: {exc}") from None
    else:
        raise JwkError(f"key type {kty!r} is not supported (EC P-256 or RSA)")
    return PublicJwk(kid=kid, key=key, alg=alg)


class JwkSet:
    """A parsed JWKS: usable keys by ``kid``, and why any entry was skipped."""

    __slots__ = ("_by_kid", "keys", "skipped")

    def __init__(self, keys: tuple[PublicJwk, ...], skipped: tuple[str, ...] = ()) -> None:
        self.keys = keys
        self.skipped = skipped
        self._by_kid = {k.kid: k for k in keys if k.kid is not None}

    @classmethod
    def from_document(cls, doc: Any) -> JwkSet:
        """Parse ``{"keys": [...]}``; unusable entries are skipped, a wrong shape is an error."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
            raise JwkError('a JWKS must be a JSON object with a "keys" array')
        keys: list[PublicJwk] = []
        skipped: list[str] = []
        seen: set[str] = set()
        for index, entry in enumerate(doc["keys"]):
            try:
                key = parse_jwk(entry)
            except JwkError as exc:
                skipped.append(f"keys[{index}]: {exc}")
                continue
            if key.kid is not None and key.kid in seen:
                skipped.append(f"keys[{index}]: duplicate kid {key.kid!r}")
                continue
            if key.kid is not None:
                seen.add(key.kid)
            keys.append(key)
        return cls(tuple(keys), tuple(skipped))

    def key(self, kid: str | None) -> PublicJwk | None:
        """The key named ``kid``; without a ``kid``, the only key, if there is exactly one."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return self._by_kid.get(kid)

    def to_document(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.to_dict() for k in self.keys]}
