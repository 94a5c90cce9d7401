"""Entry point of the ``aviator`` command: global options and command registration.

Commands are registered lazily. The parser knows each command by a light description (its name,
the module that implements it and the line ``aviator --help`` lists for it) and imports that
module only when the command is chosen: ``aviator gateway`` (which the plane starts for every
``aviator up``) and ``aviator get`` do not import the plane, the printers or the installers of
every other command. ``tests/unit/cli/test_main.py`` holds the lazy table equal to the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer import _click as click
from typer.core import MarkupMode, TyperCommand, TyperGroup
from typer.models import TyperInfo

from aviator import __version__
from aviator.cli.context import DEFAULT_DATA_DIR, CliContext

__all__ = ["COMMANDS", "LazyCommand", "app", "load_commands", "main", "register_all"]


def _up(app: typer.Typer) -> None:
    from aviator.cli import up

    app.command("up")(up.up)


def _resources(app: typer.Typer) -> None:
    from aviator.cli import resources

    resources.register(app)


def _sim(app: typer.Typer) -> None:
    from aviator.cli import sim

    app.command("sim", help="Run the built-in vLLM-compatible inference simulator.")(sim.sim)


def _gateway(app: typer.Typer) -> None:
    from aviator.cli import gateway

    app.command(
        "gateway", help="Run the OpenAI-compatible gateway (aviator up starts one for you)."
    )(gateway.gateway)


def _portability(app: typer.Typer) -> None:
    from aviator.cli import portability

    app.command("portability", help=portability.portability.__doc__)(portability.portability)


def _top(app: typer.Typer) -> None:
    from aviator.cli import top

    app.command("top")(top.top)


def _install(app: typer.Typer) -> None:
    from aviator.cli import install

    app.command("install")(install.install)


def _render(app: typer.Typer) -> None:
    from aviator.cli import render

    app.command("render")(render.render_command)


def _operator(app: typer.Typer) -> None:
    from aviator.cli import operator

    app.command("operator")(operator.operator)


def _audit(app: typer.Typer) -> None:
    from aviator.cli import audit

    app.add_typer(audit.app, name="audit")


def _identity(app: typer.Typer) -> None:
    from aviator.cli import identity

    identity.register(app)


def _grant(app: typer.Typer) -> None:
    from aviator.cli import grant

    grant.register(app)


Registrar = Callable[[typer.Typer], None]


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A command as the parser knows it before its module is imported."""

    name: str
    register: Registrar
    """Adds the command (and the others of its module) to a Typer app, importing the module."""
    summary: str
    """The first paragraph of the command's help: what ``aviator --help`` lists."""


COMMANDS: tuple[LazyCommand, ...] = (
    # The order of `aviator --help`: single commands first, then groups (as Typer lists them).
    LazyCommand(
        "up",
        _up,
        "Run the aviator plane in the foreground: Control API, controllers, engines and gateway.",
    ),
    LazyCommand(
        "apply",
        _resources,
        "Create or update the objects in manifests (multi-document YAML or JSON).",
    ),
    LazyCommand("get", _resources, "List objects of a kind, or show named ones."),
    LazyCommand(
        "describe",
        _resources,
        "Show an object in detail: metadata, spec, status, conditions, and related objects.",
    ),
    LazyCommand(
        "delete",
        _resources,
        "Delete objects by name or from manifests, and wait until they are gone.",
    ),
    LazyCommand("wait", _resources, "Wait until objects have a condition, or are deleted."),
    LazyCommand("logs", _resources, "Print a replica's log from this machine's data directory."),
    LazyCommand("sim", _sim, "Run the built-in vLLM-compatible inference simulator."),
    LazyCommand(
        "gateway", _gateway, "Run the OpenAI-compatible gateway (aviator up starts one for you)."
    ),
    LazyCommand(
        "portability",
        _portability,
        "Where each deployment could run, and how concentrated the fleet is by vendor.",
    ),
    LazyCommand(
        "top",
        _top,
        "Show the Ready replicas with their engines' load, cache hits, TTFT and throughput, live.",
    ),
    LazyCommand(
        "install",
        _install,
        "Print CRDs, namespace, service accounts, RBAC, the operator and the gateway.",
    ),
    LazyCommand(
        "render",
        _render,
        "Print what the operator would apply for each ModelDeployment (no cluster needed).",
    ),
    LazyCommand(
        "operator",
        _operator,
        "Run the operator: ModelDeployment CRs become Deployments, Services, claims and pools.",
    ),
    LazyCommand(
        "audit",
        _audit,
        "Read and verify the audit log (every admit/refuse decision, hash-chained).",
    ),
    LazyCommand("token", _identity, "Issue agent tokens (JWT-SVIDs signed by the plane)."),
    LazyCommand("keys", _identity, "The plane's token-signing keys: list and rotate."),
    LazyCommand(
        "grant",
        _grant,
        "Just-in-time grants: request rights for an agent, approve, deny, revoke, list.",
    ),
)
"""Every command of ``aviator``, in the order of ``aviator --help``."""


def register_all(app: typer.Typer) -> None:
    """Register every command on ``app`` eagerly (what the lazy group does one module at a time)."""
    done: set[Registrar] = set()
    for command in COMMANDS:
        if command.register not in done:
            done.add(command.register)
            command.register(app)


def load_commands(
    register: Registrar, *, rich_markup_mode: MarkupMode, suggest_commands: bool
) -> dict[str, click.Command]:
    """The click commands ``register`` adds, built as Typer builds a group's commands."""
    scratch = typer.Typer()
    register(scratch)
    group = typer.main.get_group_from_info(
        TyperInfo(scratch),
        pretty_exceptions_short=app.pretty_exceptions_short,
        suggest_commands=suggest_commands,
        rich_markup_mode=rich_markup_mode,
    )
    return dict(group.commands)


class LazyGroup(TyperGroup):
    """The ``aviator`` group: lists ``COMMANDS`` from their summaries, imports one when chosen.

    Until a command is resolved, ``commands`` holds a stand-in with its name and summary (enough
    for the help listing, shell completion and "did you mean"); resolving swaps in the real one.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._lazy = {command.name: command for command in COMMANDS}
        for command in COMMANDS:
            self.commands.setdefault(command.name, TyperCommand(command.name, help=command.summary))

    def _load(self, name: str) -> None:
        lazy = self._lazy.pop(name, None)
        if lazy is None:
            return
        loaded = load_commands(
            lazy.register,
            rich_markup_mode=self.rich_markup_mode,
            suggest_commands=self.suggest_commands,
        )
        for loaded_name, command in loaded.items():
            self._lazy.pop(loaded_name, None)
            self.commands[loaded_name] = command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and name in self._lazy:
            self._load(name)
            command = self.commands[name]
        return name, command, rest


app = typer.Typer(
    name="aviator",
    cls=LazyGroup,
    help="aviator: an intent-driven, vendor-neutral control plane for AI workloads.\n\n"
    "Start the plane with `aviator up`; manage objects with apply/get/describe/delete/wait/logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aviator {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Path = typer.Option(
        DEFAULT_DATA_DIR,
        "--data-dir",
        envvar="AVIATOR_DATA_DIR",
        help="Data directory of the plane (database, tokens, logs).",
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        envvar="AVIATOR_SERVER",
        help="Control API URL (default: read from the data directory's plane.json).",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="AVIATOR_TOKEN",
        help="Admin token, or an agent's token (audience control-api) to act as that agent "
        "(default: <data-dir>/admin.token).",
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    ctx.obj = CliContext(data_dir=data_dir, server=server, token=token)


def _without_the_httpx_command() -> None:
    """Have ``import httpx`` skip httpx's own command-line client.

    httpx imports the client behind its ``httpx`` console script with itself (click, rich and
    pygments: ~0.15 s of every plane, gateway and command that talks HTTP), and falls back to a
    stub ``httpx.main`` where the optional dependencies of that client are missing. An aviator
    process never runs that client, so it takes the fallback. Only the ``aviator`` process does
    this (here, in its entry point), never a program that imports aviator as a library.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main() -> None:
    _without_the_httpx_command()
    app()
