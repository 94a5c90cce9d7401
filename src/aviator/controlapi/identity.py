"""Control API endpoints of agent identity: the public JWKS, token requests and key rotation.

```
GET  /.well-known/jwks.json                                          public: the plane's keys
POST /apis/aviator.dev/v1alpha1/namespaces/{ns}/agents/{name}/token  {audience, ttlSeconds}
                                                                     → 201 {token, expiresAt, kid}
GET  /apis/aviator.dev/v1alpha1/keys                                 the signing keys (no secrets)
POST /apis/aviator.dev/v1alpha1/keys/rotate                          → {kid, jwks}
```

Everything but the JWKS needs the admin token: the auth middleware of ``app`` authenticates agents
too, and these handlers refuse them (403; ``governance.admin_only``, which also records the call
in the audit log when the plane governs the API). Issued tokens are logged by ``jti``, subject,
audience and expiry, never by value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import Field

from aviator.api import errors, kinds
from aviator.api.agent import Agent
from aviator.api.errors import FieldError
from aviator.api.meta import GROUP_VERSION, Model, dns1123_label_problem, format_time
from aviator.controlapi.bodies import read_options
from aviator.controlapi.governance import admin_only
from aviator.identity import JWKS_PATH, tokens
from aviator.identity.keys import KeyRing
from aviator.settings import IdentitySettings
from aviator.store.protocol import Store

__all__ = ["JWKS_PATH", "IdentityApi", "install"]

log = logging.getLogger("aviator.controlapi.identity")

JWKS_MAX_AGE_S = 60
"""``Cache-Control`` of the JWKS: verifiers also refetch on an unknown ``kid``, so a short cache
only bounds how long a pruned key lingers in a proxy."""


@dataclass(frozen=True, slots=True)
class IdentityApi:
    """What the identity endpoints need: the plane's key ring and identity settings."""

    keyring: KeyRing
    settings: IdentitySettings = field(default_factory=IdentitySettings)
    clock: Callable[[], float] = time.time
    """Seconds since the epoch (injectable for tests)."""

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


class TokenRequestBody(Model):
    """Body of a token request; both fields are optional."""

    audience: str | None = Field(default=None, min_length=1, max_length=256)
    """One of the agent's ``spec.audiences``; default: the first of them."""
    ttl_seconds: int | None = None
    """Lifetime; default ``IdentitySettings.default_ttl_s``, at most ``max_ttl_s`` (≤ 1 h)."""


IDENTITY = web.AppKey("identity", IdentityApi)
IDENTITY_STORE: web.AppKey[Store] = web.AppKey("identity_store", Store)
ROTATION = web.AppKey("identity_rotation_lock", asyncio.Lock)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


async def jwks(request: web.Request) -> web.Response:
    identity = request.app[IDENTITY]
    identity.keyring.prune(identity.now())
    return _json(
        identity.keyring.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"}
    )


async def _token_body(request: web.Request) -> TokenRequestBody:
    return await read_options(
        request, TokenRequestBody, kind="TokenRequest", example='{"audience": "gateway"}'
    )


async def issue_token(request: web.Request) -> web.Response:
    identity = request.app[IDENTITY]
    settings = identity.settings
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    if problem := dns1123_label_problem(namespace):
        raise errors.BadRequest(f"invalid namespace {namespace!r}: {problem}")
    await admin_only(
        request,
        action="issueToken",
        resource=f'Agent::"{namespace}/{name}"',
        what="issue tokens",
    )
    body = await _token_body(request)
    agent = Agent.from_raw(await request.app[IDENTITY_STORE].get(kinds.AGENT, namespace, name))
    if agent.metadata.deletion_timestamp is not None:
        raise errors.NotFound(
            f'agents "{name}" is being deleted; no new tokens', kind="Agent", name=name
        )
    audiences = agent.spec.audiences
    audience = body.audience or audiences[0]
    ttl = body.ttl_seconds if body.ttl_seconds is not None else settings.default_ttl_s
    causes: list[FieldError] = []
    if audience not in audiences:
        causes.append(
            FieldError(
                "audience",
                f"{audience!r} is not among the agent's spec.audiences ({', '.join(audiences)})",
                "FieldValueNotSupported",
            )
        )
    try:
        tokens.check_ttl(ttl, max_ttl_s=settings.max_ttl_s)
    except tokens.LifetimeError as exc:
        causes.append(FieldError("ttlSeconds", str(exc)))
    if causes:
        raise errors.Invalid(
            f"token request for agent {namespace}/{name} is invalid",
            kind="Agent",
            name=name,
            causes=tuple(causes),
        )
    minted = tokens.mint(
        key=identity.keyring.active,
        issuer=settings.effective_issuer,
        trust_domain=settings.trust_domain,
        namespace=namespace,
        name=name,
        audience=audience,
        ttl_s=ttl,
        now=identity.clock(),
        max_ttl_s=settings.max_ttl_s,
    )
    log.info(
        "issued token jti=%s sub=%s aud=%s exp=%s kid=%s",
        minted.jti,
        minted.subject,
        minted.audience,
        format_time(minted.expires),
        minted.kid,
    )
    return _json(
        {"token": minted.token, "expiresAt": format_time(minted.expires), "kid": minted.kid},
        status=201,
    )


def _key_rows(keyring: KeyRing) -> list[dict[str, Any]]:
    return [
        {
            "kid": k.kid,
            "active": k.active,
            "created": format_time(k.created),
            "retiredAt": format_time(k.retired_at) if k.retired_at else None,
            "publishedUntil": format_time(k.published_until) if k.published_until else None,
        }
        for k in keyring.keys
    ]


async def list_keys(request: web.Request) -> web.Response:
    await admin_only(request, action="listKeys", resource="keys", what="list the signing keys")
    identity = request.app[IDENTITY]
    identity.keyring.prune(identity.now())
    return _json({"keys": _key_rows(identity.keyring)})


async def rotate_keys(request: web.Request) -> web.Response:
    await admin_only(request, action="rotateKeys", resource="keys", what="rotate the signing keys")
    identity = request.app[IDENTITY]
    async with request.app[ROTATION]:
        # Key generation and fsyncs take milliseconds: off the event loop.
        fresh = await asyncio.to_thread(identity.keyring.rotate, identity.now())
    return _json(
        {"kid": fresh.kid, "keys": _key_rows(identity.keyring), "jwks": identity.keyring.jwks()}
    )


def install(app: web.Application, identity: IdentityApi, *, store: Store) -> None:
    """Add the identity endpoints to the Control API ``app``."""
    app[IDENTITY] = identity
    app[IDENTITY_STORE] = store
    app[ROTATION] = asyncio.Lock()
    group = f"/apis/{GROUP_VERSION}"
    r = app.router
    r.add_get(JWKS_PATH, jwks)
    r.add_post(f"{group}/namespaces/{{namespace}}/agents/{{name}}/token", issue_token)
    r.add_get(f"{group}/keys", list_keys)
    r.add_post(f"{group}/keys/rotate", rotate_keys)
