"""Properties: no single-character change to a token gets through, and no input crashes the
verifier with anything but ``InvalidToken``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.identity import tokens
from aviator.identity.keys import KeyRing
from aviator.identity.verify import REASONS, InvalidToken, TokenVerifier, plane_issuer
from aviator.settings import IdentitySettings

from .helpers import ISSUER, NOW, FakeClock

_CLOCK = FakeClock()


def _setup(tmp: Path) -> tuple[str, TokenVerifier]:
    ring = KeyRing.load_or_create(tmp / "keys", now=_CLOCK.datetime())
    token = tokens.mint(
        key=ring.active,
        issuer=ISSUER,
        trust_domain="aviator.local",
        namespace="default",
        name="bot",
        audience="gateway",
        ttl_s=900,
        now=NOW,
    ).token
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=ring, audience="gateway")],
        trust_domain="aviator.local",
        clock=_CLOCK,
        cache_size=0,  # every attempt is verified in full
    )
    assert verifier.verify(token).name == "bot"
    return token, verifier


def test_any_single_character_change_fails(tmp_path: Path) -> None:
    token, verifier = _setup(tmp_path)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(token) - 1), label="index")
        replacement = data.draw(
            st.characters(codec="ascii").filter(lambda c: c != token[index]), label="char"
        )
        changed = token[:index] + replacement + token[index + 1 :]
        with pytest.raises(InvalidToken) as info:
            verifier.verify(changed)
        assert info.value.reason in REASONS

    check()


def test_every_position_and_neighbouring_character_fails(tmp_path: Path) -> None:
    """Exhaustive where it matters most: each position, changed to the next base64url letter
    (the change most likely to survive a lax decoder)."""
    token, verifier = _setup(tmp_path)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index, char in enumerate(token):
        if char == ".":
            continue
        for twin in (alphabet[(alphabet.index(char) + 1) % 64], alphabet[alphabet.index(char) ^ 1]):
            changed = token[:index] + twin + token[index + 1 :]
            try:
                verifier.verify(changed)
            except InvalidToken:
                continue
            raise AssertionError(
                f"a token changed at {index} ({char!r} -> {twin!r}) still verifies"
            )


def test_truncations_and_extensions_fail(tmp_path: Path) -> None:
    token, verifier = _setup(tmp_path)
    for cut in range(len(token)):
        for changed in (token[:cut], token[:cut] + token[cut + 1 :]):
            try:
                verifier.verify(changed)
            except InvalidToken:
                continue
            raise AssertionError(f"a token without character {cut} still verifies")
    for extra in ("A", "=", ".", " ", "\n"):
        try:
            verifier.verify(token + extra)
        except InvalidToken:
            continue
        raise AssertionError(f"a token with {extra!r} appended still verifies")


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=400)
    | st.from_regex(r"[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{0,90}")
)
def test_arbitrary_input_is_refused_cleanly(text: str) -> None:
    verifier = TokenVerifier(
        issuers=[plane_issuer(IdentitySettings(), keys=_NO_KEYS, audience="gateway")],
        trust_domain="aviator.local",
        clock=_CLOCK,
    )
    with pytest.raises(InvalidToken) as info:
        verifier.verify(text)
    assert info.value.reason in REASONS


class _NoKeys:
    def key(self, kid: str | None) -> None:
        return None


_NO_KEYS = _NoKeys()
