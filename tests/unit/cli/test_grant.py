"""``aviator grant``: CliRunner against a governed Control API (the example policies, real agent
tokens), served from a background thread as in ``conftest``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from aiohttp import web
from tests.unit.cli.apps import cli_app
from tests.unit.controlapi.governed import ADMIN_TOKEN, BOT, NS, World, open_world
from typer.testing import CliRunner, Result

from aviator.api import kinds
from aviator.cli import grant as grant_cli


def make_app() -> typer.Typer:
    return cli_app(grant_cli.register)


class Plane:
    def __init__(self, url: str, world: World, loop: asyncio.AbstractEventLoop) -> None:
        self.url, self.world, self.loop, self.app = url, world, loop, make_app()
        self.bot_token = world.token()

    def run(self, *args: str, token: str = ADMIN_TOKEN) -> Result:
        return CliRunner().invoke(self.app, ["--server", self.url, "--token", token, *args])

    def phase(self, name: str) -> str:
        obj = asyncio.run_coroutine_threadsafe(
            self.world.store.get(kinds.GRANT, NS, name), self.loop
        ).result(timeout=10)
        return str(obj["status"]["phase"])


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="governed api", daemon=True)
    thread.start()

    async def start() -> tuple[World, web.AppRunner, int]:
        world = await open_world(tmp_path)
        runner = web.AppRunner(world.app, access_log=None, shutdown_timeout=0.05)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return world, runner, runner.addresses[0][1]

    async def stop(world: World, runner: web.AppRunner) -> None:
        await runner.cleanup()
        await world.close()

    world, runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=20)
    try:
        yield Plane(f"http://127.0.0.1:{port}", world, loop)
    finally:
        asyncio.run_coroutine_threadsafe(stop(world, runner), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def request(plane: Plane, name: str, *extra: str, token: str | None = None) -> Result:
    return plane.run(
        "grant", "request", "bot", "-n", NS, "--name", name, "--purpose", "q3 report", *extra,
        token=token or plane.bot_token,
    )  # fmt: skip


def test_an_agent_requests_and_is_approved_at_once(plane: Plane) -> None:
    result = request(plane, "q3", "--action", "infer", "--resource", "md/chat", "--duration", "30m")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("grant/q3 is Active: approved automatically by grant-requests")
    assert "(until " in result.stdout
    assert plane.bot_token not in result.output

    as_json = request(plane, "q3-json", "--action", "embed", "--resource", "md/chat", "-o", "json")
    obj = json.loads(as_json.stdout)
    assert obj["status"]["requestedBy"] == BOT
    assert obj["spec"]["resources"] == ['ModelDeployment::"team-a/chat"']
    assert obj["spec"]["durationSeconds"] == 900  # the default 15m
    named = request(plane, "q3-name", "--action", "infer", "--resource", "md/chat", "-o", "name")
    assert named.stdout == "grant.aviator.dev/q3-name\n"  # as `aviator get -o name`


def test_a_denied_request_exits_1_and_says_why(plane: Plane) -> None:
    result = request(plane, "gov", "--action", "update", "--resource", "policy/baseline")
    assert result.exit_code == 1
    assert result.stdout.startswith("grant/gov is Denied: forbidden by grant-requests#2")
    assert plane.phase("gov") == "Denied"


def test_pending_approved_by_the_admin_not_by_the_agent(plane: Plane) -> None:
    result = request(plane, "tune", "--action", "update", "--resource", "md/crit")
    assert result.exit_code == 0
    assert "is Pending" in result.stdout and "waiting for a human" in result.stdout

    own = plane.run("grant", "approve", "tune", "-n", NS, token=plane.bot_token)
    assert own.exit_code == 1
    assert "can never approve its own grant" in own.stderr

    approved = plane.run("grant", "approve", "tune", "-n", NS, "--reason", "ticket OPS-7")
    assert approved.exit_code == 0, approved.output
    assert approved.stdout.startswith("grant/tune is Active: ticket OPS-7")
    again = plane.run("grant", "approve", "tune", "-n", NS)
    assert again.exit_code == 1 and "only Pending grants can be approved" in again.stderr

    revoked = plane.run("grant", "revoke", "tune", "-n", NS, "-o", "json")
    assert revoked.exit_code == 0
    assert json.loads(revoked.stdout)["status"]["phase"] == "Revoked"

    request(plane, "other", "--action", "delete", "--resource", "md/crit")
    denied = plane.run("grant", "deny", "other", "-n", NS, "--reason", "no")
    assert denied.stdout == "grant/other is Denied: no\n"


def test_list_reuses_the_grant_printer_columns(plane: Plane) -> None:
    empty = plane.run("grant", "list", "-n", NS)
    assert empty.exit_code == 0 and "No grants found in team-a namespace." in empty.stderr
    request(plane, "q3", "--action", "infer", "--resource", "md/chat")
    listed = plane.run("grant", "list", "-n", NS)
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "AGENT", "PHASE", "ACTIONS", "RESOURCES", "EXPIRES", "AGE"]
    assert row.split()[:5] == ["q3", "bot", "Active", "infer", 'ModelDeployment::"team-a/chat"']
    everywhere = plane.run("grant", "list", "-A")
    assert everywhere.stdout.split()[:2] == ["NAMESPACE", "NAME"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--duration", "soon"), "--duration"),
        (("--duration", "90.5s"), "whole seconds"),
        (("-o", "table"), "unknown output format"),
    ],
)
def test_usage_errors_exit_2(plane: Plane, args: tuple[str, ...], message: str) -> None:
    result = request(plane, "bad", "--action", "infer", "--resource", "md/chat", *args)
    assert result.exit_code == 2 and message in result.stderr
    bad_agent = plane.run(
        "grant", "request", "Bad_Agent", "--action", "infer", "--resource", "md/chat",
        "--purpose", "x",
    )  # fmt: skip
    assert bad_agent.exit_code == 2 and "invalid agent name" in bad_agent.stderr


def test_admission_errors_are_reported_with_their_field(plane: Plane) -> None:
    result = request(plane, "node", "--action", "infer", "--resource", "node/gpu-1")
    assert result.exit_code == 1
    assert "spec.resources[0]" in result.stderr and "infer does not apply to Node" in result.stderr


def test_grant_name_defaults_to_the_agent_and_a_suffix() -> None:
    assert grant_cli.grant_name("bot", "a1b2c3") == "bot-a1b2c3"
    long = grant_cli.grant_name("a" * 49 + "-" + "b" * 100, "ff")
    assert long == "a" * 49 + "-ff" and len(long) <= 63
