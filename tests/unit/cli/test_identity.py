"""``aviator token issue`` and ``aviator keys``: CliRunner against a real Control API with keys."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import typer
from aiohttp import web
from tests.unit.cli.apps import cli_app
from typer.testing import CliRunner, Result

from aviator.api import admission, kinds
from aviator.cli import identity
from aviator.controlapi.app import build_app
from aviator.controlapi.identity import IdentityApi
from aviator.identity.keys import KeyRing
from aviator.settings import ApiSettings, StoreSettings
from aviator.store.sqlite import SqliteStore

from .conftest import TOKEN


def make_app() -> typer.Typer:
    return cli_app(identity.register)


class Plane:
    def __init__(self, url: str, ring: KeyRing) -> None:
        self.url, self.ring, self.app = url, ring, make_app()

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(self.app, ["--server", self.url, "--token", TOKEN, *args])


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test control api", daemon=True)
    thread.start()
    ring = KeyRing.load_or_create(tmp_path / "keys")

    async def start() -> tuple[SqliteStore, web.AppRunner, int]:
        store = await SqliteStore.open(tmp_path / "aviator.db", settings=StoreSettings())
        body = {
            "apiVersion": "aviator.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "bot"},
            "spec": {"owner": "alice", "audiences": ["gateway", "control-api"]},
        }
        await store.create(
            kinds.AGENT, admission.admit(body, kind=kinds.AGENT, namespace="support")
        )
        app = build_app(
            store=store, settings=ApiSettings(), token=TOKEN, identity=IdentityApi(keyring=ring)
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return store, runner, runner.addresses[0][1]

    async def stop(store: SqliteStore, runner: web.AppRunner) -> None:
        await runner.cleanup()
        await store.close()

    store, runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield Plane(f"http://127.0.0.1:{port}", ring)
    finally:
        asyncio.run_coroutine_threadsafe(stop(store, runner), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def claims(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def test_issue_prints_the_token_alone(plane: Plane) -> None:
    result = plane.run("token", "issue", "agent/bot", "-n", "support", "--ttl", "10m")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2
    body = claims(token)
    assert body["sub"] == "spiffe://aviator.local/ns/support/agent/bot"
    assert body["aud"] == "gateway"
    assert body["exp"] - body["iat"] == 600  # type: ignore[operator]
    assert jwt.get_unverified_header(token)["kid"] == plane.ring.active.kid


@pytest.mark.parametrize("ref", ["agent/bot", "ag/bot", "agents/bot", "bot"])
def test_issue_accepts_the_usual_spellings(plane: Plane, ref: str) -> None:
    result = plane.run("token", "issue", ref, "-n", "support", "--audience", "control-api")
    assert result.exit_code == 0, result.output
    assert claims(result.stdout.strip())["aud"] == "control-api"


def test_issue_as_json(plane: Plane) -> None:
    result = plane.run("token", "issue", "agent/bot", "-n", "support", "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"token", "expiresAt"}
    assert doc["expiresAt"].endswith("Z") and claims(doc["token"])["aud"] == "gateway"


def test_issue_refusals_go_to_stderr(plane: Plane) -> None:
    too_long = plane.run("token", "issue", "agent/bot", "-n", "support", "--ttl", "2h")
    assert too_long.exit_code == 1 and too_long.stdout == ""
    assert "ttlSeconds: a token may live at most 3600 seconds (1h)" in too_long.stderr
    wrong_aud = plane.run("token", "issue", "agent/bot", "-n", "support", "--audience", "nope")
    assert wrong_aud.exit_code == 1 and "audience:" in wrong_aud.stderr
    missing = plane.run("token", "issue", "agent/ghost", "-n", "support")
    assert missing.exit_code == 1 and "NotFound" in missing.stderr
    elsewhere = plane.run("token", "issue", "agent/bot")  # the default namespace
    assert elsewhere.exit_code == 1 and elsewhere.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["md/chat"],
        ["pods/x"],
        ["agent/"],
        ["agent/bot", "--ttl", "soon"],
        ["agent/bot", "--ttl", "1.5s"],
        ["agent/bot", "-o", "yaml"],
    ],
)
def test_issue_usage_errors_exit_2(plane: Plane, args: list[str]) -> None:
    result = plane.run("token", "issue", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


def test_keys_list_and_rotate(plane: Plane) -> None:
    first = plane.ring.active.kid
    listed = plane.run("keys", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KID", "STATE", "CREATED", "RETIRED", "PUBLISHED-UNTIL"]
    assert lines[1].split()[:2] == [first, "active"]

    rotated = plane.run("keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    second = plane.ring.active.kid
    assert rotated.stdout.splitlines()[0] == f"signing key {second} is now active"
    rows = {
        line.split()[0]: line.split() for line in plane.run("keys", "list").stdout.splitlines()[1:]
    }
    assert rows[second][1] == "active" and rows[first][1] == "retired"
    assert rows[first][3] != "-" and rows[first][4] != "-"

    as_json = json.loads(plane.run("keys", "list", "-o", "json").stdout)
    assert {k["kid"] for k in as_json["keys"]} == {first, second}
    rotated_json = json.loads(plane.run("keys", "rotate", "-o", "json").stdout)
    assert rotated_json["kid"] == plane.ring.active.kid
    assert len(rotated_json["jwks"]["keys"]) == 3
