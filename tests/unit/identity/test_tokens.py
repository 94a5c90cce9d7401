"""Minting: the JWT-SVID shape, checked independently with PyJWT, and the lifetime cap."""

from __future__ import annotations

import jwt
import pytest

from aviator.identity import tokens
from aviator.identity.keys import KeyRing

from .helpers import ISSUER, NOW, SUB, FakeClock


def mint(ring: KeyRing, **kw: object) -> tokens.MintedToken:
    args: dict[str, object] = {
        "key": ring.active,
        "issuer": ISSUER,
        "trust_domain": "aviator.local",
        "namespace": "default",
        "name": "bot",
        "audience": "gateway",
        "ttl_s": 600,
        "now": NOW + 0.75,
    }
    args.update(kw)
    return tokens.mint(**args)  # type: ignore[arg-type]


def test_the_token_has_the_jwt_svid_shape(ring: KeyRing) -> None:
    minted = mint(ring)
    assert jwt.get_unverified_header(minted.token) == {
        "alg": "ES256",
        "kid": ring.active.kid,
        "typ": "JWT",
    }
    key = jwt.PyJWKSet.from_dict(ring.jwks())[ring.active.kid].key
    claims = jwt.decode(
        minted.token,
        key,
        algorithms=["ES256"],
        audience="gateway",
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": ISSUER,
        "sub": SUB,
        "aud": "gateway",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": minted.jti,
    }
    assert isinstance(claims["aud"], str)  # one audience, not a list
    assert (minted.issued_at, minted.expires_at) == (int(NOW), int(NOW) + 600)
    assert minted.expires.timestamp() == int(NOW) + 600
    assert (minted.kid, minted.subject, minted.audience) == (ring.active.kid, SUB, "gateway")


def test_every_token_gets_its_own_random_jti(ring: KeyRing) -> None:
    jtis = {mint(ring).jti for _ in range(50)}
    assert len(jtis) == 50
    assert all(len(j) >= 22 for j in jtis)  # 128 bits


def test_the_repr_hides_the_token(ring: KeyRing) -> None:
    minted = mint(ring)
    assert minted.token not in repr(minted) and minted.token.split(".")[2] not in repr(minted)


@pytest.mark.parametrize("ttl", [60, 900, 3600])
def test_allowed_lifetimes(ring: KeyRing, ttl: int) -> None:
    assert mint(ring, ttl_s=ttl).expires_at - int(NOW) == ttl


def test_longer_than_an_hour_is_refused_precisely(ring: KeyRing) -> None:
    with pytest.raises(tokens.LifetimeError) as info:
        mint(ring, ttl_s=7200)
    assert str(info.value) == (
        "a token may live at most 3600 seconds (1h); 7200 seconds (2h) were requested"
    )
    assert (info.value.requested, info.value.maximum) == (7200, 3600)


def test_the_settings_cap_can_only_lower_the_hard_cap(ring: KeyRing) -> None:
    with pytest.raises(tokens.LifetimeError, match="at most 600 seconds"):
        mint(ring, ttl_s=900, max_ttl_s=600)
    with pytest.raises(tokens.LifetimeError, match="at most 3600 seconds"):
        mint(ring, ttl_s=7200, max_ttl_s=86400)


@pytest.mark.parametrize("ttl", [0, -5, 59])
def test_too_short_is_refused(ring: KeyRing, ttl: int) -> None:
    with pytest.raises(tokens.LifetimeError, match="at least 60 seconds"):
        mint(ring, ttl_s=ttl)


def test_a_retired_key_does_not_sign(ring: KeyRing, clock: FakeClock) -> None:
    old = ring.active
    ring.rotate(clock.datetime())
    retired = next(k for k in ring.keys if k.kid == old.kid)
    with pytest.raises(ValueError, match="retired"):
        mint(ring, key=retired)


def test_an_audience_is_required(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="audience"):
        mint(ring, audience="")
