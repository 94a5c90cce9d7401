"""An in-process cluster for operator tests: kmock's Kubernetes emulator with the resources the
operator touches declared, the operator's client pointed at it, and helpers to start the kopf
operator as a task and to wait for the emulator's state (polling with a deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import attrs
import kmock
import kopf
from kubernetes_asyncio import client as kclient

from aviator.k8s.render import RenderOptions
from aviator.kube.api import KubeApi
from aviator.operator.handlers import build_registry, build_settings
from aviator.operator.objects import ObjectApi
from aviator.operator.reconciler import Reconciler
from aviator.operator.runner import connection_info

T = TypeVar("T")

VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
NAMESPACED = {
    "v1/events": "Event",
    "v1/services": "Service",
    "apps/v1/deployments": "Deployment",
    "aviator.dev/v1alpha1/modeldeployments": "ModelDeployment",
    "aviator.dev/v1alpha1/grants": "Grant",
    "resource.k8s.io/v1/resourceclaimtemplates": "ResourceClaimTemplate",
    "resource.k8s.io/v1/resourceclaims": "ResourceClaim",
    "inference.networking.k8s.io/v1/inferencepools": "InferencePool",
    "autoscaling/v2/horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
    "discovery.k8s.io/v1/endpointslices": "EndpointSlice",
    "coordination.k8s.io/v1/leases": "Lease",
}
CLUSTER_SCOPED = {
    "v1/namespaces": "Namespace",
    "resource.k8s.io/v1/resourceslices": "ResourceSlice",
    "resource.k8s.io/v1/deviceclasses": "DeviceClass",
}
WITH_STATUS = {
    "apps/v1/deployments",
    "aviator.dev/v1alpha1/modeldeployments",
    "aviator.dev/v1alpha1/grants",
}

MD = "aviator.dev/v1alpha1/modeldeployments"
GRANTS = "aviator.dev/v1alpha1/grants"
DEPLOYMENTS = "apps/v1/deployments"


@attrs.frozen
class _Conflict(kmock.KubernetesError):
    status: int = 409
    reason: str = "Conflict"
    message: str = "the object has been modified; apply your changes to the latest version"


@attrs.frozen
class _TestFailed(kmock.KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = "the JSON patch test of metadata.resourceVersion failed"


@attrs.frozen
class _NotServed(kmock.KubernetesError):
    # What the API server answers for a resource type it does not serve (no CRD installed).
    status: int = 404
    reason: str = "NotFound"
    message: str = "the server could not find the requested resource"
    details: Any = attrs.field(factory=dict)


def resource_key(resource: Any) -> str:
    """``group/version/plural`` (``version/plural`` for the core group) of a kmock resource."""
    return f"{resource.group + '/' if resource.group else ''}{resource.version}/{resource.plural}"


@attrs.define(kw_only=True)
class VersionedEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server's optimistic concurrency, which kopf relies on to
    skip its own stale events and the Lease relies on for one holder: every write gives the
    object a new ``metadata.resourceVersion``; a write that names an older one is refused
    (409 for a merge patch, 422 for a failed JSON-patch ``test``, as the API server does)."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(2), init=False)
    unserved: set[str] = attrs.field(factory=set, init=False)
    """Resource types (``group/version/plural``) the emulated cluster does not serve, as when
    their CRD is not installed: every request answers 404 and discovery omits them (kmock would
    otherwise store any object it is sent and start serving its type)."""

    def _stored_version(self, request: Any) -> str | None:
        for (resource, namespace, name), obj in list(self.objects.items()):
            if (resource, namespace, name) == (request.resource, request.namespace, request.name):
                return None if obj.deleted else obj.raw.get("metadata", {}).get("resourceVersion")
        return None

    def _get_resources(self) -> list[Any]:
        return [r for r in super()._get_resources() if resource_key(r) not in self.unserved]

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and resource_key(request.resource) in self.unserved:
            return await self._render_error(_NotServed())
        data = request.data
        if request.resource is not None and request.action in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
        ):
            if request.action == kmock.action.UPDATE:
                stored = self._stored_version(request)
                if isinstance(data, dict):
                    wanted = (data.get("metadata") or {}).get("resourceVersion")
                    if wanted is not None and stored is not None and wanted != stored:
                        return await self._render_error(_Conflict())
                elif isinstance(data, list):
                    for op in data:
                        tests_version = (
                            op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion"
                        )
                        if tests_version and op.get("value") != stored:
                            return await self._render_error(_TestFailed())
            version = str(next(self._versions))
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):  # a JSON patch
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)


def declare(emulator: kmock.KubernetesEmulator) -> None:
    for key, kind in NAMESPACED.items():
        emulator.resources[key] = kmock.ResourceInfo(
            kind=kind,
            namespaced=True,
            verbs=VERBS,
            subresources={"status"} if key in WITH_STATUS else set(),
        )
    for key, kind in CLUSTER_SCOPED.items():
        emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=False, verbs=VERBS)


def unserve(emulator: VersionedEmulator, resource: str) -> None:
    """Make ``resource`` (``group/version/plural``) a type the cluster does not serve."""
    emulator.resources.pop(resource, None)
    emulator.unserved.add(resource)


def configuration(emulator: kmock.KubernetesEmulator) -> kclient.Configuration:
    return kclient.Configuration(host=str(emulator.url).rstrip("/"))


def objects(emulator: kmock.KubernetesEmulator, resource: str) -> dict[tuple[str | None, str], Any]:
    """Live objects of ``resource`` by (namespace, name)."""
    out: dict[tuple[str | None, str], Any] = {}
    for (res, namespace, name), obj in list(emulator.objects.items()):
        if resource_key(res) == resource and not obj.deleted:
            out[(namespace, name)] = obj.raw
    return out


async def eventually(probe: Callable[[], T | None], *, timeout_s: float = 5.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(0.02)


WATCHED = {"modeldeployments", "deployments", "endpointslices"}


def watched(emulator: kmock.KubernetesEmulator) -> set[str]:
    return {
        r.resource.plural
        for r in emulator
        if r.action == kmock.action.WATCH and r.resource is not None and r.resource.plural
    }


@contextlib.asynccontextmanager
async def running_operator(
    emulator: kmock.KubernetesEmulator,
    *,
    options: RenderOptions | None = None,
    resync_s: float | None = None,
) -> AsyncIterator[Reconciler]:
    """The operator, as ``aviator operator`` wires it, running against ``emulator``."""
    cfg = configuration(emulator)
    async with KubeApi(cfg) as kube:
        reconciler = Reconciler(
            api=ObjectApi(kube=kube),
            field_manager="aviator",
            render_options=options or RenderOptions(aviator_image="aviator:test"),
        )

        async def login() -> kopf.ConnectionInfo:
            return await connection_info(cfg)

        registry = build_registry(
            reconciler=reconciler, login=login, resync_s=resync_s, backoff_base_s=0.1
        )
        ready = asyncio.Event()
        task = asyncio.create_task(
            kopf.operator(
                registry=registry,
                settings=build_settings(),
                standalone=True,
                clusterwide=True,
                ready_flag=ready,
            )
        )
        try:
            await asyncio.wait_for(ready.wait(), timeout=5)
            # kmock loses events written between a watch's replay and its subscription: let
            # kopf's watches open before the test writes anything.
            await eventually(lambda: watched(emulator) >= WATCHED)
            yield reconciler
        finally:
            # A stop flag makes kopf wait up to 5 s for its workers; cancelling is immediate.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
