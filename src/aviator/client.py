"""An async client of the Control API, returning wire dicts and raising ``aviator.api.errors``.

It is the one HTTP boundary on the calling side: httpx errors and ``Status`` bodies are
translated here (``ConnectError`` → ``Unavailable``), so the CLI, the gateway's discovery and
tests all see the same exceptions the store raises in-process. The transport is injectable so
tests can run it against an in-process app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from aviator.api import errors, kinds
from aviator.api.kinds import KindInfo
from aviator.api.watch import WatchEvent

WATCH_READ_TIMEOUT_S = 60.0
"""A watch with no line (not even a BOOKMARK, sent every 15 s) for this long is considered dead."""


class Unavailable(errors.AviatorError):
    """The Control API could not be reached (not running, wrong port, network down)."""


def collection_path(kind: KindInfo, namespace: str | None) -> str:
    base = f"/apis/{kind.api_version}"
    if kind.namespaced and namespace is not None:
        return f"{base}/namespaces/{namespace}/{kind.plural}"
    return f"{base}/{kind.plural}"


def object_path(kind: KindInfo, namespace: str | None, name: str) -> str:
    return f"{collection_path(kind, namespace if kind.namespaced else None)}/{name}"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        raise errors.from_status(body, fallback_code=response.status_code)
    text = response.text[:256]
    raise errors.from_status(
        {"code": response.status_code, "message": text or response.reason_phrase}
    )


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
            # Loading the CA bundle costs 50-200 ms per client; plain http never needs it.
            verify=not base_url.startswith("http://"),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        try:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach the Control API at {self._http.base_url}: {exc}"
            ) from exc
        _raise_for(response)
        result: dict[str, Any] = orjson.loads(response.content)
        return result

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Any Control API endpoint that is not a kind's verb (token requests, keys, grant
        verbs): ``json`` is the body; errors are mapped exactly as for the verbs."""
        return await self._request(method, path, params=params, body=json)

    async def approve_grant(
        self, namespace: str, name: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """``Pending`` → ``Active``; returns the grant. ``Forbidden`` for its requester."""
        return await self._grant_verb("approve", namespace, name, reason)

    async def deny_grant(
        self, namespace: str, name: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """``Pending`` → ``Denied``; returns the grant."""
        return await self._grant_verb("deny", namespace, name, reason)

    async def revoke_grant(
        self, namespace: str, name: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """``Active`` or ``Pending`` → ``Revoked``; returns the grant."""
        return await self._grant_verb("revoke", namespace, name, reason)

    async def _grant_verb(
        self, verb: str, namespace: str, name: str, reason: str | None
    ) -> dict[str, Any]:
        path = f"{object_path(kinds.GRANT, namespace, name)}/{verb}"
        return await self.request("POST", path, json={"reason": reason} if reason else None)

    async def get(
        self, kind: KindInfo, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self._request("GET", object_path(kind, namespace, name))

    async def list(
        self, kind: KindInfo, *, namespace: str | None = None, selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        params = {"labelSelector": selector} if selector else None
        body = await self._request("GET", collection_path(kind, namespace), params=params)
        return list(body.get("items") or []), str(
            body.get("metadata", {}).get("resourceVersion", "")
        )

    async def create(
        self, kind: KindInfo, obj: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        ns = (
            namespace
            or obj.get("metadata", {}).get("namespace")
            or ("default" if kind.namespaced else None)
        )
        return await self._request("POST", collection_path(kind, ns), body=obj)

    async def replace(
        self, kind: KindInfo, obj: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        meta = obj.get("metadata", {})
        ns = namespace or meta.get("namespace") or ("default" if kind.namespaced else None)
        return await self._request("PUT", object_path(kind, ns, meta["name"]), body=obj)

    async def replace_status(self, kind: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._request(
            "PUT", object_path(kind, meta.get("namespace"), meta["name"]) + "/status", body=obj
        )

    async def patch(
        self, kind: KindInfo, name: str, patch: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386)."""
        return await self._request(
            "PATCH",
            object_path(kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(
        self, kind: KindInfo, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self._request("DELETE", object_path(kind, namespace, name))

    async def openapi(self) -> dict[str, Any]:
        return await self._request("GET", "/openapi/v3")

    async def watch(
        self,
        kind: KindInfo,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        params = {"watch": "1"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if selector:
            params["labelSelector"] = selector
        timeout = httpx.Timeout(self._http.timeout.connect, read=WATCH_READ_TIMEOUT_S)
        try:
            async with self._http.stream(
                "GET", collection_path(kind, namespace), params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event: WatchEvent = orjson.loads(line)
                    if event["type"] == "ERROR":
                        raise errors.from_status(event["object"], fallback_code=500)
                    yield event
        except httpx.TransportError as exc:
            raise Unavailable(f"watch of {kind.plural} interrupted: {exc}") from exc
