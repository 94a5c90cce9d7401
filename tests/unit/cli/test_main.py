"""The ``aviator`` command registers its commands lazily, and nobody can tell but the clock."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from aviator.cli import main


def eager_app() -> typer.Typer:
    """``aviator`` as it was built before the lazy group: every command imported and registered."""
    app = typer.Typer(
        name="aviator",
        help=main.app.info.help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(main.root)
    main.register_all(app)
    return app


def output(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), terminal_width=100)
    return result.exit_code, result.output


def command_lines() -> list[list[str]]:
    """Every command line whose help the two apps must print alike."""
    group = typer.main.get_command(eager_app())
    assert isinstance(group, typer.core.TyperGroup)
    lines: list[list[str]] = [[]]
    for name, command in group.commands.items():
        lines.append([name])
        if isinstance(command, typer.core.TyperGroup):
            lines += [[name, sub] for sub in command.commands]
    return lines


def test_the_table_lists_every_command_in_the_order_of_the_help() -> None:
    group = typer.main.get_command(eager_app())
    assert isinstance(group, typer.core.TyperGroup)
    assert [c.name for c in main.COMMANDS] == list(group.commands)


def test_each_summary_is_the_first_paragraph_of_the_command_help() -> None:
    group = typer.main.get_command(eager_app())
    assert isinstance(group, typer.core.TyperGroup)
    for lazy in main.COMMANDS:
        real = group.commands[lazy.name]
        first = inspect.cleandoc(real.short_help or real.help or "").split("\n\n")[0]
        assert lazy.summary == first, lazy.name


@pytest.mark.parametrize("args", command_lines(), ids=lambda a: " ".join(a) or "aviator")
def test_help_is_the_same_as_with_every_command_imported(args: list[str]) -> None:
    assert output(main.app, *args, "--help") == output(eager_app(), *args, "--help")


@pytest.mark.parametrize("args", [[], ["gatway"], ["audit"], ["--version"], ["get"]])
def test_usage_errors_and_bare_groups_are_the_same(args: list[str]) -> None:
    assert output(main.app, *args) == output(eager_app(), *args)


def test_importing_the_command_imports_no_command_module() -> None:
    code = (
        "import sys, aviator.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith('aviator.cli.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "['aviator.cli.context', 'aviator.cli.main']"
