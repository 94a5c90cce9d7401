"""The key ring on disk: file modes, the index, rotation, pruning, and what a bad directory does."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aviator.identity.jwk import b64url_decode, ec_thumbprint
from aviator.identity.keys import INDEX_FILE, KeyRing, KeyRingError

from .helpers import FakeClock


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_ring_has_one_active_key_in_private_files(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    directory = tmp_path / "keys"
    assert mode(directory) == 0o700
    pem = directory / f"{ring.active.kid}.pem"
    assert mode(pem) == 0o600
    assert mode(directory / INDEX_FILE) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == sorted([pem.name, INDEX_FILE])
    assert [k.kid for k in ring.keys] == [ring.active.kid]
    assert ring.active.active and ring.active.created == clock.datetime().replace(microsecond=0)
    index = json.loads((directory / INDEX_FILE).read_text())
    assert index == {
        "version": 1,
        "keys": [
            {
                "kid": ring.active.kid,
                "created": "2026-11-18T11:06:40Z",
                "retired_at": None,
                "published_until": None,
            }
        ],
    }


def test_key_files_are_private_whatever_the_umask(tmp_path: Path, clock: FakeClock) -> None:
    old = os.umask(0)
    try:
        ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
        ring.rotate(clock.datetime())
    finally:
        os.umask(old)
    for path in (tmp_path / "keys").iterdir():
        assert mode(path) == 0o600, path


def test_the_kid_is_the_rfc7638_thumbprint(ring: KeyRing) -> None:
    assert ring.active.kid == ec_thumbprint(ring.active.private_key.public_key())
    assert len(b64url_decode(ring.active.kid)) == 32


def test_rfc7638_thumbprint_example_shape() -> None:
    # The thumbprint depends on the public numbers only, in the RFC's member order.
    key = ec.derive_private_key(1, ec.SECP256R1())
    assert ec_thumbprint(key.public_key()) == ec_thumbprint(key.public_key())
    other = ec.derive_private_key(2, ec.SECP256R1())
    assert ec_thumbprint(key.public_key()) != ec_thumbprint(other.public_key())


def test_loading_again_gives_the_same_keys(tmp_path: Path, clock: FakeClock) -> None:
    first = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    first.rotate(clock.datetime())
    second = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    assert [(k.kid, k.created, k.retired_at, k.published_until) for k in second.keys] == [
        (k.kid, k.created, k.retired_at, k.published_until) for k in first.keys
    ]
    assert second.active.kid == first.active.kid
    assert second.jwks() == first.jwks()


def test_jwks_shape(ring: KeyRing, clock: FakeClock) -> None:
    ring.rotate(clock.datetime())
    doc = ring.jwks()
    assert list(doc) == ["keys"]
    assert len(doc["keys"]) == 2
    assert doc["keys"][0]["kid"] == ring.active.kid  # the active key first
    for jwk in doc["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
        assert len(b64url_decode(jwk["x"])) == 32 and len(b64url_decode(jwk["y"])) == 32
    json.dumps(doc)  # plain JSON


def test_rotation_retires_and_publishes_until_every_token_expired(
    tmp_path: Path, clock: FakeClock
) -> None:
    ring = KeyRing.load_or_create(
        tmp_path / "keys", retain_for=timedelta(seconds=3630), now=clock.datetime()
    )
    first = ring.active
    clock.advance(100)
    fresh = ring.rotate(clock.datetime())
    assert ring.active is fresh and fresh.kid != first.kid
    old = next(k for k in ring.keys if k.kid == first.kid)
    assert not old.active
    assert old.retired_at == clock.datetime().replace(microsecond=0)
    assert old.published_until == old.retired_at + timedelta(seconds=3630)
    assert {k["kid"] for k in ring.jwks()["keys"]} == {first.kid, fresh.kid}
    assert ring.key(first.kid) is not None

    clock.advance(3629)
    assert ring.prune(clock.datetime()) == []
    clock.advance(1)
    assert ring.prune(clock.datetime()) == [first.kid]
    assert ring.key(first.kid) is None
    assert not (tmp_path / "keys" / f"{first.kid}.pem").exists()
    assert [k["kid"] for k in ring.jwks()["keys"]] == [fresh.kid]
    again = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    assert [k.kid for k in again.keys] == [fresh.kid]


def test_loading_prunes_what_expired_meanwhile(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    first = ring.active.kid
    ring.rotate(clock.datetime())
    clock.advance(2 * 3600)
    later = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    assert first not in {k.kid for k in later.keys}
    assert not (tmp_path / "keys" / f"{first}.pem").exists()


def test_several_rotations_keep_one_active(ring: KeyRing, clock: FakeClock) -> None:
    for _ in range(4):
        clock.advance(10)
        ring.rotate(clock.datetime())
    assert sum(k.active for k in ring.keys) == 1
    assert len(ring.keys) == 5
    assert ring.keys[-1] is ring.active


def test_an_orphaned_key_file_is_removed(tmp_path: Path, clock: FakeClock) -> None:
    KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    orphan = tmp_path / "keys" / "never-indexed.pem"
    orphan.write_bytes(b"left by a crash mid-rotation")
    KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    assert not orphan.exists()


def test_a_readable_key_file_is_tightened(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    pem = tmp_path / "keys" / f"{ring.active.kid}.pem"
    pem.chmod(0o644)
    KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    assert mode(pem) == 0o600


def test_a_missing_key_file_is_an_error(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    (tmp_path / "keys" / f"{ring.active.kid}.pem").unlink()
    with pytest.raises(KeyRingError, match="missing"):
        KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())


def test_a_swapped_key_file_is_an_error(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "keys" / f"{ring.active.kid}.pem").write_bytes(stranger)
    with pytest.raises(KeyRingError, match="thumbprint"):
        KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())


@pytest.mark.parametrize(
    "index",
    ["not json", "{}", '{"version": 2, "keys": []}', '{"version": 1, "keys": []}'],
)
def test_a_broken_index_is_an_error(tmp_path: Path, clock: FakeClock, index: str) -> None:
    KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    (tmp_path / "keys" / INDEX_FILE).write_text(index)
    with pytest.raises(KeyRingError):
        KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())


def test_an_index_with_two_active_keys_is_an_error(tmp_path: Path, clock: FakeClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())
    ring.rotate(clock.datetime())
    path = tmp_path / "keys" / INDEX_FILE
    doc = json.loads(path.read_text())
    for entry in doc["keys"]:
        entry["retired_at"] = entry["published_until"] = None
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyRingError, match="one active key"):
        KeyRing.load_or_create(tmp_path / "keys", now=clock.datetime())


def test_the_private_key_never_reaches_the_jwks(ring: KeyRing) -> None:
    d = ring.active.private_key.private_numbers().private_value
    text = json.dumps(ring.jwks())
    assert '"d"' not in text
    assert str(d) not in text
