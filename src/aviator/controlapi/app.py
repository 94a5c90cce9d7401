"""aiohttp application of the Control API: routing, auth, body limits, admission, watch streaming.

With a ``Governance`` (the plane always passes one) every request has a principal (the admin
token, or an agent token the verifier accepts), every write is decided by policy and recorded in
the audit log before it is performed (``aviator.controlapi.governance``), and Grants have their
lifecycle endpoints (``aviator.controlapi.grants``). Without one, only the admin token is
accepted and nothing is decided: the API as used by tests of the plain object store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import yaml
from aiohttp import web

from aviator.api import admission, errors, kinds, labels
from aviator.api.errors import FieldError
from aviator.api.kinds import KindInfo
from aviator.api.meta import dns1123_label_problem
from aviator.api.patch import merge_patch
from aviator.controlapi import grants as grants_api
from aviator.controlapi import identity as identity_api
from aviator.controlapi.governance import (
    GOVERNANCE,
    PRINCIPAL,
    Governance,
    admin_only,
    authenticate,
    authorize_write,
)
from aviator.controlapi.openapi import build_document
from aviator.identity.verify import InvalidToken
from aviator.policy import entities as ent
from aviator.settings import ApiSettings
from aviator.store.protocol import Store, WatchEvent

log = logging.getLogger("aviator.controlapi")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", ApiSettings)
TOKEN = web.AppKey("token", bytes)
OPENAPI = web.AppKey("openapi", bytes)

AdmissionCheck = Callable[[KindInfo, dict[str, Any]], Sequence[FieldError]]
"""Further admission after the schema: returns field errors (e.g. CEL selectors that fail to compile)."""
CHECKS: web.AppKey[tuple[AdmissionCheck, ...]] = web.AppKey("checks", tuple)


def _admit(
    request: web.Request,
    body: Any,
    *,
    kind: KindInfo,
    namespace: str | None,
    name: str | None = None,
) -> dict[str, Any]:
    obj = admission.admit(body, kind=kind, namespace=namespace, name=name)
    causes = [cause for check in request.app[CHECKS] for cause in check(kind, obj)]
    if causes:
        obj_name = obj["metadata"]["name"]
        raise errors.Invalid(
            f"{kind.kind} {obj_name!r} is invalid",
            kind=kind.kind,
            name=obj_name,
            causes=tuple(causes),
        )
    return obj


PATCH_RETRIES = 5
"""Merge patches without a resourceVersion are retried this often on a write race."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status_response(err: errors.ApiError) -> web.Response:
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(err.retry_after)))
    return web.Response(
        body=orjson.dumps(err.to_status()),
        status=err.code,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiError as err:
        return _status_response(err)
    except web.HTTPRequestEntityTooLarge as exc:
        return _status_response(
            errors.RequestEntityTooLarge(
                f"request body exceeds the limit of {exc.max_size} bytes"  # type: ignore[attr-defined]
            )
        )
    except web.HTTPNotFound:
        return _status_response(
            errors.NotFound(f"the server could not find the requested resource {request.path!r}")
        )
    except web.HTTPMethodNotAllowed as exc:
        return _status_response(
            errors.MethodNotAllowed(f"method {exc.method} is not allowed on {request.path!r}")
        )
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return _status_response(errors.InternalError("internal error; see the plane's log"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == identity_api.JWKS_PATH and request.method in ("GET", "HEAD"):
        return await handler(request)  # public keys: verifiers fetch them without a token
    governance = request.app.get(GOVERNANCE)
    try:
        request[PRINCIPAL] = authenticate(
            request.headers.get("Authorization", ""),
            admin_token=request.app[TOKEN],
            verifier=governance.verifier if governance is not None else None,
        )
    except InvalidToken as exc:
        # The reason, never the token: the detail names claims at most.
        if exc.reason == "missing":
            message = "missing bearer token: send 'Authorization: Bearer <admin or agent token>'"
        else:
            message = f"invalid token ({exc})"
        response = _status_response(errors.Unauthorized(message))
        response.headers["WWW-Authenticate"] = exc.www_authenticate()
        return response
    return await handler(request)


async def _read_body(request: web.Request) -> Any:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise errors.RequestEntityTooLarge(
            f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes"
        )
    raw = await request.read()
    if not raw.strip():
        raise errors.BadRequest("request body is empty")
    ctype = request.content_type
    if ctype in (
        "application/json",
        "application/merge-patch+json",
        "application/octet-stream",
        "",
    ):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.BadRequest(f"malformed JSON body: {exc}") from None
    if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise errors.BadRequest(f"malformed YAML body: {exc}") from None
    raise errors.UnsupportedMediaType(
        f"unsupported Content-Type {ctype!r}: use application/json, application/yaml or application/merge-patch+json"
    )


def _scope(request: web.Request) -> tuple[KindInfo, str | None]:
    info = kinds.by_plural(request.match_info["plural"])
    namespace = request.match_info.get("namespace")
    if namespace is not None and not info.namespaced:
        raise errors.NotFound(f"{info.kind} is cluster-scoped; it has no namespaced path")
    if namespace is not None and (problem := dns1123_label_problem(namespace)):
        raise errors.BadRequest(f"invalid namespace {namespace!r}: {problem}")
    if info.namespaced and namespace is None and request.method != "GET":
        raise errors.MethodNotAllowed(
            f"{info.plural} are namespaced: use /namespaces/{{namespace}}/{info.plural}"
        )
    return info, namespace


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def list_or_watch(request: web.Request) -> web.StreamResponse:
    info, namespace = _scope(request)
    store = request.app[STORE]
    selector = labels.parse(request.query.get("labelSelector"))
    if request.query.get("watch", "").lower() in ("1", "true"):
        return await _watch(request, info, namespace, selector)
    items, rv = await store.list(info, namespace=namespace, selector=selector)
    return _json(
        {
            "apiVersion": info.api_version,
            "kind": info.list_kind,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }
    )


async def _watch(
    request: web.Request, info: KindInfo, namespace: str | None, selector: labels.Selector
) -> web.StreamResponse:
    store = request.app[STORE]
    resource_version = request.query.get("resourceVersion") or None
    events = store.watch(
        info, namespace=namespace, resource_version=resource_version, selector=selector
    )
    queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        # Reading the store's iterator in its own task lets the writer below time out (to send
        # bookmarks) without cancelling the iterator mid-step.
        try:
            async for event in events:
                await queue.put(event)
        except errors.ApiError as exc:
            await queue.put(exc)

    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
    )
    pump_task = asyncio.create_task(pump(), name=f"watch pump {info.plural}")
    last_rv = resource_version or store.resource_version
    keepalive = request.app[SETTINGS].watch_keepalive_s
    try:
        # A too-old resourceVersion fails before any byte: answer it as a plain 410.
        try:
            first: WatchEvent | BaseException | None = await asyncio.wait_for(
                queue.get(), timeout=0.05
            )
        except TimeoutError:
            first = None
        if isinstance(first, errors.ApiError):
            return _status_response(first)
        await response.prepare(request)
        pending = first
        while True:
            if pending is None:
                try:
                    pending = await asyncio.wait_for(queue.get(), timeout=keepalive)
                except TimeoutError:
                    bookmark = {
                        "apiVersion": info.api_version,
                        "kind": info.kind,
                        "metadata": {"resourceVersion": last_rv},
                    }
                    await response.write(
                        orjson.dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n"
                    )
                    continue
            item, pending = pending, None
            if isinstance(item, errors.ApiError):
                await response.write(
                    orjson.dumps({"type": "ERROR", "object": item.to_status()}) + b"\n"
                )
                break
            if isinstance(item, BaseException):
                raise item
            if item is None:
                continue
            last_rv = item["object"].get("metadata", {}).get("resourceVersion", last_rv)
            await response.write(orjson.dumps(item) + b"\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the watcher went away
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump_task
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return response


async def create(request: web.Request) -> web.Response:
    info, namespace = _scope(request)
    body = await _read_body(request)
    obj = _admit(request, body, kind=info, namespace=namespace)
    store = request.app[STORE]
    governance = request.app.get(GOVERNANCE)
    if governance is not None and info is kinds.GRANT:
        # Asking for a grant is ``requestGrant``, decided into the stored status; not ``create``.
        return _json(await grants_api.request_grant(request, governance, store, obj), status=201)
    await authorize_write(request, info, "create", proposed=obj)
    return _json(await store.create(info, obj), status=201)


async def get(request: web.Request) -> web.Response:
    info, namespace = _scope(request)
    return _json(await request.app[STORE].get(info, namespace, request.match_info["name"]))


async def _governed_update(
    request: web.Request,
    info: KindInfo,
    current: dict[str, Any],
    obj: dict[str, Any],
) -> dict[str, Any]:
    """Decide and record an update of ``current`` to ``obj``; returns ``obj`` pinned to the
    version decided on, so that a concurrent change cannot slip under the decision."""
    if info is kinds.GRANT:
        grants_api.check_spec_kept(current, obj)
    await authorize_write(request, info, "update", current=current, proposed=obj)
    pinned = dict(obj)
    pinned["metadata"] = {
        **obj["metadata"],
        "resourceVersion": obj["metadata"].get("resourceVersion")
        or current["metadata"]["resourceVersion"],
    }
    return pinned


async def replace(request: web.Request) -> web.Response:
    info, namespace = _scope(request)
    name = request.match_info["name"]
    body = await _read_body(request)
    obj = _admit(request, body, kind=info, namespace=namespace, name=name)
    store = request.app[STORE]
    if request.app.get(GOVERNANCE) is None:
        return _json(await store.replace(info, obj))
    pinned = obj["metadata"].get("resourceVersion")
    for _ in range(PATCH_RETRIES):
        current = await store.get(info, namespace, name)
        try:
            stored = await store.replace(info, await _governed_update(request, info, current, obj))
        except errors.Conflict:
            if pinned:
                raise
            continue
        return _json(await _synced(request, info, stored))
    raise errors.Conflict(
        f"{info.kind} {name!r} kept changing; not replaced", kind=info.kind, name=name
    )


async def _synced(
    request: web.Request, info: KindInfo, stored: dict[str, Any], *, deleted: bool = False
) -> dict[str, Any]:
    """After a Grant write: let this process's policy view see it before answering."""
    governance = request.app.get(GOVERNANCE)
    if governance is not None and info is kinds.GRANT:
        meta = stored["metadata"]
        await grants_api.wait_for_view(
            governance, meta["namespace"], meta["name"], None if deleted else stored
        )
    return stored


async def patch(request: web.Request) -> web.Response:
    info, namespace = _scope(request)
    name = request.match_info["name"]
    if request.content_type != "application/merge-patch+json":
        raise errors.UnsupportedMediaType(
            f"PATCH needs Content-Type application/merge-patch+json (got {request.content_type!r})"
        )
    body = await _read_body(request)
    if not isinstance(body, dict):
        raise errors.BadRequest("a merge patch must be a JSON object")
    store = request.app[STORE]
    pinned = isinstance(body.get("metadata"), dict) and body["metadata"].get("resourceVersion")
    for _ in range(PATCH_RETRIES):
        current = await store.get(info, namespace, name)
        patched = merge_patch(current, body)
        obj = _admit(request, patched, kind=info, namespace=namespace, name=name)
        obj["metadata"]["resourceVersion"] = pinned or current["metadata"]["resourceVersion"]
        if request.app.get(GOVERNANCE) is not None:
            obj = await _governed_update(request, info, current, obj)
        try:
            return _json(await _synced(request, info, await store.replace(info, obj)))
        except errors.Conflict:
            if pinned:
                raise
    raise errors.Conflict(
        f"{info.kind} {name!r} kept changing; patch not applied", kind=info.kind, name=name
    )


async def delete(request: web.Request) -> web.Response:
    info, namespace = _scope(request)
    name = request.match_info["name"]
    rv = request.query.get("resourceVersion") or None
    store = request.app[STORE]
    if request.app.get(GOVERNANCE) is None:
        return _json(await store.delete(info, namespace, name, resource_version=rv))
    for _ in range(PATCH_RETRIES):
        current = await store.get(info, namespace, name)
        await authorize_write(request, info, "delete", current=current)
        try:
            # Pinned to the version decided on (see ``_governed_update``).
            gone = await store.delete(
                info, namespace, name, resource_version=rv or current["metadata"]["resourceVersion"]
            )
        except errors.Conflict:
            if rv:
                raise
            continue
        return _json(await _synced(request, info, gone, deleted=True))
    raise errors.Conflict(
        f"{info.kind} {name!r} kept changing; not deleted", kind=info.kind, name=name
    )


async def get_status(request: web.Request) -> web.Response:
    return await get(request)


async def replace_status(request: web.Request) -> web.Response:
    info, namespace = _scope(request)
    name = request.match_info["name"]
    # Status is what the plane observed; no principal but the admin may assert it.
    await admin_only(
        request,
        action="update",
        resource=str(ent.object_uid(info.kind, namespace, name)),
        what="write status",
    )
    body = await _read_body(request)
    store = request.app[STORE]
    current = await store.get(info, namespace, name)
    obj = admission.admit_status(body, kind=info, current=current)
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        obj["metadata"]["resourceVersion"] = (
            body["metadata"].get("resourceVersion") or current["metadata"]["resourceVersion"]
        )
    return _json(await store.replace_status(info, obj))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def discovery(request: web.Request) -> web.Response:
    resources = []
    for info in kinds.KINDS.values():
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources.append(
            {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": verbs,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            }
        )
        if info.status_subresource:
            resources.append(
                {
                    "name": f"{info.plural}/status",
                    "singularName": "",
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": ["get", "update"],
                }
            )
        if info is kinds.GRANT:  # the decision verbs, like Kubernetes' pods/eviction
            resources.extend(
                {
                    "name": f"{info.plural}/{verb}",
                    "singularName": "",
                    "namespaced": True,
                    "kind": info.kind,
                    "verbs": ["create"],
                }
                for verb in grants_api.VERBS
            )
    return _json(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": kinds.MODEL_DEPLOYMENT.api_version,
            "resources": resources,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app(
    *,
    store: Store,
    settings: ApiSettings,
    token: str,
    checks: Sequence[AdmissionCheck] = (),
    identity: identity_api.IdentityApi | None = None,
    governance: Governance | None = None,
) -> web.Application:
    """``identity``: the plane's keys; adds the JWKS, token-request and key-rotation endpoints.
    ``governance``: principals, policy on writes, audit, and the grant endpoints (see the module
    docstring)."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[STORE] = store
    app[CHECKS] = tuple(checks)
    app[SETTINGS] = settings
    app[TOKEN] = token.encode()
    app[OPENAPI] = orjson.dumps(build_document())
    if governance is not None:
        app[GOVERNANCE] = governance
    group = f"/apis/{kinds.MODEL_DEPLOYMENT.api_version}"
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/openapi/v3", openapi)
    r.add_get(group, discovery)
    if identity is not None:  # before the generic routes, so that `{group}/keys` is not a kind
        identity_api.install(app, identity, store=store)
    if governance is not None:
        grants_api.install(app, store=store)
    for prefix in (f"{group}/namespaces/{{namespace}}/{{plural}}", f"{group}/{{plural}}"):
        r.add_get(prefix, list_or_watch)
        r.add_post(prefix, create)
        r.add_get(prefix + "/{name}", get)
        r.add_put(prefix + "/{name}", replace)
        r.add_patch(prefix + "/{name}", patch)
        r.add_delete(prefix + "/{name}", delete)
        r.add_get(prefix + "/{name}/status", get_status)
        r.add_put(prefix + "/{name}/status", replace_status)
    return app
