"""Who is calling: the ``Authenticator`` seam and API-key authentication. Pure (no I/O but
``load_api_keys``, which runs once at start).

An authenticator maps request headers to a ``Principal`` or raises ``Unauthenticated``. It is
synchronous on purpose: it runs on every request, so whatever it needs (keys, a JWKS, a revocation
list) is held in memory and refreshed in the background, never fetched inline. A later issue adds
agent identity (JWT-SVID bearer tokens) as another implementation.

Secrets MUST NOT be logged, echoed in errors or kept longer than needed: API keys are kept only as
SHA-256 digests, and a presented token is compared with every digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aviator.api.errors import AviatorError

__all__ = [
    "ANONYMOUS",
    "ApiKeyAuthenticator",
    "Authenticator",
    "NoAuth",
    "Principal",
    "Unauthenticated",
    "load_api_keys",
]


class Unauthenticated(AviatorError):
    """No credentials, or credentials that match nothing. Carries no detail on purpose."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as far as authentication could tell."""

    id: str
    """Stable, loggable and never secret: e.g. ``api-key/2`` (the key's line), ``anonymous``."""
    kind: str
    """How it was established: ``api-key``, ``anonymous`` (later: ``agent``)."""


ANONYMOUS = Principal(id="anonymous", kind="anonymous")


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller behind ``headers`` (case-insensitive), or raise ``Unauthenticated``."""
        ...


class NoAuth:
    """Lets everyone in as ``anonymous``. Only with an explicit ``--no-auth`` (benchmarks)."""

    __slots__ = ()

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return ANONYMOUS


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ApiKeyAuthenticator:
    """``Authorization: Bearer <key>`` against a fixed set of API keys."""

    __slots__ = ("_digests", "_principals")

    def __init__(self, keys: Iterable[str]) -> None:
        digests = [_digest(key) for key in keys]
        if not digests:
            raise ValueError("at least one API key is required")
        self._digests = tuple(digests)
        self._principals = tuple(
            Principal(id=f"api-key/{i}", kind="api-key") for i in range(len(digests))
        )

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        header = headers.get("Authorization")
        if header is None:
            raise Unauthenticated()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated()
        presented = _digest(token)
        found = -1
        # Every digest is compared, whatever matched earlier: the time taken says nothing about
        # which key (if any) matched. Digests have one length, so length leaks nothing either.
        for i, digest in enumerate(self._digests):
            if hmac.compare_digest(presented, digest):
                found = i
        if found < 0:
            raise Unauthenticated()
        return self._principals[found]


def load_api_keys(path: Path) -> list[str]:
    """Keys from a file, one per line; blank lines and ``#`` comments are skipped.

    Raises ``ValueError`` (naming the file, never a key) when the file holds no key.
    """
    keys = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    if not keys:
        raise ValueError(f"{path}: no API key found (one key per line)")
    return keys
