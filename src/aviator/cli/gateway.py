"""``aviator gateway``: run the OpenAI-compatible gateway as its own process.

This is the gateway's composition root: it reads the credentials, builds the Control API client,
the discovery that watches Replicas through it, the endpoint table, the policy view (Policies,
Grants, Agents, ModelDeployments through the same client), the token verifier (the plane's JWKS,
fetched from the Control API and refreshed, plus the trusted issuers of ``--identity-config``),
the audit log and the server, and runs them until SIGTERM or SIGINT. ``aviator up`` starts it the
same way, as a child process, passing on its own ``--identity-config`` so that both processes
agree on the trust domain and the issuers.

``--discovery kubernetes`` is the same gateway in a cluster (docs/kubernetes.md, "Gateway in a
cluster"): the ModelDeployments, Agents, Policies and Grants come from the aviator CRDs through
``aviator.kube.store.KubeStore``, the endpoints from the EndpointSlices of each ModelDeployment's
Service (``aviator.kube.endpoints.SliceDiscovery``), credentials from the Pod's service account or
``--kubeconfig``. There is no plane there, so no plane JWKS: agent tokens are accepted from the
trusted issuers of ``--identity-config`` only (typically the cluster's projected service-account
tokens), and ``--token-file`` optionally names an admin token.

Callers authenticate with an agent token (audience ``gateway``), the admin token, or one of the
optional ``--api-key-file`` keys. ``--insecure`` also lets callers without credentials in and
enforces no policy or budget: for benchmarks only, and said loudly.

``--workers N`` (N > 1) forks N worker processes that share the port (``SO_REUSEPORT``: the
kernel spreads incoming connections over them) and supervises them: SIGTERM or SIGINT is passed
on to every worker, and when one worker dies the others are stopped and the command exits 1, so
whoever restarts the gateway (the plane) restarts all of it. Each worker is a whole gateway with
its own watch of the Control API and its own state; see docs/gateway.md ("Performance") for what
that approximates.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from aviator.api.errors import AviatorError
from aviator.cli import stderrlog
from aviator.cli.context import CliContext
from aviator.gateway.auth import load_api_keys
from aviator.settings import GatewaySettings, IdentitySettings

log = logging.getLogger("aviator.cli.gateway")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

SHUTDOWN_GRACE_S = 3.0
"""In-flight requests get this long after SIGTERM; below the plane's 5 s before SIGKILL."""


class _ConfigError(AviatorError):
    """The command line does not say enough to start (message is shown as is)."""


def _api_keys(api_key_file: Path | None) -> list[str]:
    if api_key_file is None:
        return []
    try:
        keys = load_api_keys(api_key_file)
    except OSError as exc:
        raise _ConfigError(f"cannot read the API key file {api_key_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise _ConfigError(str(exc)) from None
    log.info("accepting %d API key(s) from %s", len(keys), api_key_file)
    return keys


def _control_api(
    cli: CliContext | None, *, control_url: str | None, token_file: Path | None
) -> tuple[str, str]:
    """The Control API URL and admin token (never logged)."""
    if control_url is None:
        if cli is None:
            raise _ConfigError("pass --control-url")
        control_url = cli.api_url()
    if token_file is not None:
        token = _read_token(token_file)
    elif cli is not None:
        token = cli.api_token()
    else:
        raise _ConfigError("pass --token-file")
    return control_url.rstrip("/"), token


class DiscoveryMode(StrEnum):
    """Where the gateway learns replicas, deployments, agents and policies."""

    CONTROL_API = "control-api"
    KUBERNETES = "kubernetes"


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise _ConfigError(f"the token file {path} is empty")
    return token


def _home(
    cli: CliContext | None,
    *,
    discovery: DiscoveryMode,
    control_url: str | None,
    token_file: Path | None,
    kube_namespace: str | None,
    kubeconfig: Path | None,
    kube_context: str | None,
) -> ControlApiHome | KubernetesHome:
    """What to watch, from the command line; ``_ConfigError`` for options of the other mode."""
    if discovery is DiscoveryMode.CONTROL_API:
        given = [
            flag
            for flag, value in (
                ("--kube-namespace", kube_namespace),
                ("--kubeconfig", kubeconfig),
                ("--kube-context", kube_context),
            )
            if value is not None
        ]
        if given:
            raise _ConfigError(f"{', '.join(given)}: only with --discovery kubernetes")
        url, token = _control_api(cli, control_url=control_url, token_file=token_file)
        return ControlApiHome(url=url, token=token)
    if control_url is not None:
        raise _ConfigError("--control-url: not with --discovery kubernetes (there is no plane)")
    if kube_namespace is not None and not _DNS_LABEL.fullmatch(kube_namespace):
        raise _ConfigError(
            f"--kube-namespace {kube_namespace!r}: not a namespace name (a DNS label: lowercase "
            "letters, digits and '-', at most 63)"
        )
    return KubernetesHome(
        namespace=kube_namespace,
        kubeconfig=kubeconfig,
        context=kube_context,
        admin_token=_read_token(token_file) if token_file is not None else None,
    )


def load_identity_config(path: Path) -> IdentitySettings:
    """The identity settings of the file ``path`` (``aviator.identity.config``), once the file and
    every JWKS file it names have been read and checked: a typo or a missing key file stops the
    start before anything runs. ``AviatorError`` says what is wrong, one problem per line."""
    from aviator.identity import config
    from aviator.identity.sources import JwksError, JwksFile

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _ConfigError(
            f"cannot read the identity configuration {path}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError:
        raise _ConfigError(f"{path}: not UTF-8 text") from None
    # Relative JWKS paths are the file's neighbours, whatever the working directory.
    parsed = config.parse(text, origin=str(path), base_dir=path.resolve().parent)
    problems = []
    for index, issuer in enumerate(parsed.trusted_issuers):
        if issuer.jwks.startswith(("https://", "http://")):
            continue  # fetched at start and retried in the background: a network blip is no typo
        try:
            JwksFile(Path(issuer.jwks)).load()
        except JwksError as exc:
            problems.append(f"{path}: trustedIssuers[{index}].jwks: {exc}")
    if problems:
        raise _ConfigError("\n".join(problems))
    return parsed.apply(IdentitySettings())


_SERVER_STACK = (
    "aviator.api.agent",
    "aviator.cache",
    "aviator.client",
    "aviator.gateway.app",
    "aviator.gateway.auth",
    "aviator.gateway.discovery",
    "aviator.gateway.endpoints",
    "aviator.gateway.governance",
    "aviator.gateway.models",
    "aviator.governance.view",
    "aviator.identity",
    "aviator.identity.sources",
    "aviator.identity.verify",
    "prometheus_client",
)
"""What ``_run`` imports to serve with ``--discovery control-api``."""


def _control_url_from_stdin(given: str | None) -> str:
    """The Control API URL, from the first line of stdin (``--control-url-from-stdin``).

    ``aviator up`` starts its gateway this way before its own Control API listens, and writes
    the URL once it does: the server stack, most of the gateway's start, is imported first, so
    that the two processes start side by side.
    """
    if given is not None:
        raise _ConfigError("--control-url: not with --control-url-from-stdin")
    for module in _SERVER_STACK:
        importlib.import_module(module)
    url = sys.stdin.readline().strip()
    if not url:
        raise _ConfigError("--control-url-from-stdin: stdin ended before a URL")
    return url


PARENT_CHECK_S = 0.5
"""How often ``--exit-with-parent`` looks whether the process that started the gateway is gone."""


async def _exit_with_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:  # re-parented: the plane died without stopping us
            log.warning("the process that started the gateway (pid %d) is gone; stopping", parent)
            stop.set()


@dataclass(frozen=True, slots=True)
class ControlApiHome:
    """The embedded plane: state and the plane's JWKS from its Control API."""

    url: str
    token: str
    """The Control API admin token (never logged); also accepted as the gateway's admin."""


@dataclass(frozen=True, slots=True)
class KubernetesHome:
    """A cluster: the aviator CRDs and EndpointSlices from the API server."""

    namespace: str | None
    """Watch only this namespace (None: the whole cluster)."""
    kubeconfig: Path | None
    """None: the Pod's service account in a cluster, else the default kubeconfig."""
    context: str | None
    admin_token: str | None
    """An admin token callers may present (``--token-file``), or None for no admin."""


async def _run(
    settings: GatewaySettings,
    *,
    home: ControlApiHome | KubernetesHome,
    identity: IdentitySettings,
    api_keys: list[str],
    insecure: bool,
    audit_file: Path | None,
    exit_with_parent: bool,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    on_serving: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, or until ``stop`` is set when one is given (then no signal
    handler is installed). ``on_serving`` is called with the bound URL once listening."""
    handle_signals = stop is None
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    # Imported here, not at the top: every other CLI command would pay for the server stack.
    from aviator.api.agent import DEFAULT_AUDIENCE
    from aviator.cache import ListWatch
    from aviator.gateway.app import Gateway, GatewayServer
    from aviator.gateway.auth import Credentials
    from aviator.gateway.discovery import Discovery, Feed
    from aviator.gateway.endpoints import EndpointTable
    from aviator.gateway.governance import Governance
    from aviator.gateway.models import ModelDirectory
    from aviator.governance.view import PolicyView
    from aviator.identity import JWKS_PATH
    from aviator.identity.sources import JwksError, JwksUrl, TrustedIssuers
    from aviator.identity.verify import Issuer, TokenVerifier, plane_issuer

    # First: the one constructor here that may refuse (settings checked when the file was read).
    trusted = TrustedIssuers(identity.trusted_issuers)
    orphan_watch = asyncio.create_task(_exit_with_parent(stop)) if exit_with_parent else None
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        # Before serving, not in the background: a JWKS file gone since the command line was
        # checked must stop the start, as it stops the plane's. URLs are retried by their tasks.
        await trusted.start()
        table = EndpointTable()
        issuers: list[Issuer] = []
        background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        feed: Feed
        directory: ModelDirectory
        source: ListWatch
        if isinstance(home, ControlApiHome):
            from aviator.client import Client

            client = Client(home.url, token=home.token)
            closers.append(client.aclose)
            jwks = JwksUrl(home.url + JWKS_PATH)
            closers.append(jwks.aclose)
            discovery = Discovery(source=client, table=table)
            feed, directory, source = discovery, discovery.directory, client
            issuers.append(
                plane_issuer(
                    identity,
                    keys=jwks,
                    audience=DEFAULT_AUDIENCE,
                    on_unknown_key=jwks.request_refresh,
                )
            )

            async def keep_keys() -> None:
                try:
                    await jwks.refresh()
                except JwksError as exc:  # retried by run(), with backoff
                    log.warning("%s; agent tokens are refused until the keys are fetched", exc)
                await jwks.run()

            background.append(keep_keys)
            admin_token: str | None = home.token
            where = home.url
            watched = "replicas, model deployments and policies"
        else:
            from aviator.kube.api import KubeApi, load_configuration
            from aviator.kube.endpoints import SliceDiscovery
            from aviator.kube.store import KubeStore

            configuration = await load_configuration(
                kubeconfig=home.kubeconfig, context=home.context, environ=os.environ
            )
            api = KubeApi(configuration)
            closers.append(api.aclose)
            store = KubeStore(api=api, namespace=home.namespace)
            slices = SliceDiscovery(api=api, source=store, table=table, namespace=home.namespace)
            feed, directory, source = slices, slices.directory, store
            admin_token = home.admin_token
            scope = f"namespace {home.namespace}" if home.namespace else "all namespaces"
            where = f"{api.host} ({scope})"
            watched = "endpoint slices, model deployments and policies"
            if not identity.trusted_issuers:
                log.warning(
                    "no trusted issuers (--identity-config): in a cluster the plane's keys are not "
                    "there, so agent tokens are refused; only API keys%s get in",
                    " and the admin token" if admin_token else "",
                )
        view = PolicyView(source=source)
        issuers.extend(trusted.issuers)
        verifier = TokenVerifier(
            issuers=issuers,
            trust_domain=identity.trust_domain,
            leeway_s=identity.leeway_s,
            cache_size=identity.cache_size,
            # The same rule as the Control API's: a token of a deleted Agent authenticates no one.
            agents=view.agents,
        )
        if identity.trusted_issuers:
            log.info(
                "trusting tokens of %s%s (trust domain %s)",
                ", ".join(repr(i.issuer) for i in identity.trusted_issuers),
                " besides the plane's" if isinstance(home, ControlApiHome) else "",
                identity.trust_domain,
            )
        if insecure:
            log.warning(
                "INSECURE (--insecure): callers without credentials are let in, and no policy "
                "or budget is enforced; anyone who can reach the port may use every model"
            )
        if audit_file is None:
            log.warning("no --audit-file: the gateway's decisions are not audited")
        log.info("watching %s at %s", watched, where)
        gateway = Gateway(
            settings=settings,
            table=table,
            feed=feed,
            authenticator=Credentials(
                admin_token=admin_token, api_keys=api_keys, verifier=verifier, insecure=insecure
            ),
            governance=Governance(view=view, insecure=insecure, audit_path=audit_file),
            directory=directory,
            background=background,
        )
        server = GatewayServer(gateway, shutdown_grace_s=SHUTDOWN_GRACE_S, reuse_port=reuse_port)
        await server.start()
        try:
            if on_serving is not None:
                on_serving(server.url)
            await stop.wait()
        finally:
            await server.stop()
        log.info("gateway stopped")
    finally:
        if orphan_watch is not None:
            orphan_watch.cancel()
        await trusted.aclose()
        for close in reversed(closers):
            await close()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _supervise_workers(count: int, *, serve: Callable[[], int], exit_with_parent: bool) -> int:
    """Fork ``count`` workers that each run ``serve()`` (its return is their exit code); wait.

    Returns 0 when every worker stopped after SIGTERM/SIGINT, 1 when one died on its own (the
    rest are then stopped too).
    """
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    pids: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                code = serve()
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    log.info("gateway: %d workers started (pids %s)", count, " ".join(map(str, pids)))
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    parent = os.getppid()
    code = 0
    try:
        alive = set(pids)
        signalled = False
        while alive:
            if exit_with_parent and os.getppid() != parent:
                log.warning("the process that started the gateway is gone; stopping")
                stopping = True
            if stopping and not signalled:
                signalled = True
                for pid in alive:
                    _signal(pid, signal.SIGTERM)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.1)
                continue
            alive.discard(pid)
            if not stopping:
                log.error(
                    "gateway worker %d exited (%s); stopping the others",
                    pid,
                    _exit_status(status),
                )
                code = 1
                stopping = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _exit_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"code {os.waitstatus_to_exitcode(status)}"


def gateway(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (loopback by default)."
    ),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0 picks a free one)."),
    control_url: str | None = typer.Option(
        None,
        "--control-url",
        help="Control API to watch Replicas from, e.g. http://127.0.0.1:8081 "
        "(default: --server, or the running plane of --data-dir).",
        show_default=False,
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="File holding the Control API admin token used for the watch "
        "(default: --token, or <data-dir>/admin.token). With --discovery kubernetes: an admin "
        "token callers may present (optional; without it there is no admin).",
        show_default=False,
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="File of API keys clients may send as 'Authorization: Bearer KEY', one per line "
        "('#' starts a comment); each key is a principal of its own, subject to policy. "
        "Agent tokens and the admin token are accepted without it.",
        show_default=False,
    ),
    audit_file: Path | None = typer.Option(
        None,
        "--audit-file",
        help="Audit log (SQLite) to append every decision to; aviator up passes "
        "<data-dir>/audit.db. Without it nothing is audited.",
        show_default=False,
    ),
    identity_config: Path | None = typer.Option(
        None,
        "--identity-config",
        metavar="FILE",
        help="Identity configuration (YAML or JSON): the trust domain and the trusted issuers "
        "whose tokens count as an agent's (see docs/governance.md, 'Trusted issuers'). Must be "
        "the plane's; aviator up passes its own.",
        show_default=False,
    ),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        help="Let callers without credentials in, and enforce no policy or budget. "
        "For benchmarks only.",
    ),
    exit_with_parent: bool = typer.Option(
        False,
        "--exit-with-parent",
        help="Stop when the process that started the gateway exits (aviator up uses this).",
        hidden=True,
    ),
    control_url_from_stdin: bool = typer.Option(
        False,
        "--control-url-from-stdin",
        help="Import the server stack, then read the Control API URL from stdin's first line "
        "(aviator up starts its gateway this way, before its Control API listens).",
        hidden=True,
    ),
    reuse_port: bool = typer.Option(
        False,
        "--reuse-port",
        help="Bind with SO_REUSEPORT: share a port a supervisor holds for it (aviator up "
        "reserves its gateway's port this way, so that nothing else takes it meanwhile).",
        hidden=True,
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Gateway processes sharing the port (SO_REUSEPORT), each with its own watch and "
        "state (in-flight counts, prefix index, queues, breakers and metrics are per worker).",
    ),
    discovery: DiscoveryMode = typer.Option(
        DiscoveryMode.CONTROL_API,
        "--discovery",
        help="Where state comes from: 'control-api' (the plane's Control API: Replicas, "
        "ModelDeployments, policies, the plane's agent keys) or 'kubernetes' (the aviator CRDs and "
        "the EndpointSlices of each ModelDeployment's Service; agent tokens of --identity-config's "
        "trusted issuers only).",
    ),
    kube_namespace: str | None = typer.Option(
        None,
        "--kube-namespace",
        metavar="NS",
        help="With --discovery kubernetes: watch only this namespace (default: all namespaces).",
        show_default=False,
    ),
    kubeconfig: Path | None = typer.Option(
        None,
        "--kubeconfig",
        metavar="FILE",
        help="With --discovery kubernetes: the kubeconfig to use (default: the Pod's service "
        "account in a cluster, else ~/.kube/config).",
        show_default=False,
    ),
    kube_context: str | None = typer.Option(
        None,
        "--kube-context",
        help="With --discovery kubernetes: the kubeconfig context (default: its current one).",
        show_default=False,
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the OpenAI-compatible gateway: it watches Replicas and routes requests to them.

    With --discovery kubernetes it runs in a cluster instead: endpoints from the EndpointSlices of
    each ModelDeployment's Service, agents and policies from the aviator CRDs, agent tokens from
    the trusted issuers of --identity-config (e.g. projected service-account tokens).

    Clients call POST /v1/chat/completions, /v1/completions or /v1/embeddings with a model served
    by a ready Replica, authenticated by an agent token (aviator token issue agent/NAME), and
    within the policies and the agent's budgets; GET /v1/models lists the models, /health answers
    200 once the replicas and policies are loaded, /metrics is for Prometheus. SIGTERM or Ctrl-C
    stops it after a short grace for requests in flight.
    """
    stderrlog.configure(verbose=verbose, quiet=("httpx", "httpcore", "kubernetes_asyncio"))
    cli: CliContext | None = ctx.obj if isinstance(ctx.obj, CliContext) else None
    try:
        api_keys = _api_keys(api_key_file)
        if control_url_from_stdin:
            control_url = _control_url_from_stdin(control_url)
        home = _home(
            cli,
            discovery=discovery,
            control_url=control_url,
            token_file=token_file,
            kube_namespace=kube_namespace,
            kubeconfig=kubeconfig,
            kube_context=kube_context,
        )
        identity = (
            load_identity_config(identity_config)
            if identity_config is not None
            else IdentitySettings()
        )
    except AviatorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from prometheus_client import disable_created_metrics

    # Process-wide (this process owns it): no *_created series.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    settings = replace(GatewaySettings(), host=host, port=port)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    else:
        runner = uvloop.run

    def serve(settings: GatewaySettings, *, reuse_port: bool, exit_with_parent: bool) -> int:
        from aviator.identity.sources import JwksError

        try:
            runner(
                _run(
                    settings,
                    home=home,
                    identity=identity,
                    api_keys=api_keys,
                    insecure=insecure,
                    audit_file=audit_file,
                    exit_with_parent=exit_with_parent,
                    reuse_port=reuse_port,
                )
            )
        except OSError as exc:
            typer.echo(f"error: cannot serve on {host}:{port}: {exc.strerror or exc}", err=True)
            return 1
        except JwksError as exc:  # a key file broken since it was checked
            typer.echo(f"error: {exc}", err=True)
            return 2
        except AviatorError as exc:  # no Kubernetes credentials
            typer.echo(f"error: {exc}", err=True)
            return 2
        return 0

    if workers == 1:
        code = serve(settings, reuse_port=reuse_port, exit_with_parent=exit_with_parent)
        raise typer.Exit(code)
    try:
        from aviator.runtime.processes import reserve_port

        reserved = reserve_port(host, port)
    except OSError as exc:
        typer.echo(f"error: cannot serve on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    shared = replace(settings, port=reserved.getsockname()[1])

    def worker() -> int:
        reserved.close()
        # A worker stops with its supervisor, even one killed with -9.
        return serve(shared, reuse_port=True, exit_with_parent=True)

    try:
        code = _supervise_workers(workers, serve=worker, exit_with_parent=exit_with_parent)
    finally:
        reserved.close()
    raise typer.Exit(code)
