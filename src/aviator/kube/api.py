"""The one door to a Kubernetes API server: raw JSON requests and watch streams.

``KubeApi`` sends requests through a ``kubernetes_asyncio`` ``ApiClient`` (which brings the
credentials, TLS and token refresh of the in-cluster service account or a kubeconfig) but reads
every answer itself as plain JSON: no generated model classes, and no error ``Status`` objects
returned as if they were results. Every failure leaves this module as an ``aviator.api.errors``
exception, translated in exactly one place (:func:`error_of`), so callers handle the same
exceptions whichever home they run in.

:func:`load_configuration` picks the credentials: an explicit kubeconfig or context, else the
Pod's service account when running in a cluster, else the default kubeconfig. It never writes the
kubeconfig back and never logs a token. Both cluster homes use this one client: the gateway's
store and discovery (:mod:`aviator.kube.store`, :mod:`aviator.kube.endpoints`) and the operator
(:mod:`aviator.operator.objects`, object-level verbs over :meth:`KubeApi.request`).

Pure helpers (:func:`resource_path`, :func:`selector_text`, :func:`error_of`) take and return
plain data; only ``KubeApi`` and :func:`load_configuration` do I/O.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from aviator.api import errors
from aviator.api.labels import Selector

__all__ = [
    "APPLY_PATCH",
    "MERGE_PATCH",
    "KubeApi",
    "NoCredentials",
    "Resource",
    "error_of",
    "load_configuration",
    "resource_path",
    "selector_text",
]

log = logging.getLogger("aviator.kube")

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply; JSON is valid YAML, so the body is sent as JSON."""

REQUEST_TIMEOUT_S = 30.0
"""A whole non-watch request (connect, send, read)."""
CONNECT_TIMEOUT_S = 10.0
"""Connecting for a watch, whose reads may then idle until the server's ``timeoutSeconds``."""

_STATUS_OF_CODE: Mapping[int, type[errors.ApiError]] = MappingProxyType(
    {
        400: errors.BadRequest,
        401: errors.Unauthorized,
        403: errors.Forbidden,
        404: errors.NotFound,
        405: errors.MethodNotAllowed,
        410: errors.Gone,
        413: errors.RequestEntityTooLarge,
        415: errors.UnsupportedMediaType,
        422: errors.Invalid,
        429: errors.TooManyRequests,
        500: errors.InternalError,
        503: errors.ServiceUnavailable,
    }
)


class NoCredentials(errors.ServiceUnavailable):
    """Neither a kubeconfig nor a Pod's service account says how to reach a cluster."""


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource type of the API server: where its objects live."""

    group: str
    """``""`` for the core group."""
    version: str
    plural: str
    namespaced: bool
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def resource_path(
    resource: Resource,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The URL path of a collection (``name`` None) or of one object.

    ``namespace`` None on a namespaced resource means every namespace (lists and watches only).
    """
    root = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
    parts = [root]
    if resource.namespaced and namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(resource.plural)
    if name is not None:
        parts.append(name)
        if subresource is not None:
            parts.append(subresource)
    return "/".join(parts)


def selector_text(selector: Selector | None) -> str | None:
    """The ``labelSelector`` query value of ``selector`` (None when it selects everything)."""
    if selector is None or selector.empty:
        return None
    clauses = []
    for req in selector.requirements:
        values = ",".join(sorted(req.values))
        match req.operator:
            case "=":
                clauses.append(f"{req.key}={values}")
            case "!=":
                clauses.append(f"{req.key}!={values}")
            case "in":
                clauses.append(f"{req.key} in ({values})")
            case "notin":
                clauses.append(f"{req.key} notin ({values})")
            case "exists":
                clauses.append(req.key)
            case "!":
                clauses.append(f"!{req.key}")
    return ",".join(clauses)


def error_of(code: int, body: object, *, verb: str) -> errors.ApiError:
    """The aviator error for an API server failure: HTTP ``code`` and its ``Status`` ``body``.

    ``verb`` is the request's (``create``, ``get``, ...): a create answers 409 only when the
    name is taken, while every other 409 is a stale resourceVersion.
    """
    status = body if isinstance(body, Mapping) else {}
    message = status.get("message")
    if not isinstance(message, str) or not message:
        message = f"the Kubernetes API answered {code} to a {verb}"
    details = status.get("details")
    details = details if isinstance(details, Mapping) else {}
    name = details.get("name") if isinstance(details.get("name"), str) else None
    kind = details.get("kind") if isinstance(details.get("kind"), str) else None
    causes = tuple(
        errors.FieldError(
            field=str(cause.get("field") or ""),
            message=str(cause.get("message") or ""),
            reason=str(cause.get("reason") or "FieldValueInvalid"),
        )
        for cause in details.get("causes") or ()
        if isinstance(cause, Mapping)
    )
    retry = details.get("retryAfterSeconds")
    retry_after = float(retry) if isinstance(retry, int | float) and retry > 0 else None
    cls: type[errors.ApiError]
    if code == 409:
        reason = status.get("reason")
        cls = (
            errors.AlreadyExists
            if verb == "create" or reason == "AlreadyExists"
            else errors.Conflict
        )
    else:
        cls = _STATUS_OF_CODE.get(code) or (
            errors.ServiceUnavailable if code >= 500 else errors.BadRequest
        )
    return cls(message, kind=kind, name=name, causes=causes, retry_after=retry_after)


async def load_configuration(
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    environ: Mapping[str, str],
) -> k8s_client.Configuration:
    """Credentials and server address: ``kubeconfig`` (or a ``context`` of the default one) if
    given, else the Pod's service account when ``environ`` says we run in a cluster
    (``KUBERNETES_SERVICE_HOST``), else the default kubeconfig. :class:`NoCredentials` (a
    ``ServiceUnavailable``) says why none could be loaded."""
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig is None and context is None and environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            log.info("using the Pod's service account for the Kubernetes API")
        else:
            await k8s_config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                client_configuration=configuration,
                persist_config=False,  # never rewrite the user's file
            )
            log.info("using the kubeconfig %s", kubeconfig or "at its default location")
    except (k8s_config.ConfigException, OSError) as exc:
        raise NoCredentials(
            f"no Kubernetes credentials: {exc} (run in a Pod with a service account, or pass a "
            "kubeconfig)"
        ) from None
    return configuration


class KubeApi:
    """Raw JSON requests and watches over one ``ApiClient``; ``aclose()`` (or ``async with``)
    when done."""

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self._client = k8s_client.ApiClient(configuration)
        self._closed = False

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def aclose(self) -> None:
        """Close the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._client.close()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send one request and return its JSON object; any failure as an ``ApiError``."""
        response = await self._send(
            method,
            path,
            verb=verb,
            query=query,
            body=body,
            content_type=content_type,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.ServiceUnavailable(
                f"the Kubernetes API at {self.host} broke off a {verb}: {exc}"
            ) from None
        finally:
            response.release()
        decoded = _decode(raw)
        if not 200 <= response.status < 300:
            raise error_of(response.status, decoded, verb=verb)
        if not isinstance(decoded, dict):
            raise errors.InternalError(
                f"the Kubernetes API answered a {verb} with something that is not a JSON object"
            )
        return decoded

    async def watch(self, path: str, *, query: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch request (``watch=true`` is added), until the server ends it.

        An ``ERROR`` event is raised as its ``ApiError`` (``Gone`` for an expired
        resourceVersion); a dropped connection as ``ServiceUnavailable``.
        """
        response = await self._send(
            "GET",
            path,
            verb="watch",
            query={**query, "watch": "true"},
            body=None,
            content_type="application/json",
            timeout=aiohttp.ClientTimeout(
                total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S
            ),
        )
        try:
            if not 200 <= response.status < 300:
                raise error_of(response.status, _decode(await response.read()), verb="watch")
            buffer = b""
            try:
                # Lines can be long (a Policy's Cedar text): split chunks ourselves instead of
                # readline(), whose buffer limit would cut them.
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line, buffer = buffer[:end], buffer[end + 1 :]
                        if line.strip():
                            yield _event(line)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise errors.ServiceUnavailable(
                    f"the watch of {path} at {self.host} broke off: {exc}"
                ) from None
            if buffer.strip():
                yield _event(buffer)
        finally:
            response.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        query: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        if self._closed:
            raise errors.ServiceUnavailable("the Kubernetes API client is closed")
        try:
            response: aiohttp.ClientResponse = await self._client.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.ServiceUnavailable(
                f"cannot reach the Kubernetes API at {self.host} for a {verb}: {exc}"
            ) from None
        return response


def _decode(raw: bytes) -> object:
    with contextlib.suppress(ValueError):
        return orjson.loads(raw)
    return None


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except ValueError:
        raise errors.InternalError(
            "the Kubernetes API sent a watch event that is not JSON"
        ) from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise errors.InternalError("the Kubernetes API sent a watch event without an object")
    if event.get("type") == "ERROR":
        status = event["object"]
        code = status.get("code")
        raise error_of(code if isinstance(code, int) else 500, status, verb="watch")
    return event
