"""The operator process: connect to the cluster, hold the leader Lease, run kopf, answer probes.

Composition root of ``aviator operator`` (the CLI only parses flags into
:class:`OperatorOptions`): one ``kubernetes_asyncio`` configuration, loaded by
:func:`aviator.kube.api.load_configuration`, feeds both the reconciler's client (the one
:class:`aviator.kube.api.KubeApi`) and kopf's login (:func:`connection_info`), so both act as
the same identity (the Pod's service account in a cluster, the kubeconfig's user outside).
Unless ``standalone``, kopf and the Grant expiry controller (:mod:`aviator.operator.grants`) run
only while this replica holds the Lease (:mod:`aviator.operator.leader`); kopf's own peering is
off.

The liveness endpoint answers 200 while the event loop turns and, on the leader, while the
Lease is renewed in time; a follower is alive as long as it keeps trying. This module MUST NOT
hold credentials itself (``kubernetes_asyncio`` reads them) or log them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web
from kubernetes_asyncio import client as kclient

from aviator.k8s.render import RenderOptions
from aviator.kube.api import KubeApi, NoCredentials, load_configuration
from aviator.operator.grants import expire_grants
from aviator.operator.handlers import build_registry, build_settings
from aviator.operator.leader import LeaderElector
from aviator.operator.objects import ObjectApi
from aviator.operator.reconciler import PoolMode, Reconciler

__all__ = [
    "LivenessAddress",
    "OperatorOptions",
    "connection_info",
    "default_identity",
    "parse_liveness",
    "run",
]

log = logging.getLogger("aviator.operator")


@dataclass(frozen=True, slots=True)
class LivenessAddress:
    host: str
    port: int
    path: str


def parse_liveness(url: str) -> LivenessAddress:
    """``http://HOST:PORT/PATH`` (kopf's ``--liveness`` form); ``ValueError`` names the problem."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"--liveness {url!r}: expected http://HOST:PORT/PATH")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or not 1 <= port <= 65535:
        raise ValueError(f"--liveness {url!r}: expected http://HOST:PORT/PATH with a port")
    return LivenessAddress(host=parts.hostname, port=port, path=parts.path or "/")


def default_identity(pod_name: str | None) -> str:
    """Who holds the Lease: the Pod's name in a cluster, host and pid elsewhere."""
    return pod_name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty for all."""
    field_manager: str = "aviator"
    liveness: LivenessAddress | None = None
    standalone: bool = False
    """No leader election: for a single replica (or a developer's machine)."""
    lease_namespace: str = "aviator-system"
    lease_name: str = "aviator-operator"
    identity: str = ""
    kubeconfig: str | None = None
    context: str | None = None
    render: RenderOptions = field(default_factory=RenderOptions)
    inference_pool: PoolMode = "auto"
    """Apply the InferencePool when the cluster serves its type (auto), always (on), or never."""
    resync_s: float | None = 300.0
    lease_duration_s: int = 15
    lease_retry_s: float = 2.0


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
        raise NoCredentials("the Kubernetes configuration names no API server")
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


async def _serve_liveness(
    address: LivenessAddress, healthy: Callable[[], bool]
) -> Callable[[], Awaitable[None]]:
    async def probe(_: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get(address.path, probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address.host, address.port).start()
    log.info("liveness on http://%s:%d%s", address.host, address.port, address.path)
    return runner.cleanup


async def run(options: OperatorOptions) -> None:
    """Run until cancelled (or, when electing, until leadership is lost: ``LeadershipLost``)."""
    configuration = await load_configuration(
        kubeconfig=Path(options.kubeconfig) if options.kubeconfig is not None else None,
        context=options.context,
        environ=os.environ,
    )
    async with KubeApi(configuration) as kube:
        api = ObjectApi(kube=kube)
        reconciler = Reconciler(
            api=api,
            field_manager=options.field_manager,
            render_options=options.render,
            inference_pool=options.inference_pool,
        )

        async def login() -> kopf.ConnectionInfo:
            return await connection_info(configuration)

        registry = build_registry(reconciler=reconciler, login=login, resync_s=options.resync_s)

        async def operate() -> None:
            # The leader's work: kopf for ModelDeployments, and the plane's Grant expiry
            # controller (one writer of Grant status per cluster, like every controller).
            grants = asyncio.create_task(
                expire_grants(kube=kube, namespaces=options.namespaces), name="grant expiry"
            )
            try:
                await kopf.operator(
                    registry=registry,
                    settings=build_settings(),
                    standalone=True,  # leadership is the Lease's business, not kopf's peering
                    clusterwide=not options.namespaces,
                    namespaces=list(options.namespaces),
                )
            finally:
                grants.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await grants

        elector = (
            None
            if options.standalone
            else LeaderElector(
                api=api,
                namespace=options.lease_namespace,
                name=options.lease_name,
                identity=options.identity or default_identity(None),
                duration_s=options.lease_duration_s,
                retry_s=options.lease_retry_s,
            )
        )

        def healthy() -> bool:
            if elector is None or not elector.leading:
                return True
            contact = elector.last_contact
            return contact is not None and time.monotonic() - contact < options.lease_duration_s

        stop_liveness = (
            None if options.liveness is None else await _serve_liveness(options.liveness, healthy)
        )
        try:
            if elector is None:
                await operate()
            else:
                await elector.run(operate)
        finally:
            if stop_liveness is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stop_liveness())
