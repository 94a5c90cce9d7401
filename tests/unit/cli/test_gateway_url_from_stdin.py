"""``aviator gateway --control-url-from-stdin``: how ``aviator up`` starts its gateway early."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from aviator.cli.main import app


def gateway(*args: str, stdin: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gateway", "--port", "0", *args], input=stdin)
    return result.exit_code, result.output


def test_the_url_is_read_from_stdin_before_the_rest_is_checked(tmp_path: Path) -> None:
    missing = tmp_path / "admin.token"
    code, out = gateway(
        "--control-url-from-stdin", "--token-file", str(missing), stdin="http://127.0.0.1:1\n"
    )
    # Without a URL the command would ask for --control-url; with it, it goes on to the token.
    assert code == 2
    assert f"cannot read the token file {missing}" in out


def test_stdin_that_ends_without_a_url_stops_the_start(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("secret\n")
    code, out = gateway("--control-url-from-stdin", "--token-file", str(token), stdin="")
    assert code == 2
    assert "--control-url-from-stdin: stdin ended before a URL" in out


def test_not_with_a_control_url_too(tmp_path: Path) -> None:
    code, out = gateway(
        "--control-url-from-stdin", "--control-url", "http://127.0.0.1:1", stdin="http://x\n"
    )
    assert code == 2
    assert "--control-url: not with --control-url-from-stdin" in out


def test_the_option_is_not_in_the_help() -> None:
    result = CliRunner().invoke(app, ["gateway", "--help"])
    assert result.exit_code == 0
    assert "--control-url-from-stdin" not in result.output
