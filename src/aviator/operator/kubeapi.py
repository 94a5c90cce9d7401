"""A thin JSON client for the Kubernetes API, over ``kubernetes_asyncio``'s configured ApiClient.

``kubernetes_asyncio`` supplies what is hard to get right (kubeconfig and in-cluster config,
TLS, bearer tokens that refresh); this module only sends plain dicts to the paths of
:mod:`aviator.operator.resources` and turns error answers into :class:`KubeError`. It does no
discovery and no deserialization into generated models, so every object stays the dict the
pure planners read and write.

It MUST NOT log request or response bodies or headers: they may carry bearer tokens or data
from the cluster's Secrets.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from aviator.operator.resources import ObjectRef, ResourceType, ref_of

__all__ = [
    "ConfigError",
    "KubeApi",
    "KubeError",
    "connection_info",
    "load_configuration",
]

_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"
_APPLY_PATCH = "application/apply-patch+yaml"  # JSON is valid YAML: the body is sent as JSON


class ConfigError(RuntimeError):
    """No way to reach a cluster: neither in-cluster service account nor a kubeconfig."""


class KubeError(RuntimeError):
    """The API server answered with an error ``Status``."""

    def __init__(self, *, code: int, reason: str, message: str, what: str) -> None:
        super().__init__(f"{what}: {code} {reason}: {message}".rstrip(": "))
        self.code = code
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409


async def load_configuration(
    *, kubeconfig: str | None = None, context: str | None = None
) -> kclient.Configuration:
    """In-cluster config when running in a Pod, else the kubeconfig (``KUBECONFIG`` or
    ``~/.kube/config``). Loaded into a fresh ``Configuration``, never the library's global."""
    configuration = kclient.Configuration()
    if kubeconfig is None and context is None:
        try:
            kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except kconfig.ConfigException:
            pass  # not in a Pod: fall back to the kubeconfig
    try:
        await kconfig.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (kconfig.ConfigException, OSError) as exc:
        raise ConfigError(
            "cannot reach a cluster: not running in a Pod and no usable kubeconfig "
            f"({kubeconfig or '$KUBECONFIG or ~/.kube/config'}): {exc}"
        ) from None
    return configuration


async def connection_info(configuration: kclient.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration the operator's own client uses, so both
    talk to the same server as the same identity."""
    found: Any = configuration.get_api_key_with_prefix("BearerToken")
    # Awaitable since kubernetes_asyncio 33.3 (token refresh); a plain value before.
    header = await found if inspect.isawaitable(found) else found
    scheme: str | None = None
    token: str | None = None
    if header:
        first, _, rest = str(header).partition(" ")
        scheme, token = (first, rest) if rest else (None, first)
    if not configuration.host:
        raise ConfigError("the Kubernetes configuration names no API server")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,
    )


def _first_line(message: Any) -> str:
    lines = str(message or "").splitlines()
    return lines[0] if lines else ""


class KubeApi:
    """JSON requests to the API server; every method raises :class:`KubeError` on an error."""

    def __init__(self, *, api_client: kclient.ApiClient, timeout_s: float = 30.0) -> None:
        self._api = api_client
        self._timeout_s = timeout_s

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = _JSON,
    ) -> dict[str, Any]:
        response = await self._api.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Content-Type": content_type, "Accept": _JSON},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=self._timeout_s,
        )
        try:
            raw = await response.read()
            status = response.status
        finally:
            response.release()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if status >= 400 or (data.get("kind") == "Status" and data.get("status") == "Failure"):
            raise KubeError(
                code=int(data.get("code") or status),
                reason=str(data.get("reason") or ""),
                # The API server's message names the object and the problem; never the body.
                message=_first_line(data.get("message")),
                what=what,
            )
        return data

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._call("GET", ref.path(), what=f"get {ref}")
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self,
        rtype: ResourceType,
        *,
        namespace: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of ``rtype`` in ``namespace`` (all when None) carrying ``labels``.

        The label selector is also checked here: an emulator, or an older server, may ignore
        it, and what the operator prunes must match it for certain."""
        query: list[tuple[str, str]] = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        data = await self._call(
            "GET", rtype.path(namespace=namespace), what=f"list {rtype.plural}", query=query
        )
        items = data.get("items") or []
        out: list[dict[str, Any]] = []
        for raw in items:
            if not isinstance(raw, dict):
                continue
            # List items omit apiVersion and kind: restore them so refs are complete.
            item = {"apiVersion": rtype.api_version, "kind": rtype.kind, **raw}
            have = (item.get("metadata") or {}).get("labels") or {}
            if all(have.get(k) == v for k, v in (labels or {}).items()):
                out.append(item)
        return out

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        ref = ref_of(obj)
        return await self._call(
            "POST", ref.type.path(namespace=ref.namespace), what=f"create {ref}", body=dict(obj)
        )

    async def apply(
        self, obj: Mapping[str, Any], *, field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply: ``obj`` is the complete intent of ``field_manager``."""
        ref = ref_of(obj)
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return await self._call(
            "PATCH",
            ref.path(),
            what=f"apply {ref}",
            body=dict(obj),
            query=query,
            content_type=_APPLY_PATCH,
        )

    async def patch(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of ``obj`` onto the live object (``null`` removes a field). When
        ``obj`` carries ``metadata.resourceVersion`` the API server applies it only to that
        version (409 Conflict otherwise): an update conditional on what was read."""
        ref = ref_of(obj)
        return await self._call(
            "PATCH", ref.path(), what=f"patch {ref}", body=dict(obj), content_type=_MERGE_PATCH
        )

    async def patch_status(
        self, ref: ObjectRef, status: Mapping[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        """Merge ``status`` into the status subresource."""
        return await self._call(
            "PATCH",
            ref.path("status"),
            what=f"update status of {ref}",
            body={"status": dict(status)},
            query=[("fieldManager", field_manager)],
            content_type=_MERGE_PATCH,
        )

    async def delete(self, ref: ObjectRef) -> bool:
        """Delete in the background (the garbage collector removes dependents such as a
        Deployment's ReplicaSets and Pods): True when it existed."""
        try:
            await self._call(
                "DELETE",
                ref.path(),
                what=f"delete {ref}",
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True
