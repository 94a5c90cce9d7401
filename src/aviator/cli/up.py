"""``aviator up``: run the embedded plane in the foreground until Ctrl-C or SIGTERM.

With ``--apply``, once the manifests are applied and their deployments Available, it prints a
fresh gateway token for every Agent among them (a credential, printed because that is what the
quickstart is for: one copy-paste away from a first request) with the command that mints another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aviator.api import errors, kinds
from aviator.api.agent import DEFAULT_AUDIENCE
from aviator.api.meta import find_condition
from aviator.api.modeldeployment import ModelDeployment
from aviator.cli import manifests
from aviator.cli.context import DEFAULT_DATA_DIR, CliContext
from aviator.cli.gateway import load_identity_config
from aviator.client import Client, object_path
from aviator.plane.datadir import read_secret
from aviator.settings import Settings

if TYPE_CHECKING:
    from aviator.plane.plane import Endpoints, Plane

log = logging.getLogger("aviator.cli.up")


def _configure_logging(*, log_file: Path, verbose: bool) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(fmt)
    to_file.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.handlers[:] = [console, to_file]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class AgentToken:
    """A gateway token just issued for an applied Agent."""

    namespace: str
    name: str
    token: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class Applied:
    served: list[ModelDeployment]
    tokens: list[AgentToken]


async def _agent_tokens(client: Client, documents: list[manifests.Document]) -> list[AgentToken]:
    """A gateway token for each applied Agent whose audiences include the gateway."""
    issued = []
    for doc in documents:
        if doc.kind is not kinds.AGENT:
            continue
        audiences = (doc.body.get("spec") or {}).get("audiences") or [DEFAULT_AUDIENCE]
        if DEFAULT_AUDIENCE not in audiences:
            continue
        namespace = doc.namespace or "default"
        path = object_path(kinds.AGENT, namespace, doc.name) + "/token"
        result = await client.request("POST", path, json={"audience": DEFAULT_AUDIENCE})
        issued.append(
            AgentToken(namespace, doc.name, str(result["token"]), str(result["expiresAt"]))
        )
    return issued


async def _apply_and_wait(
    endpoints: Endpoints, *, token: str, documents: list[manifests.Document], timeout: float
) -> Applied:
    """Apply ``documents``, wait until every ModelDeployment among them is Available; return them
    and a gateway token for each applied Agent."""
    async with Client(endpoints.api_url, token=token) as client:
        results = await manifests.apply(client, documents, default_namespace="default")
        for outcome in results.outcomes:
            typer.echo(outcome.line, err=not outcome.ok)
        if results.failed:
            raise errors.Invalid(f"{results.failed} object(s) could not be applied")
        waiting = [d for d in documents if d.kind is kinds.MODEL_DEPLOYMENT]
        deadline = time.monotonic() + timeout
        available: list[ModelDeployment] = []
        for doc in waiting:
            name, namespace = doc.name, doc.namespace or "default"
            started = time.monotonic()
            while True:
                md = ModelDeployment.from_raw(
                    await client.get(kinds.MODEL_DEPLOYMENT, name, namespace=namespace)
                )
                cond = find_condition(md.status.conditions, "Available")
                fresh = (md.status.observed_generation or 0) >= (md.metadata.generation or 0)
                if cond is not None and cond.status == "True" and fresh:
                    typer.echo(
                        f"modeldeployment.aviator.dev/{name} is Available "
                        f"({md.status.ready_replicas} ready, {time.monotonic() - started:.2f}s)"
                    )
                    break
                if time.monotonic() > deadline:
                    reason = f"{cond.reason}: {cond.message}" if cond else "no status yet"
                    raise TimeoutError(
                        f"modeldeployment {namespace}/{name} not Available after {timeout:.0f}s ({reason})"
                    )
                await asyncio.sleep(0.05)
            available.append(md)
        tokens = await _agent_tokens(client, documents)
    return Applied(available, tokens)


def _inventory(documents: list[manifests.Document]) -> list[dict[str, Any]]:
    """The Node objects of an inventory file; anything else in it is a mistake worth stopping for."""
    others = [d.ref for d in documents if d.kind is not kinds.NODE]
    if others:
        raise manifests.ManifestError(
            [f"an inventory holds only Node objects; found {', '.join(others)}"]
        )
    return [d.body for d in documents]


def _command_name() -> str:
    """How the user can call this CLI again: ``aviator`` when that is on PATH, else its path."""
    here = Path(sys.argv[0])
    on_path = shutil.which("aviator")
    if on_path is not None and Path(on_path).resolve() == here.resolve():
        return "aviator"
    with contextlib.suppress(ValueError):
        return str(here.resolve().relative_to(Path.cwd()))
    return str(here)


def _banner(
    plane: Plane,
    endpoints: Endpoints,
    served: list[ModelDeployment],
    tokens: list[AgentToken] | None = None,
) -> str:
    cli = _command_name()
    if plane.data_dir.root != DEFAULT_DATA_DIR:
        cli += f" --data-dir {plane.data_dir.root}"
    data_dir = plane.data_dir
    lines = [
        "",
        "aviator is up.",
        f"  Control API  {endpoints.api_url}   (admin token: {data_dir.admin_token})",
    ]
    tokens = tokens or []
    if endpoints.gateway_url:
        lines.append(f"  Gateway      {endpoints.gateway_url}   (agent tokens, audience gateway)")
    for md in served:
        lines.append(f"  Deployment   {md.namespace}/{md.name} serving {md.spec.model.name}")
    for issued in tokens:
        lines += [
            f"  Agent        {issued.namespace}/{issued.name}   token valid until {issued.expires_at}:",
            f"               {issued.token}",
        ]
    if endpoints.gateway_url:
        model = served[0].spec.model.name if served else "MODEL"
        first = tokens[0] if tokens else None
        agent_flag = (
            "" if first is None or first.namespace == "default" else f" -n {first.namespace}"
        )
        agent_name = first.name if first is not None else "NAME"
        lines += ["", "Try it:"]
        if first is not None:
            lines.append(f"  export AGENT_TOKEN={first.token}")
        else:
            lines.append(f"  export AGENT_TOKEN=$({cli} token issue agent/NAME)")
        lines += [
            f"  curl -s {endpoints.gateway_url}/v1/chat/completions \\",
            '    -H "Authorization: Bearer $AGENT_TOKEN" \\',
            "    -H 'Content-Type: application/json' \\",
            f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'',
            "",
            f"  Tokens expire; mint a fresh one: {cli} token issue agent/{agent_name}{agent_flag}",
            "",
            f"  {cli} get md",
            f"  {cli} get rep -o wide",
            f"  {cli} describe md {served[0].name if served else 'NAME'}",
        ]
    lines += ["", "Press Ctrl-C to stop (every engine process is stopped with the plane).", ""]
    return "\n".join(lines)


async def _run(
    settings: Settings,
    *,
    documents: list[manifests.Document],
    inventory: list[dict[str, Any]] | None,
    wait_timeout: float,
    run_gateway: bool,
    identity_config: Path | None = None,
) -> int:
    # Imported here, not at the top: every other CLI command would pay for the whole plane.
    from aviator.plane.plane import Plane

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    plane = Plane(
        settings=settings,
        run_gateway=run_gateway,
        inventory=inventory,
        identity_config=identity_config,
    )
    try:
        typer.echo(f"Starting aviator plane (data directory {settings.data_dir}) ...", err=True)
        endpoints = await plane.start()
        applied = Applied([], [])
        if documents:
            token = read_secret(plane.data_dir.admin_token)
            applied = await _apply_and_wait(
                endpoints, token=token, documents=documents, timeout=wait_timeout
            )
        typer.echo(_banner(plane, endpoints, applied.served, applied.tokens))
        await stop.wait()
        typer.echo("Stopping aviator plane ...", err=True)
        return 0
    except (errors.AviatorError, TimeoutError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    finally:
        with contextlib.suppress(Exception):
            await plane.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def up(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Data directory (database, tokens, logs); same as the global --data-dir. "
        "[default: .aviator]",
        show_default=False,
    ),
    api_port: int = typer.Option(8081, "--api-port", help="Control API port (0 picks a free one)."),
    gateway_port: int = typer.Option(
        8080, "--gateway-port", help="Gateway port (0 picks a free one)."
    ),
    api_host: str = typer.Option(
        "127.0.0.1", "--api-host", help="Control API bind address (loopback by default)."
    ),
    gateway_host: str = typer.Option("127.0.0.1", "--gateway-host", help="Gateway bind address."),
    apply: list[Path] = typer.Option(
        [],
        "--apply",
        "-f",
        metavar="FILE",
        help="Manifests to apply once the plane is up (waits until Available).",
    ),
    inventory: Path | None = typer.Option(
        None,
        "--inventory",
        metavar="FILE",
        help="Nodes to plan on (e.g. examples/inventory-mixed.yaml) instead of discovering this machine.",
    ),
    wait_timeout: float = typer.Option(
        60.0, "--wait-timeout", help="Seconds to wait for applied deployments."
    ),
    identity_config: Path | None = typer.Option(
        None,
        "--identity-config",
        metavar="FILE",
        help="Identity configuration (YAML or JSON): the trust domain and the trusted issuers "
        "(a company IdP, Kubernetes service accounts) whose tokens count as an agent's; the "
        "gateway gets the same file. See docs/governance.md, 'Trusted issuers'.",
        show_default=False,
    ),
    no_gateway: bool = typer.Option(False, "--no-gateway", help="Run without the gateway process."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the aviator plane in the foreground: Control API, controllers, engines and gateway.

    Ctrl-C or SIGTERM stops it cleanly: every engine process it started is stopped.
    """
    cli: CliContext = ctx.obj
    base = Settings(data_dir=data_dir or cli.data_dir)
    settings = replace(
        base,
        api=replace(base.api, host=api_host, port=api_port),
        gateway=replace(base.gateway, host=gateway_host, port=gateway_port),
    )
    try:
        # Parse manifests before anything starts: a typo should not cost a plane start-up.
        documents = manifests.load(apply) if apply else []
        fleet = _inventory(manifests.load([inventory])) if inventory is not None else None
    except manifests.ManifestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if identity_config is not None:
        try:  # checked before anything starts
            identity = load_identity_config(identity_config)
        except errors.AviatorError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        settings = replace(settings, identity=identity)
        identity_config = identity_config.resolve()  # the gateway finds it from anywhere
    _configure_logging(log_file=settings.data_dir / "logs" / "plane.log", verbose=verbose)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    else:
        runner = uvloop.run
    code = runner(
        _run(
            settings,
            documents=documents,
            inventory=fleet,
            wait_timeout=wait_timeout,
            run_gateway=not no_gateway,
            identity_config=identity_config,
        )
    )
    raise typer.Exit(code)
