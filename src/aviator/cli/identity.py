"""``aviator token issue`` and ``aviator keys rotate|list``: agent tokens and the plane's keys.

``token issue`` prints the token alone on stdout (so ``TOKEN=$(aviator token issue agent/bot)``
works) and nothing else there; ``-o json`` prints ``{"token", "expiresAt"}``. These are the only
commands that print a credential, and only because that is what they are asked for.
"""

from __future__ import annotations

import json
import math
from typing import Any

import typer

from aviator.api import errors, kinds
from aviator.api.names import GROUP_VERSION
from aviator.cli import parsing, printing
from aviator.cli.resources import (
    NamespaceOption,
    namespace_or_default,
    run_with_client,
    usage_error,
)
from aviator.client import Client, object_path

__all__ = ["register"]

token_app = typer.Typer(
    name="token",
    help="Issue agent tokens (JWT-SVIDs signed by the plane).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(
    name="keys",
    help="The plane's token-signing keys: list and rotate.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

KEYS_PATH = f"/apis/{GROUP_VERSION}/keys"


async def _call(client: Client, method: str, path: str, body: Any = None) -> dict[str, Any]:
    # These endpoints are not kinds: the client's general request maps transport errors and
    # Status bodies exactly as for the kinds.
    return await client.request(method, path, json=body)


def _agent_name(ctx: typer.Context, ref: str) -> str:
    kind_name, sep, name = ref.partition("/")
    if not sep:
        return ref  # a bare NAME
    try:
        kind = kinds.resolve(kind_name)
    except errors.NotFound as exc:
        usage_error(ctx, exc.message)
    if kind is not kinds.AGENT or not name or "/" in name:
        usage_error(ctx, f"{ref!r}: tokens are issued to agents; use agent/NAME")
    return name


@token_app.command("issue")
def issue(
    ctx: typer.Context,
    agent: str = typer.Argument(..., metavar="agent/NAME", help="The Agent to issue a token for."),
    namespace: str | None = NamespaceOption,
    ttl: str | None = typer.Option(
        None, "--ttl", help="Lifetime: 10m, 1h, 900s (default 15m, at most 1h).", show_default=False
    ),
    audience: str | None = typer.Option(
        None,
        "--audience",
        help="One of the agent's spec.audiences (default: the first, usually 'gateway').",
        show_default=False,
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", help="json: {token, expiresAt}.", show_default=False
    ),
) -> None:
    """Issue a token for an agent and print it (only the token, on stdout).

    Examples: `aviator token issue agent/support-bot -n support --ttl 10m`;
    `curl -H "Authorization: Bearer $(aviator token issue agent/bot)" ...`
    """
    if output not in (None, "json"):
        usage_error(ctx, f"unknown output format {output!r}; use json")
    name = _agent_name(ctx, agent)
    body: dict[str, Any] = {}
    if ttl is not None:
        try:
            seconds = parsing.parse_duration(ttl)
        except parsing.UsageError as exc:
            usage_error(ctx, str(exc))
        if seconds != math.floor(seconds):
            usage_error(ctx, f"--ttl {ttl!r}: token lifetimes are whole seconds")
        body["ttlSeconds"] = int(seconds)
    if audience is not None:
        body["audience"] = audience
    path = object_path(kinds.AGENT, namespace_or_default(namespace), name) + "/token"

    async def run(client: Client) -> int:
        result = await _call(client, "POST", path, body)
        if output == "json":
            typer.echo(json.dumps({"token": result["token"], "expiresAt": result["expiresAt"]}))
        else:
            typer.echo(result["token"])
        return 0

    run_with_client(ctx, run)


def _key_table(keys: list[dict[str, Any]]) -> str:
    rows = [
        [
            key["kid"],
            "active" if key.get("active") else "retired",
            key.get("created") or "-",
            key.get("retiredAt") or "-",
            key.get("publishedUntil") or "-",
        ]
        for key in keys
    ]
    return printing.render_table(["KID", "STATE", "CREATED", "RETIRED", "PUBLISHED-UNTIL"], rows)


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    output: str | None = typer.Option(None, "--output", "-o", help="json.", show_default=False),
) -> None:
    """List the signing keys: the active one, and retired ones still published in the JWKS."""
    if output not in (None, "json"):
        usage_error(ctx, f"unknown output format {output!r}; use json")

    async def run(client: Client) -> int:
        result = await _call(client, "GET", KEYS_PATH)
        typer.echo(printing.to_json(result) if output == "json" else _key_table(result["keys"]))
        return 0

    run_with_client(ctx, run)


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    output: str | None = typer.Option(
        None, "--output", "-o", help="json: {kid, keys, jwks}.", show_default=False
    ),
) -> None:
    """Make a new signing key active. The previous key signs nothing more but stays published
    until the last token it signed has expired; tokens issued before keep working until then."""
    if output not in (None, "json"):
        usage_error(ctx, f"unknown output format {output!r}; use json")

    async def run(client: Client) -> int:
        result = await _call(client, "POST", f"{KEYS_PATH}/rotate")
        if output == "json":
            typer.echo(printing.to_json(result))
        else:
            typer.echo(f"signing key {result['kid']} is now active")
            typer.echo(_key_table(result["keys"]))
        return 0

    run_with_client(ctx, run)


def register(app: typer.Typer) -> None:
    """Add ``token`` and ``keys`` to the ``aviator`` command."""
    app.add_typer(token_app)
    app.add_typer(keys_app)
