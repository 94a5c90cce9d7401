"""Entry point of the ``aviator`` command: global options and command registration."""

from __future__ import annotations

from pathlib import Path

import typer

from aviator import __version__
from aviator.cli import audit, gateway, grant, identity, portability, resources, sim, top, up
from aviator.cli import install as install_cmd
from aviator.cli import operator as operator_cmd
from aviator.cli import render as render_cmd
from aviator.cli.context import DEFAULT_DATA_DIR, CliContext

app = typer.Typer(
    name="aviator",
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


app.command("up")(up.up)
resources.register(app)
app.command("sim", help="Run the built-in vLLM-compatible inference simulator.")(sim.sim)
app.command("gateway", help="Run the OpenAI-compatible gateway (aviator up starts one for you).")(
    gateway.gateway
)
app.command("portability", help=portability.portability.__doc__)(portability.portability)
app.command("top")(top.top)
app.add_typer(audit.app, name="audit")
identity.register(app)
app.command("install")(install_cmd.install)
app.command("render")(render_cmd.render_command)
app.command("operator")(operator_cmd.operator)
grant.register(app)


def main() -> None:
    app()
