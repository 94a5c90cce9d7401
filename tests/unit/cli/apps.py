"""A minimal ``aviator`` Typer app around one command group, for CLI tests against a test server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from aviator.cli.context import CliContext


def cli_app(register: Callable[[typer.Typer], None]) -> typer.Typer:
    """The root callback of ``aviator`` (``--server``, ``--token``) plus what ``register`` adds."""
    app = typer.Typer(name="aviator", add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def root(
        ctx: typer.Context,
        server: str | None = typer.Option(None, "--server"),
        token: str | None = typer.Option(None, "--token"),
    ) -> None:
        ctx.obj = CliContext(data_dir=Path("/nonexistent"), server=server, token=token)

    register(app)
    return app
