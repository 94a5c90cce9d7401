"""The gateway's endpoints in a cluster: ready Pods from EndpointSlices, models from the CRDs.

In a cluster a ModelDeployment's replicas are the Pods of its Deployment, and the Service of the
same name (``aviator.k8s.render``) lists them in ``discovery.k8s.io/v1`` EndpointSlices, which
carry the Service's labels (``aviator.dev/model-deployment: <name>``) and say which endpoint is
ready. ``SliceDiscovery`` is the gateway ``Feed`` of that home: it watches the slices (selected by
that label) and the ModelDeployments (through a ``ListWatch`` such as ``KubeStore``), joins the two
per deployment, and keeps the gateway's ``EndpointTable`` and ``ModelDirectory`` current.

Why a Feed of its own rather than a ``ListWatch`` of synthetic Replicas for the existing
``Discovery``: an endpoint's model is not in its slice but in the ModelDeployment, so each change
of either side must recompute a whole deployment (a model renamed re-keys every endpoint, a slice
may arrive before its deployment). That join needs both caches at once, which a per-kind reflector
does not have. The table itself is still fed Replica-shaped objects (:func:`replicas_of`, pure),
so routability has one definition (``aviator.gateway.endpoints.endpoint_of``) in both homes.

Each endpoint becomes one Replica named after its Pod (``targetRef``), ready when the slice says
``ready`` (absent counts as ready, as the API documents), routed at ``http://<address>:<port>``
with the slice's ``http`` port. Endpoints that are not ready stay in the table as members, so a
deployed model with no ready Pod is 503, not 404. When one Pod appears in two slices (dual-stack
Services have one slice per address family) the IPv4 one is used.

While a watch is down the table keeps its last state (the gateway routes on); a relist reconciles
it. Nothing here writes to the cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from aviator.api import errors
from aviator.api.kinds import MODEL_DEPLOYMENT
from aviator.api.meta import GROUP_VERSION
from aviator.api.replica import LABEL_DEPLOYMENT
from aviator.api.watch import EventType
from aviator.cache import ListWatch, Reflector
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.models import ModelDirectory
from aviator.kube.api import KubeApi, Resource, resource_path

__all__ = ["ENDPOINT_SLICES", "SliceDiscovery", "replicas_of", "slice_deployment"]

ENDPOINT_SLICES = Resource(
    group="discovery.k8s.io",
    version="v1",
    plural="endpointslices",
    namespaced=True,
    kind="EndpointSlice",
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PORT_NAME = "http"
"""The Service port every rendered ModelDeployment exposes (``aviator.k8s.render``)."""
WATCH_TIMEOUT_S = 300
LIST_PAGE = 500
_FAMILY_ORDER = MappingProxyType({"IPv4": 0, "IPv6": 1, "FQDN": 2})

DeploymentKey = tuple[str, str]
"""(namespace, ModelDeployment name)."""
SliceKey = tuple[str, str]
"""(namespace, EndpointSlice name)."""


def slice_deployment(obj: Mapping[str, Any]) -> DeploymentKey | None:
    """The ModelDeployment an EndpointSlice belongs to, or None when it is not one of ours."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    labels = meta.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    name = labels.get(LABEL_DEPLOYMENT)
    namespace = meta.get("namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
        return None
    return (namespace, name)


def _port(obj: Mapping[str, Any]) -> int | None:
    ports = [p for p in obj.get("ports") or () if isinstance(p, Mapping)]
    named = [p for p in ports if p.get("name") == PORT_NAME]
    chosen = named or (ports if len(ports) == 1 else [])
    port = chosen[0].get("port") if chosen else None
    return port if isinstance(port, int) and 0 < port < 65536 else None


def _url(address: str, address_type: str, port: int | None) -> str | None:
    if port is None or not address:
        return None
    host = f"[{address}]" if address_type == "IPv6" else address
    return f"http://{host}:{port}"


def _ready(endpoint: Mapping[str, Any]) -> bool:
    conditions = endpoint.get("conditions")
    conditions = conditions if isinstance(conditions, Mapping) else {}
    if conditions.get("terminating") is True:
        return False
    return conditions.get("ready") is not False  # absent means ready (discovery.k8s.io/v1)


def replicas_of(
    slices: Iterable[Mapping[str, Any]], *, deployment: DeploymentKey, model: str
) -> dict[str, dict[str, Any]]:
    """The Replica-shaped objects (by ``namespace/name`` key) of one ModelDeployment's slices.

    One per endpoint, named after its Pod (or ``<slice>-<n>`` without a Pod reference); ready ones
    carry ``status.endpoint``. Deterministic: slices are taken IPv4 first, then by name, and the
    first slice naming a Pod wins.
    """
    namespace, md_name = deployment
    out: dict[str, dict[str, Any]] = {}
    ordered = sorted(
        slices,
        key=lambda s: (
            _FAMILY_ORDER.get(str(s.get("addressType")), 3),
            str((s.get("metadata") or {}).get("name") or ""),
        ),
    )
    for obj in ordered:
        slice_name = str((obj.get("metadata") or {}).get("name") or "")
        address_type = str(obj.get("addressType") or "IPv4")
        port = _port(obj)
        for index, endpoint in enumerate(obj.get("endpoints") or ()):
            if not isinstance(endpoint, Mapping):
                continue
            ref = endpoint.get("targetRef")
            pod = ref.get("name") if isinstance(ref, Mapping) else None
            name = pod if isinstance(pod, str) and pod else f"{slice_name}-{index}"
            key = f"{namespace}/{name}"
            if key in out:
                continue
            addresses = [a for a in endpoint.get("addresses") or () if isinstance(a, str)]
            url = _url(addresses[0], address_type, port) if addresses else None
            ready = _ready(endpoint) and url is not None
            status: dict[str, Any] = {
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
            }
            if url is not None:
                status["endpoint"] = url
            out[key] = {
                "apiVersion": GROUP_VERSION,
                "kind": "Replica",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {LABEL_DEPLOYMENT: md_name},
                },
                "spec": {"model": {"name": model}},
                "status": status,
            }
    return out


def _model_of(deployment: Mapping[str, Any] | None) -> str | None:
    spec = deployment.get("spec") if deployment is not None else None
    model = spec.get("model") if isinstance(spec, Mapping) else None
    name = model.get("name") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) and name else None


class SliceDiscovery:
    """EndpointSlices and ModelDeployments into ``table`` and ``directory`` (a gateway ``Feed``)."""

    def __init__(
        self,
        *,
        api: KubeApi,
        source: ListWatch,
        table: EndpointTable,
        directory: ModelDirectory | None = None,
        namespace: str | None = None,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
        logger: logging.Logger | None = None,
    ) -> None:
        """``source`` lists and watches ModelDeployments (a ``KubeStore``); ``namespace`` confines
        both watches to one namespace (None: the whole cluster)."""
        self._api = api
        self._table = table
        self._directory = directory if directory is not None else ModelDirectory()
        self._namespace = namespace
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._watch_timeout_s = watch_timeout_s
        self._log = logger or logging.getLogger("aviator.kube.endpoints")
        self._deployments = Reflector(
            source=source,
            kind=MODEL_DEPLOYMENT,
            on_event=self._deployment_event,
            namespace=namespace,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            logger=self._log,
        )
        self._slices: dict[SliceKey, dict[str, Any]] = {}
        self._by_deployment: dict[DeploymentKey, set[SliceKey]] = {}
        self._applied: dict[DeploymentKey, dict[str, dict[str, Any]]] = {}
        """What the table holds for each deployment: Replica-shaped objects by key."""
        self._slices_listed = asyncio.Event()
        self._synced = asyncio.Event()

    @property
    def table(self) -> EndpointTable:
        return self._table

    @property
    def directory(self) -> ModelDirectory:
        return self._directory

    @property
    def synced(self) -> asyncio.Event:
        """Set once both the slices and the ModelDeployments have been listed."""
        return self._synced

    async def run(self) -> None:
        """List and watch until cancelled."""

        async def both_synced() -> None:
            await self._slices_listed.wait()
            await self._deployments.synced.wait()
            self._synced.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(self._deployments.run())
            group.create_task(self._run_slices())
            group.create_task(both_synced())

    # -- the slices' list + watch -------------------------------------------------------------

    async def _run_slices(self) -> None:
        path = resource_path(ENDPOINT_SLICES, namespace=self._namespace)
        version = ""
        failures = 0
        while True:
            try:
                if not version:
                    version = await self._relist(path)
                    failures = 0
                version = await self._watch(path, version)
            except asyncio.CancelledError:
                raise
            except errors.Gone:
                self._log.info("watch of endpointslices expired; relisting")
                version = ""
            except Exception as exc:
                failures += 1
                delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** min(failures - 1, 16))
                self._log.warning(
                    "list/watch of endpointslices failed (%s); retrying in %.2fs", exc, delay
                )
                version = ""
                await asyncio.sleep(delay)

    async def _relist(self, path: str) -> str:
        query = {"labelSelector": LABEL_DEPLOYMENT, "limit": str(LIST_PAGE)}
        items: list[dict[str, Any]] = []
        while True:
            page = await self._api.request("GET", path, verb="list", query=query)
            items.extend(i for i in page.get("items") or () if isinstance(i, dict))
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            query["continue"] = str(meta["continue"])
        before = set(self._by_deployment)
        self._slices.clear()
        self._by_deployment.clear()
        for obj in items:
            self._put_slice(obj)
        for deployment in before | set(self._by_deployment):
            self._sync(deployment)
        self._slices_listed.set()
        return str(meta.get("resourceVersion") or "") or "0"

    async def _watch(self, path: str, version: str) -> str:
        query = {
            "labelSelector": LABEL_DEPLOYMENT,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._watch_timeout_s),
            "resourceVersion": version,
        }
        async for event in self._api.watch(path, query=query):
            obj = event["object"]
            seen = (obj.get("metadata") or {}).get("resourceVersion")
            if isinstance(seen, str) and seen:
                version = seen
            type_ = event.get("type")
            if type_ in ("ADDED", "MODIFIED"):
                self.slice_event("MODIFIED", obj)
            elif type_ == "DELETED":
                self.slice_event("DELETED", obj)
        return version  # the server closed the watch: resume from here

    # -- applying events ----------------------------------------------------------------------

    def slice_event(self, type_: EventType, obj: dict[str, Any]) -> None:
        """Apply one EndpointSlice event (an ADDED is a MODIFIED of nothing)."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        old = self._slices.get(key)
        affected = {d for d in (slice_deployment(old) if old else None,) if d is not None}
        self._drop_slice(key)
        if type_ != "DELETED":
            self._put_slice(obj)
            if (mine := slice_deployment(obj)) is not None:
                affected.add(mine)
        for deployment in affected:
            self._sync(deployment)

    def _deployment_event(self, type_: EventType, obj: dict[str, Any]) -> None:
        self._directory.apply(type_, obj)
        meta = obj.get("metadata") or {}
        self._sync((str(meta.get("namespace") or ""), str(meta.get("name") or "")))

    def _put_slice(self, obj: dict[str, Any]) -> None:
        deployment = slice_deployment(obj)
        if deployment is None:
            return  # not a ModelDeployment's (a server that ignores the selector sends all)
        meta = obj["metadata"]
        key = (deployment[0], str(meta.get("name") or ""))
        self._slices[key] = obj
        self._by_deployment.setdefault(deployment, set()).add(key)

    def _drop_slice(self, key: SliceKey) -> None:
        old = self._slices.pop(key, None)
        deployment = slice_deployment(old) if old is not None else None
        if deployment is not None:
            keys = self._by_deployment.get(deployment)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_deployment[deployment]

    def _sync(self, deployment: DeploymentKey) -> None:
        """Make the table hold exactly what ``deployment``'s slices and model say now."""
        model = _model_of(self._deployments.get(deployment))
        slices = [self._slices[k] for k in self._by_deployment.get(deployment, ())]
        want = replicas_of(slices, deployment=deployment, model=model) if model else {}
        have = self._applied.get(deployment, {})
        for key, obj in have.items():
            if key not in want:
                self._apply("DELETED", key, obj)
        for key, obj in want.items():
            if have.get(key) != obj:
                self._apply("MODIFIED" if key in have else "ADDED", key, obj)
        if want:
            self._applied[deployment] = want
        else:
            self._applied.pop(deployment, None)

    def _apply(self, type_: EventType, key: str, obj: dict[str, Any]) -> None:
        before = self._table.endpoint(key)
        self._table.apply(type_, obj)
        after = self._table.endpoint(key)
        if before == after:
            return
        model = obj["spec"]["model"]["name"]
        if after is None:
            self._log.info("pod %s (model %s) is no longer routable", key, model)
        elif before is None:
            self._log.info("pod %s (model %s) is routable at %s", key, model, after.url)
        else:
            self._log.info("pod %s (model %s) moved to %s", key, model, after.url)
