from __future__ import annotations

from pathlib import Path

import pytest

from aviator.identity.keys import KeyRing
from aviator.identity.verify import TokenVerifier, plane_issuer
from aviator.settings import IdentitySettings

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> IdentitySettings:
    return IdentitySettings()


@pytest.fixture
def ring(tmp_path: Path, clock: FakeClock) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())


@pytest.fixture
def verifier(ring: KeyRing, clock: FakeClock, settings: IdentitySettings) -> TokenVerifier:
    return TokenVerifier(
        issuers=[plane_issuer(settings, keys=ring, audience="gateway")],
        trust_domain=settings.trust_domain,
        clock=clock,
    )
