"""Minting agent tokens in the JWT-SVID shape. Pure (the ``jti`` is the only randomness).

A token is a JWS compact serialization signed ES256 with the plane's active key::

    header  {"alg": "ES256", "kid": "<RFC 7638 thumbprint>", "typ": "JWT"}
    claims  {"iss": "<issuer>", "sub": "spiffe://<trust-domain>/ns/<ns>/agent/<name>",
             "aud": "<one audience>", "iat": <now>, "exp": <now + ttl>, "jti": "<128 random bits>"}

``aud`` is a single string: a token for one audience cannot be replayed to another. The
lifetime is at most ``HARD_MAX_TTL_S`` (1 h), and at least ``MIN_TTL_S``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from aviator.api.errors import AviatorError
from aviator.api.principal import spiffe_id
from aviator.identity.jwk import SigningKey

__all__ = [
    "DEFAULT_TTL_S",
    "HARD_MAX_TTL_S",
    "MIN_TTL_S",
    "LifetimeError",
    "MintedToken",
    "check_ttl",
    "mint",
]

HARD_MAX_TTL_S = 3600
"""No token lives longer than an hour, whatever the settings say."""
DEFAULT_TTL_S = 900
MIN_TTL_S = 60
"""Shorter tokens would be spent mostly inside the verifiers' 30 s clock leeway."""


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class LifetimeError(AviatorError, ValueError):
    """A requested token lifetime outside ``[MIN_TTL_S, max]``; the message says the bounds."""

    def __init__(self, requested: int, *, minimum: int, maximum: int) -> None:
        self.requested, self.minimum, self.maximum = requested, minimum, maximum
        if requested > maximum:
            text = (
                f"a token may live at most {maximum} seconds ({_human(maximum)}); "
                f"{requested} seconds ({_human(requested)}) were requested"
            )
        else:
            text = f"a token must live at least {minimum} seconds; {requested} were requested"
        super().__init__(text)


def check_ttl(ttl_s: int, *, max_ttl_s: int = HARD_MAX_TTL_S) -> int:
    """``ttl_s`` if it is an allowed lifetime, else ``LifetimeError``."""
    maximum = min(max_ttl_s, HARD_MAX_TTL_S)
    if not MIN_TTL_S <= ttl_s <= maximum:
        raise LifetimeError(ttl_s, minimum=MIN_TTL_S, maximum=maximum)
    return ttl_s


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    """The compact JWS. A bearer credential: never log it."""
    kid: str
    jti: str
    subject: str
    audience: str
    issued_at: int
    """``iat``, seconds since the epoch."""
    expires_at: int
    """``exp``, seconds since the epoch."""

    @property
    def expires(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)

    def __repr__(self) -> str:  # keep the token itself out of reprs, logs and tracebacks
        return f"MintedToken(kid={self.kid!r}, jti={self.jti!r}, subject={self.subject!r})"


def mint(
    *,
    key: SigningKey,
    issuer: str,
    trust_domain: str,
    namespace: str,
    name: str,
    audience: str,
    ttl_s: int,
    now: float,
    max_ttl_s: int = HARD_MAX_TTL_S,
    jti: str | None = None,
) -> MintedToken:
    """Sign a token for agent ``namespace/name`` valid for ``audience`` from ``now`` for ``ttl_s``.

    Raises ``LifetimeError`` when ``ttl_s`` is outside the allowed range, and ``ValueError``
    when ``key`` is retired (it may no longer sign).
    """
    check_ttl(ttl_s, max_ttl_s=max_ttl_s)
    if not key.active:
        raise ValueError(f"key {key.kid} is retired and may not sign")
    if not audience:
        raise ValueError("a token needs an audience")
    issued_at = int(now)
    subject = spiffe_id(trust_domain, namespace, name)
    token_id = jti or secrets.token_urlsafe(16)
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + ttl_s,
        "jti": token_id,
    }
    token = jwt.encode(
        claims, key.private_key, algorithm="ES256", headers={"kid": key.kid, "typ": "JWT"}
    )
    return MintedToken(
        token=token,
        kid=key.kid,
        jti=token_id,
        subject=subject,
        audience=audience,
        issued_at=issued_at,
        expires_at=issued_at + ttl_s,
    )
