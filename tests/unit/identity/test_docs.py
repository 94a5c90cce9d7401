"""The Identities section of docs/governance.md shows what the code does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jwt

from aviator.identity import tokens
from aviator.identity.keys import KeyRing
from aviator.identity.verify import REASONS

from .helpers import ISSUER, NOW

DOC = Path(__file__).parents[3] / "docs" / "governance.md"


def section() -> str:
    text = DOC.read_text()
    start = text.index("## Identities")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_decoded_example_has_the_minted_shape(ring: KeyRing) -> None:
    blocks = re.findall(r"```json\n(.*?)```", section(), re.S)
    header, claims = json.loads(blocks[0]), json.loads(blocks[1])
    minted = tokens.mint(
        key=ring.active,
        issuer=ISSUER,
        trust_domain="aviator.local",
        namespace="support",
        name="support-bot",
        audience="gateway",
        ttl_s=600,
        now=NOW,
    )
    real_header = jwt.get_unverified_header(minted.token)
    real_claims = jwt.decode(minted.token, options={"verify_signature": False})
    assert list(header) == list(real_header) and header["alg"] == real_header["alg"]
    assert list(claims) == list(real_claims)
    assert {k: claims[k] for k in ("iss", "sub", "aud")} == {
        k: real_claims[k] for k in ("iss", "sub", "aud")
    }
    assert claims["exp"] - claims["iat"] == 600


def test_the_refusal_table_lists_every_reason() -> None:
    documented = re.findall(r"^\| `([a-z_]+)` \|", section(), re.M)
    assert sorted(documented) == sorted(REASONS)
