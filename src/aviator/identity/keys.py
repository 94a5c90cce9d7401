"""``KeyRing``: the plane's ES256 signing keys, persisted under ``<data-dir>/keys/``. The one module
of ``aviator.identity`` that touches the disk.

```
keys/               0700
  index.json        0600  {"version": 1, "keys": [{"kid", "created", "retired_at", "published_until"}]}
  <kid>.pem         0600  PKCS#8 private key, one per key in the index
```

The ``kid`` is the RFC 7638 thumbprint of the public key, so a key file that does not match its
name is detected at load. Writes go to a temporary file, are fsynced and renamed; the index is
written last, so a crash mid-rotation leaves the previous ring intact (an orphaned ``.pem`` that
the index never named is removed at the next load: it signed nothing).

Rotation makes a new key active; the old one signs nothing more but stays published in the JWKS
until every token it signed has expired (``retired_at`` + the longest token lifetime + clock
leeway), then it is pruned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aviator.api.errors import AviatorError
from aviator.api.meta import format_time
from aviator.identity.jwk import PublicJwk, SigningKey, ec_thumbprint

__all__ = ["DEFAULT_RETENTION", "INDEX_FILE", "KeyRing", "KeyRingError"]

log = logging.getLogger("aviator.identity.keys")

INDEX_FILE = "index.json"
INDEX_VERSION = 1
DEFAULT_RETENTION = timedelta(seconds=3600 + 30)
"""How long a retired key stays published: the 1 h token cap plus 30 s of leeway."""


class KeyRingError(AviatorError):
    """The key directory is unreadable or inconsistent (a missing or mismatched key file)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _parse_time(value: Any, *, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise KeyRingError(f"{what} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KeyRingError(f"{what} {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _generate(now: datetime) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(kid=ec_thumbprint(private.public_key()), private_key=private, created=now)


class KeyRing:
    """The plane's signing keys: exactly one active, plus retired ones still published.

    Build it with ``load_or_create``. Reads (``active``, ``key``, ``jwks``) are safe from any
    thread while ``rotate`` or ``prune`` runs in another: the ring swaps in its new state at once.
    """

    def __init__(self, path: Path, keys: tuple[SigningKey, ...], *, retain_for: timedelta) -> None:
        self.path = path
        self.retain_for = retain_for
        self._set(keys)

    def _set(self, keys: tuple[SigningKey, ...]) -> None:
        actives = [k for k in keys if k.active]
        if len(actives) != 1:
            raise KeyRingError(f"{self.path}: expected one active key, found {len(actives)}")
        self._state = (keys, actives[0], {k.kid: k.public for k in keys})

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        path: Path,
        *,
        retain_for: timedelta = DEFAULT_RETENTION,
        now: datetime | None = None,
    ) -> KeyRing:
        """The ring stored at ``path``; a new one with one fresh key when there is none yet.

        ``retain_for``: how long a retired key stays published; give it the longest token
        lifetime plus the verifiers' clock leeway. Keys whose publication ended are pruned.
        """
        now = (now or _now()).replace(microsecond=0)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        index = path / INDEX_FILE
        if not index.exists():
            ring = cls(path, (_generate(now),), retain_for=retain_for)
            ring._persist()
            log.info("created signing key %s in %s", ring.active.kid, path)
            return ring
        ring = cls(path, cls._read(path), retain_for=retain_for)
        ring._remove_orphans()
        ring.prune(now)
        return ring

    @staticmethod
    def _read(path: Path) -> tuple[SigningKey, ...]:
        try:
            doc = json.loads((path / INDEX_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise KeyRingError(f"cannot read {path / INDEX_FILE}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
            raise KeyRingError(
                f"{path / INDEX_FILE}: unknown format (want version {INDEX_VERSION})"
            )
        entries = doc.get("keys")
        if not isinstance(entries, list) or not entries:
            raise KeyRingError(f"{path / INDEX_FILE}: no keys listed")
        keys: list[SigningKey] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                raise KeyRingError(f"{path / INDEX_FILE}: an entry has no kid")
            kid: str = entry["kid"]
            pem_path = path / f"{kid}.pem"
            try:
                mode = stat.S_IMODE(pem_path.stat().st_mode)
                if mode & 0o077:
                    log.warning("key file %s had mode %o; tightened to 0600", pem_path, mode)
                    os.chmod(pem_path, 0o600)
                private = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
            except FileNotFoundError:
                raise KeyRingError(
                    f"key {kid} is listed in the index but {pem_path} is missing"
                ) from None
            except (OSError, ValueError, TypeError) as exc:
                raise KeyRingError(f"cannot load {pem_path}: {exc}") from None
            if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
                private.curve, ec.SECP256R1
            ):
                raise KeyRingError(f"{pem_path} is not an EC P-256 private key")
            if ec_thumbprint(private.public_key()) != kid:
                raise KeyRingError(f"{pem_path} does not hold key {kid} (thumbprint mismatch)")
            created = _parse_time(entry.get("created"), what=f"key {kid} created")
            if created is None:
                raise KeyRingError(f"key {kid} has no creation time")
            keys.append(
                SigningKey(
                    kid=kid,
                    private_key=private,
                    created=created,
                    retired_at=_parse_time(entry.get("retired_at"), what=f"key {kid} retired_at"),
                    published_until=_parse_time(
                        entry.get("published_until"), what=f"key {kid} published_until"
                    ),
                )
            )
        return tuple(keys)

    def _remove_orphans(self) -> None:
        known = {k.kid for k in self.keys}
        for pem in self.path.glob("*.pem"):
            if pem.stem not in known:
                log.warning("removing %s: no index entry names it, so it never signed a token", pem)
                pem.unlink()

    # -- reading -------------------------------------------------------------------------------

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key still published, oldest first."""
        return self._state[0]

    @property
    def active(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._state[1]

    def key(self, kid: str | None) -> PublicJwk | None:
        """The published public key ``kid`` (a verifier's ``KeySource``); ``None`` if unknown."""
        if kid is None:
            return None
        return self._state[2].get(kid)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS (RFC 7517): every published key, the active one first."""
        keys = sorted(self.keys, key=lambda k: (not k.active, k.created))
        return {"keys": [k.public.to_dict() for k in keys]}

    # -- changing ------------------------------------------------------------------------------

    def rotate(self, now: datetime | None = None) -> SigningKey:
        """Make a fresh key active; the previous one stays published for ``retain_for``."""
        now = (now or _now()).replace(microsecond=0)
        previous = self.active.kid
        fresh = _generate(now)
        retired = tuple(
            replace(k, retired_at=now, published_until=now + self.retain_for) if k.active else k
            for k in self.keys
        )
        keys = (*(k for k in retired if not _expired(k, now)), fresh)
        _write_private(self.path / f"{fresh.kid}.pem", _pem(fresh))
        self._write_index(keys)
        dropped = [k for k in self.keys if k.kid not in {n.kid for n in keys}]
        self._set(keys)
        self._unlink(dropped)
        log.info("rotated signing keys: %s active, %s retired", fresh.kid, previous)
        return fresh

    def prune(self, now: datetime | None = None) -> list[str]:
        """Forget retired keys whose publication has ended; returns their kids."""
        now = now or _now()
        dropped = [k for k in self.keys if _expired(k, now)]
        if not dropped:
            return []
        keys = tuple(k for k in self.keys if not _expired(k, now))
        self._write_index(keys)
        self._set(keys)
        self._unlink(dropped)
        for key in dropped:
            log.info("pruned signing key %s (published until %s)", key.kid, key.published_until)
        return [k.kid for k in dropped]

    def _persist(self) -> None:
        for key in self.keys:
            _write_private(self.path / f"{key.kid}.pem", _pem(key))
        self._write_index(self.keys)

    def _write_index(self, keys: tuple[SigningKey, ...]) -> None:
        doc = {
            "version": INDEX_VERSION,
            "keys": [
                {
                    "kid": k.kid,
                    "created": format_time(k.created),
                    "retired_at": format_time(k.retired_at) if k.retired_at else None,
                    "published_until": (
                        format_time(k.published_until) if k.published_until else None
                    ),
                }
                for k in keys
            ],
        }
        _write_private(self.path / INDEX_FILE, json.dumps(doc, indent=2).encode() + b"\n")
        _fsync_dir(self.path)

    def _unlink(self, keys: list[SigningKey]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                (self.path / f"{key.kid}.pem").unlink()


def _expired(key: SigningKey, now: datetime) -> bool:
    return key.published_until is not None and now >= key.published_until


def _pem(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
