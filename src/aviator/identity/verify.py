"""``TokenVerifier``: a bearer token in, a ``Principal`` out, or ``InvalidToken(reason)``. Pure.

The keys come from ``KeySource`` objects (the plane's ``KeyRing`` in-process, or a JWKS held in
memory and refreshed by a shell in ``aviator.identity.sources``); nothing here does I/O, logs, or
reads the clock except through the injected ``clock``.

What is checked, in order (the first failure is the reason):

1. ``missing``: no token. ``malformed``: not three strict, canonical base64url parts holding JSON
   objects; a duplicate JSON member; a ``typ`` other than ``JWT``/``JOSE``; a ``crit`` header;
   longer than ``MAX_TOKEN_BYTES``.
2. ``bad_algorithm``: ``alg`` is not ES256 or RS256 (``none`` and HS* are refused before any key
   is looked at, so the "HS256 keyed with the public key" confusion cannot happen).
3. ``unknown_issuer``: ``iss`` names no configured issuer. ``bad_algorithm``: the issuer does not
   allow ``alg`` (the plane's own: ES256 only), or the key is of another type.
4. ``unknown_key``: no published key has the ``kid``. ``bad_signature``: the signature fails.
5. ``malformed``: ``exp``, ``iat``, ``sub`` or ``aud`` missing or of the wrong type (plus ``kid``
   and ``jti`` for the plane's tokens, and a lifetime over the cap).
   ``expired``: now ≥ ``exp`` + leeway. ``not_yet_valid``: ``nbf`` or ``iat`` > now + leeway.
   ``wrong_audience``: the issuer's audience is not the token's (the plane's tokens must name
   exactly one audience).
6. ``unknown_agent``: the subject is not an agent (not our SPIFFE shape, no mapping matches), or
   the Agent is not among the optional ``agents`` (those that exist).

Verified tokens are cached (LRU, keyed by the token string) until ``exp`` + leeway, so the
signature is checked once per token, not per request; a cached entry is dropped as soon as its
key is no longer published.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from aviator.api.errors import AviatorError
from aviator.api.principal import Principal, spiffe_id
from aviator.identity.jwk import SUPPORTED_ALGORITHMS, PublicJwk, b64url_decode
from aviator.identity.subjects import SpiffeSubjects, SubjectMapper, SubjectTemplate
from aviator.identity.tokens import HARD_MAX_TTL_S
from aviator.settings import IdentitySettings, TrustedIssuerSettings

__all__ = [
    "DEFAULT_LEEWAY_S",
    "MAX_TOKEN_BYTES",
    "REASONS",
    "CacheStats",
    "InvalidToken",
    "Issuer",
    "KeySource",
    "Reason",
    "TokenVerifier",
    "plane_issuer",
    "trusted_issuer",
]

Reason = Literal[
    "missing",
    "malformed",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "bad_algorithm",
    "unknown_key",
    "bad_signature",
    "unknown_issuer",
    "unknown_agent",
]
REASONS: tuple[Reason, ...] = get_args(Reason)

DEFAULT_LEEWAY_S = 30.0
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat``: machines synced by NTP are well within
a second of each other; 30 s covers a sloppy one without stretching a 15-minute token much."""

MAX_TOKEN_BYTES = 8192
"""Longest token looked at. A plane token is about 450 bytes; a Kubernetes service-account token
about 1.2 KB."""

_DETAIL_CHARS = 80
_P256_SIGNATURE_BYTES = 64


class InvalidToken(AviatorError):
    """The token does not authenticate anyone. ``reason`` is one of ``REASONS``; ``detail`` is for
    logs and never contains the token (claim values in it are quoted and cut short)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail

    def www_authenticate(self, realm: str = "aviator") -> str:
        """The RFC 6750 ``WWW-Authenticate`` value for a 401 with this error."""
        if self.reason == "missing":
            return f'Bearer realm="{realm}"'
        return f'Bearer realm="{realm}", error="invalid_token", error_description="{self.reason}"'


def _fail(reason: Reason, detail: str = "") -> NoReturn:
    raise InvalidToken(reason, detail)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


class KeySource(Protocol):
    def key(self, kid: str | None) -> PublicJwk | None:
        """The published key ``kid``, or None. Must not block: keys are held in memory."""
        ...


@dataclass(frozen=True, slots=True)
class Issuer:
    """One issuer the verifier trusts, and what it requires of that issuer's tokens."""

    issuer: str
    """The exact ``iss``."""
    keys: KeySource
    audience: str
    """The ``aud`` the token must name."""
    subjects: SubjectMapper
    algorithms: frozenset[str] = frozenset({"ES256"})
    single_audience: bool = False
    """Refuse tokens naming more than one audience (always for the plane's own)."""
    require_kid: bool = False
    require_jti: bool = False
    max_lifetime_s: int | None = None
    """Refuse tokens whose ``exp`` - ``iat`` is longer (the plane never mints such)."""
    on_unknown_key: Callable[[], None] | None = None
    """Called when a token names a ``kid`` the source does not know (e.g. to fetch the JWKS
    again soon: the issuer may have rotated)."""


def plane_issuer(
    settings: IdentitySettings,
    *,
    keys: KeySource,
    audience: str,
    on_unknown_key: Callable[[], None] | None = None,
) -> Issuer:
    """The plane's own issuer: ES256, ``kid`` and ``jti`` required, one audience, SPIFFE ``sub``."""
    return Issuer(
        issuer=settings.effective_issuer,
        keys=keys,
        audience=audience,
        subjects=SpiffeSubjects(settings.trust_domain),
        algorithms=frozenset({"ES256"}),
        single_audience=True,
        require_kid=True,
        require_jti=True,
        max_lifetime_s=min(settings.max_ttl_s, HARD_MAX_TTL_S),
        on_unknown_key=on_unknown_key,
    )


def trusted_issuer(
    config: TrustedIssuerSettings,
    *,
    keys: KeySource,
    on_unknown_key: Callable[[], None] | None = None,
) -> Issuer:
    """An external issuer from its settings; ``ValueError`` for a bad mapping or algorithm."""
    unsupported = sorted(set(config.algorithms) - SUPPORTED_ALGORITHMS)
    if unsupported or not config.algorithms:
        raise ValueError(
            f"trusted issuer {config.issuer!r}: algorithms must be among "
            f"{sorted(SUPPORTED_ALGORITHMS)} (got {list(config.algorithms)})"
        )
    if not config.issuer or not config.audience:
        raise ValueError("a trusted issuer needs an issuer and an audience")
    return Issuer(
        issuer=config.issuer,
        keys=keys,
        audience=config.audience,
        subjects=SubjectTemplate.compile(
            claim=config.subject_claim, template=config.subject_template, namespace=config.namespace
        ),
        algorithms=frozenset(config.algorithms),
        on_unknown_key=on_unknown_key,
    )


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    capacity: int


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    valid_until: float
    """``exp`` + leeway: from then on the token is expired."""
    issuer: Issuer
    kid: str | None
    key: PublicJwk


def _json_object(raw: bytes, *, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            _fail("malformed", f"duplicate member in the {what}")
        return out

    def no_constants(name: str) -> NoReturn:
        _fail("malformed", f"{name} in the {what}")

    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        _fail("malformed", f"the {what} is not JSON")
    if not isinstance(value, dict):
        _fail("malformed", f"the {what} is not a JSON object")
    return value


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail("malformed", f"{name!r} is not a number")
    return float(value)


def _signature_ok(alg: str, key: PublicJwk, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "ES256" and isinstance(key.key, ec.EllipticCurvePublicKey):
            if len(signature) != _P256_SIGNATURE_BYTES:
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == "RS256" and isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


class TokenVerifier:
    """Verifies bearer tokens of the configured issuers, with a bounded cache of verified ones."""

    def __init__(
        self,
        *,
        issuers: Iterable[Issuer],
        trust_domain: str,
        leeway_s: float = DEFAULT_LEEWAY_S,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        agents: Container[tuple[str, str]] | None = None,
    ) -> None:
        """``clock``: seconds since the epoch. ``agents``: when given, the ``(namespace, name)``
        of every Agent that exists, kept current by its owner (a ``PolicyView``'s ``agents``); a
        token of any other agent is ``unknown_agent`` (checked on every call, not cached). A
        container, not a callback: it is asked on every request, and ``in`` on a dict costs a
        fraction of a call through Python."""
        self._issuers: dict[str, Issuer] = {}
        for issuer in issuers:
            if issuer.issuer in self._issuers:
                raise ValueError(f"issuer {issuer.issuer!r} is configured twice")
            self._issuers[issuer.issuer] = issuer
        if cache_size < 0 or leeway_s < 0:
            raise ValueError("cache_size and leeway_s must not be negative")
        self.trust_domain = trust_domain
        self.leeway_s = leeway_s
        self._clock = clock
        self._agents = agents
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._capacity = cache_size
        self._hits = 0
        self._misses = 0

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` header value."""
        if not authorization:
            _fail("missing", "no Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            _fail("missing", "no bearer token in the Authorization header")
        return self.verify(token.strip())

    def remembered(self, token: str) -> Principal | None:
        """``verify(token)`` for a token verified lately and still good, in one lookup; None for
        any other (then ``verify`` it)."""
        entry = self._cache.get(token)
        if (
            entry is None
            or not self._clock() < entry.valid_until
            or entry.issuer.keys.key(entry.kid) is not entry.key
        ):
            return None
        self._cache.move_to_end(token)
        self._hits += 1
        return self._admit(entry.principal)

    def verify(self, token: str | None) -> Principal:
        """The agent ``token`` authenticates, or ``InvalidToken`` saying why it does not."""
        if not token:
            _fail("missing", "no token")
        now = self._clock()
        entry = self._cache.get(token)
        if entry is not None:
            if now < entry.valid_until and entry.issuer.keys.key(entry.kid) is entry.key:
                self._cache.move_to_end(token)
                self._hits += 1
                return self._admit(entry.principal)
            del self._cache[token]
        self._misses += 1
        entry = self._verify(token, now)
        if self._capacity:
            self._cache[token] = entry
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return self._admit(entry.principal)

    def _admit(self, principal: Principal) -> Principal:
        agents = self._agents
        if agents is not None and (principal.agent_ref or ("", "")) not in agents:
            _fail("unknown_agent", f"agent {principal.agent_key} does not exist")
        return principal

    def cache_stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, len(self._cache), self._capacity)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _verify(self, token: str, now: float) -> _Verified:
        if len(token) > MAX_TOKEN_BYTES:
            _fail("malformed", f"longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            _fail("malformed", "not a compact JWS (three dot-separated parts)")
        header_b64, payload_b64, signature_b64 = parts
        try:
            header_raw = b64url_decode(header_b64)
            payload_raw = b64url_decode(payload_b64)
            signature = b64url_decode(signature_b64)
        except ValueError:
            _fail("malformed", "a part is not canonical base64url")
        header = _json_object(header_raw, what="header")
        claims = _json_object(payload_raw, what="claims")

        alg = header.get("alg")
        if not isinstance(alg, str):
            _fail("malformed", "no 'alg' in the header")
        if alg not in SUPPORTED_ALGORITHMS:
            _fail("bad_algorithm", f"alg {_show(alg)} is not accepted")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() not in ("JWT", "JOSE")):
            _fail("malformed", f"typ {_show(typ)} is not JWT")
        if "crit" in header:
            _fail("malformed", "critical header extensions are not supported")

        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            _fail("unknown_issuer", f"iss {_show(iss)} is not trusted")
        if alg not in issuer.algorithms:
            _fail("bad_algorithm", f"{issuer.issuer!r} does not sign with {alg}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            _fail("malformed", "'kid' is not a string")
        if kid is None and issuer.require_kid:
            _fail("unknown_key", "no 'kid' in the header")
        key = issuer.keys.key(kid)
        if key is None:
            if issuer.on_unknown_key is not None:
                issuer.on_unknown_key()
            _fail("unknown_key", f"no published key {_show(kid)} of {issuer.issuer!r}")
        if not key.allows(alg):
            _fail("bad_algorithm", f"key {_show(kid)} is not an {alg} key")
        if not _signature_ok(alg, key, f"{header_b64}.{payload_b64}".encode("ascii"), signature):
            _fail("bad_signature", f"signature does not verify with key {_show(kid)}")

        # The signature holds: from here on the claims are the issuer's.
        exp, iat, nbf = _number(claims, "exp"), _number(claims, "iat"), _number(claims, "nbf")
        if exp is None:
            _fail("malformed", "no 'exp' claim")
        if iat is None:
            _fail("malformed", "no 'iat' claim")
        sub, aud, jti = claims.get("sub"), claims.get("aud"), claims.get("jti")
        if not isinstance(sub, str) or not sub:
            _fail("malformed", "no 'sub' claim")
        if aud is None:
            _fail("malformed", "no 'aud' claim")
        if jti is not None and not isinstance(jti, str):
            _fail("malformed", "'jti' is not a string")
        if issuer.require_jti and not jti:
            _fail("malformed", "no 'jti' claim")
        if issuer.max_lifetime_s is not None and exp - iat > issuer.max_lifetime_s:
            _fail("malformed", f"lifetime of {exp - iat:.0f}s exceeds {issuer.max_lifetime_s}s")
        if now >= exp + self.leeway_s:
            _fail("expired", f"expired {now - exp:.0f}s ago")
        if nbf is not None and nbf > now + self.leeway_s:
            _fail("not_yet_valid", f"not before {nbf - now:.0f}s from now")
        if iat > now + self.leeway_s:
            _fail("not_yet_valid", f"issued {iat - now:.0f}s in the future")
        self._check_audience(issuer, aud)

        ref = issuer.subjects.agent(claims)
        if ref is None:
            _fail("unknown_agent", f"subject {_show(sub)} names no agent")
        namespace, name = ref
        return _Verified(
            principal=Principal(
                kind="agent",
                id=spiffe_id(self.trust_domain, namespace, name),
                namespace=namespace,
                name=name,
                token_id=jti,
            ),
            valid_until=exp + self.leeway_s,
            issuer=issuer,
            kid=kid,
            key=key,
        )

    @staticmethod
    def _check_audience(issuer: Issuer, aud: Any) -> None:
        if isinstance(aud, str):
            audiences = [aud]
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            audiences = aud
        else:
            _fail("malformed", "'aud' is neither a string nor a list of strings")
        if issuer.single_audience and len(audiences) != 1:
            _fail("wrong_audience", f"{len(audiences)} audiences; exactly one is accepted")
        if issuer.audience not in audiences:
            _fail("wrong_audience", f"aud {_show(aud)} does not include {issuer.audience!r}")
