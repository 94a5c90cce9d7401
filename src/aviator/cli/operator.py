"""``aviator operator``: run the Kubernetes operator (kopf) that drives ModelDeployment CRs.

Parses flags into :class:`aviator.operator.runner.OperatorOptions` and runs it until SIGTERM or
SIGINT. The install bundle (``aviator install --print``) runs it as
``aviator operator --liveness http://0.0.0.0:8081/healthz`` with two replicas that elect a
leader through a Lease in their own namespace (``AVIATOR_NAMESPACE``, identity ``POD_NAME``).

This module only parses and reports; it holds no credentials itself (kubeconfig or the Pod's
service account are read by ``kubernetes_asyncio``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import typer

from aviator.cli import stderrlog
from aviator.cli.render import parse_endpoint_picker, parse_engine_images
from aviator.k8s.render import (
    RenderError,
    RenderOptions,
    default_aviator_image,
    parse_kubernetes_version,
)

if TYPE_CHECKING:
    from aviator.operator.runner import OperatorOptions

# kopf and kubernetes_asyncio are imported when the operator runs, not with the CLI: every other
# `aviator` command would otherwise pay half a second to import them.

__all__ = ["operator"]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_FIELD_MANAGER = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.:]{0,127}")
_POOL_MODES: Mapping[str, Literal["auto", "on", "off"]] = MappingProxyType(
    {"auto": "auto", "on": "on", "off": "off"}
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def options_from_flags(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    liveness: str | None,
    field_manager: str,
    standalone: bool,
    lease_namespace: str,
    identity: str | None,
    kubeconfig: str | None,
    context: str | None,
    image: str,
    engine_images: list[str],
    endpoint_picker: str | None,
    picker_fail_open: bool,
    k8s_version: str,
    resync_s: float,
    inference_pool: str = "auto",
) -> OperatorOptions:
    """The options, or ``ValueError`` naming the flag that is wrong."""
    from aviator.operator.runner import OperatorOptions, default_identity, parse_liveness

    if namespaces and all_namespaces:
        raise ValueError("--namespace and --all-namespaces exclude each other")
    for ns in (*namespaces, lease_namespace):
        if not _DNS_LABEL.fullmatch(ns):
            raise ValueError(f"namespace {ns!r}: not a DNS label (lowercase letters, digits, '-')")
    if not _FIELD_MANAGER.fullmatch(field_manager):
        raise ValueError(f"--field-manager {field_manager!r}: letters, digits, '-_.:' (<= 128)")
    if resync_s < 0:
        raise ValueError(f"--resync must be 0 (off) or a number of seconds (got {resync_s:g})")
    if inference_pool not in _POOL_MODES:
        raise ValueError(f"--inference-pool {inference_pool!r}: expected auto, on or off")
    try:
        render = RenderOptions(
            aviator_image=image,
            engine_images=parse_engine_images(engine_images),
            endpoint_picker=parse_endpoint_picker(endpoint_picker, fail_open=picker_fail_open),
            kubernetes_version=parse_kubernetes_version(k8s_version),
        )
    except RenderError as exc:
        raise ValueError(str(exc)) from None
    return OperatorOptions(
        namespaces=tuple(dict.fromkeys(namespaces)),
        field_manager=field_manager,
        liveness=None if liveness is None else parse_liveness(liveness),
        standalone=standalone,
        lease_namespace=lease_namespace,
        identity=default_identity(identity),
        kubeconfig=kubeconfig,
        context=context,
        render=render,
        resync_s=resync_s or None,
        inference_pool=_POOL_MODES[inference_pool],
    )


async def _run_until_signalled(options: OperatorOptions) -> None:
    from aviator.operator.runner import run

    task = asyncio.ensure_future(run(options))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # kopf installs its own handlers while it leads; these cover the follower.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def operator(
    namespaces: list[str] = typer.Option(
        [], "--namespace", "-n", help="Watch this namespace (repeatable; default: all)."
    ),
    all_namespaces: bool = typer.Option(
        False, "--all-namespaces", "-A", help="Watch every namespace (the default)."
    ),
    liveness: str | None = typer.Option(
        None, "--liveness", help="Serve a liveness probe at http://HOST:PORT/PATH."
    ),
    field_manager: str = typer.Option(
        "aviator", "--field-manager", help="Field manager of the server-side applies."
    ),
    standalone: bool = typer.Option(
        False,
        "--standalone",
        help="No leader election (one replica only). Default: elect a leader through a Lease.",
    ),
    lease_namespace: str = typer.Option(
        "aviator-system",
        "--lease-namespace",
        envvar="AVIATOR_NAMESPACE",
        help="Namespace of the leader-election Lease (the operator's own).",
    ),
    identity: str | None = typer.Option(
        None, "--identity", envvar="POD_NAME", help="Lease holder identity (default: host-pid)."
    ),
    kubeconfig: str | None = typer.Option(
        None, "--kubeconfig", help="Kubeconfig (default: in-cluster, else $KUBECONFIG)."
    ),
    context: str | None = typer.Option(None, "--context", help="Kubeconfig context."),
    image: str = typer.Option(
        default_aviator_image(), "--image", help="aviator's image (runs the simulator)."
    ),
    engine_images: list[str] = typer.Option(
        [],
        "--engine-image",
        help="ENGINE[@DRIVER]=IMAGE, as `aviator render` takes it (repeatable).",
    ),
    endpoint_picker: str | None = typer.Option(
        None, "--endpoint-picker", help="SERVICE[:PORT] of a Gateway API Inference Extension EPP."
    ),
    picker_fail_open: bool = typer.Option(
        False, "--endpoint-picker-fail-open", help="Route around an unavailable endpoint picker."
    ),
    k8s_version: str = typer.Option("1.34", "--k8s-version", help="Cluster's Kubernetes version."),
    resync_s: float = typer.Option(
        300.0, "--resync", help="Re-reconcile every ModelDeployment this often, seconds (0: off)."
    ),
    inference_pool: str = typer.Option(
        "auto",
        "--inference-pool",
        help="Apply InferencePools: auto (when the cluster serves the CRD), on, or off.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the operator: ModelDeployment CRs become Deployments, Services, claims and pools."""
    try:
        options = options_from_flags(
            namespaces=namespaces,
            all_namespaces=all_namespaces,
            liveness=liveness,
            field_manager=field_manager,
            standalone=standalone,
            lease_namespace=lease_namespace,
            identity=identity,
            kubeconfig=kubeconfig,
            context=context,
            image=image,
            engine_images=engine_images,
            endpoint_picker=endpoint_picker,
            picker_fail_open=picker_fail_open,
            k8s_version=k8s_version,
            resync_s=resync_s,
            inference_pool=inference_pool,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    from aviator.kube.api import NoCredentials
    from aviator.operator.leader import LeadershipLost

    stderrlog.configure(verbose=verbose, quiet=("kubernetes_asyncio",))
    try:
        asyncio.run(_run_until_signalled(options))
    except NoCredentials as exc:
        raise _fail(str(exc)) from None
    except LeadershipLost as exc:
        # Exit non-zero so the Pod restarts as a follower: never act on stale leadership.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
