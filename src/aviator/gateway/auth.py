"""Who is calling: the gateway's ``Authenticator`` chain. Pure (no I/O but ``load_api_keys``, which
runs once at start).

A bearer credential is tried, in order, as:

1. the Control API admin token (the one the gateway watches with) → ``ADMIN``: never subject to
   policy or budgets, audited like everyone;
2. one of the configured API keys → ``Principal(kind="apikey", id="apikey:<fingerprint>")``,
   subject to policy like an agent;
3. an agent token (a JWT-SVID) checked by a ``TokenVerifier`` → the agent's principal.

(An agent token the verifier verified lately goes straight to it: the order matters only for a
secret that is also a valid JWT, which random secrets never are.)

Anything else is ``Unauthenticated``, carrying the RFC 6750 ``WWW-Authenticate`` value of why
(``missing``, ``malformed``, ``expired``…). Only an ``insecure`` chain lets a request that sends no
credential at all in, as ``ANONYMOUS``; a credential that is sent is checked even then.

It is synchronous on purpose: it runs on every request, so whatever it needs (digests, the JWKS,
the agents) is held in memory and refreshed in the background, never fetched inline.

Secrets MUST NOT be logged, echoed in errors or kept longer than needed: the admin token and the
API keys are kept only as SHA-256 digests, compared in constant time; a presented token goes to the
verifier and nowhere else (its errors name claims, never the token).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from aviator.api.errors import AviatorError
from aviator.api.principal import ADMIN, ANONYMOUS, Principal
from aviator.identity.verify import InvalidToken, Reason, TokenVerifier

__all__ = [
    "Authenticator",
    "Credentials",
    "Unauthenticated",
    "api_key_principal",
    "load_api_keys",
]

REALM = "aviator"
FINGERPRINT_CHARS = 16
"""Hex digits of a key's SHA-256 in its principal id: enough to tell keys apart, useless to
guess the key from."""


class Unauthenticated(AviatorError):
    """No credential, or one that authenticates nobody. ``reason`` names which check failed and
    ``challenge`` is the ``WWW-Authenticate`` value to answer with; neither holds the credential."""

    def __init__(self, reason: Reason, challenge: str) -> None:
        super().__init__(reason)
        self.reason: Reason = reason
        self.challenge = challenge

    @classmethod
    def of(cls, error: InvalidToken) -> Unauthenticated:
        return cls(error.reason, error.www_authenticate(REALM))


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller behind ``headers`` (looked up by lower-case name: a ``server.Request``'s, or
        any case-insensitive mapping), or raise ``Unauthenticated``."""
        ...


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def api_key_principal(key: str) -> Principal:
    """The principal of an API key: named by a short fingerprint of its digest, never the key."""
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT_CHARS]
    return Principal(kind="apikey", id=f"apikey:{fingerprint}")


class Credentials:
    """The chain: admin token, API keys, agent tokens (see the module docstring)."""

    __slots__ = ("_admin", "_keys", "_verifier", "insecure")

    def __init__(
        self,
        *,
        admin_token: str | None = None,
        api_keys: Iterable[str] = (),
        verifier: TokenVerifier | None = None,
        insecure: bool = False,
    ) -> None:
        """``insecure``: a request without any credential is ``ANONYMOUS`` instead of refused."""
        self._admin = _digest(admin_token) if admin_token else None
        self._keys = tuple((_digest(key), api_key_principal(key)) for key in api_keys)
        self._verifier = verifier
        self.insecure = insecure

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        header = headers.get("authorization")
        if (
            header is not None
            and len(header) > 7
            and header.startswith("Bearer ")
            and not header[-1].isspace()
            and not header[7].isspace()
        ):
            token = header[7:]  # what clients send: nothing to strip (the general path below)
        elif not header or not header.strip():
            if self.insecure:
                return ANONYMOUS
            raise Unauthenticated.of(InvalidToken("missing"))
        else:
            scheme, _, token = header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated.of(InvalidToken("missing"))
        verifier = self._verifier
        if verifier is not None:
            # An agent token verified lately: no need to hash it to compare with the secrets.
            # (Which tokens are remembered says nothing about the admin token or the keys.)
            try:
                remembered = verifier.remembered(token)
            except InvalidToken as exc:
                raise Unauthenticated.of(exc) from None
            if remembered is not None:
                return remembered
        presented = _digest(token)
        # Every digest is compared, whatever matched earlier: the time taken says nothing about
        # which secret (if any) matched. Digests have one length, so length leaks nothing either.
        found: Principal | None = None
        if self._admin is not None and hmac.compare_digest(presented, self._admin):
            found = ADMIN
        for digest, principal in self._keys:
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is not None:
            return found
        if verifier is None:
            raise Unauthenticated.of(InvalidToken("malformed"))
        try:
            return verifier.verify(token)
        except InvalidToken as exc:
            raise Unauthenticated.of(exc) from None


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
