"""``aviator grant request|approve|deny|revoke|list``: just-in-time grants from the command line.

``request`` creates a Grant with the CLI's credentials (an agent passes its own token with
``--token``) and prints what policy decided; ``approve``, ``deny`` and ``revoke`` call the grant's
lifecycle endpoints; ``list`` prints the grants with the same printer columns as
``aviator get grants``. Exit codes: 0 done, 1 refused or failed (including a request policy
denied: it is stored, and its reason printed), 2 usage error. Credentials are never printed.
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from typing import Any

import typer

from aviator.api import kinds
from aviator.api.names import GROUP_VERSION, dns1123_subdomain_problem
from aviator.cli import parsing, printing
from aviator.cli.resources import (
    NamespaceOption,
    namespace_or_default,
    run_with_client,
    usage_error,
)
from aviator.client import Client

__all__ = ["LIST_COLUMNS", "app", "grant_name", "summary"]

app = typer.Typer(
    name="grant",
    help="Just-in-time grants: request rights for an agent, approve, deny, revoke, list.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

REQUEST_OUTPUTS = ("json", "yaml", "name")
LIST_COLUMNS = ("Agent", "Phase", "Actions", "Resources", "Expires", "Age")
"""``grant list`` columns, taken from the Grant kind's printer columns (``aviator get grants``)."""
_NAME_SUFFIX_BYTES = 3
_NAME_PREFIX_MAX = 50


def grant_name(agent: str, suffix: str) -> str:
    """A default Grant name: the agent's name (cut short) and a random ``suffix``."""
    prefix = agent[:_NAME_PREFIX_MAX].rstrip("-.")
    return f"{prefix}-{suffix}"


def summary(grant: dict[str, Any]) -> str:
    """``grant/NAME is PHASE: REASON``: what was decided, in one line."""
    status = grant.get("status") or {}
    name = (grant.get("metadata") or {}).get("name", "")
    line = f"grant/{name} is {status.get('phase') or 'Pending'}"
    if reason := status.get("reason"):
        line += f": {reason}"
    if (expires := status.get("expiresAt")) and status.get("phase") == "Active":
        line += f" (until {expires})"
    return line


def _emit(grant: dict[str, Any], output: str | None) -> None:
    if output == "json":
        typer.echo(printing.to_json(grant))
    elif output == "yaml":
        typer.echo(printing.to_yaml(grant), nl=False)
    elif output == "name":
        typer.echo(printing.object_ref(kinds.GRANT, grant["metadata"]["name"]))
    else:
        typer.echo(summary(grant))


@app.command("request")
def request(
    ctx: typer.Context,
    agent: str = typer.Argument(..., metavar="AGENT", help="The Agent that receives the rights."),
    actions: list[str] = typer.Option(
        ..., "--action", help="infer, embed, create, update or delete; repeat for several."
    ),
    resources: list[str] = typer.Option(
        ...,
        "--resource",
        help='md/chat, ns/team-b, node/gpu-1 or ModelDeployment::"team-a/chat"; repeat for several.',
    ),
    purpose: str = typer.Option(..., "--purpose", help="Why: shown to approvers and audited."),
    duration: str = typer.Option(
        "15m", "--duration", help="How long once approved: 60s to 24h (30m, 1h, 900s)."
    ),
    name: str | None = typer.Option(
        None, "--name", help="The Grant's name (default: AGENT-<random>).", show_default=False
    ),
    namespace: str | None = NamespaceOption,
    output: str | None = typer.Option(
        None, "--output", "-o", help="json, yaml or name.", show_default=False
    ),
) -> None:
    """Ask for rights for an agent; policy approves at once, leaves it for a human, or denies.

    Example: `aviator --token "$T" grant request bot --action infer --resource md/chat
    --purpose "q3 report" --duration 30m`
    """
    if output is not None and output not in REQUEST_OUTPUTS:
        usage_error(ctx, f"unknown output format {output!r}; use one of: json, yaml, name")
    if problem := dns1123_subdomain_problem(agent):
        usage_error(ctx, f"invalid agent name {agent!r}: {problem}")
    try:
        seconds = parsing.parse_duration(duration)
    except parsing.UsageError as exc:
        usage_error(ctx, f"--duration: {exc}")
    if seconds != math.floor(seconds):
        usage_error(ctx, f"--duration {duration!r}: grants last whole seconds")
    grant_name_ = name or grant_name(agent, secrets.token_hex(_NAME_SUFFIX_BYTES))
    ns = namespace_or_default(namespace)
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": kinds.GRANT.kind,
        "metadata": {"name": grant_name_, "namespace": ns},
        "spec": {
            "agent": agent,
            "actions": list(actions),
            "resources": list(resources),
            "purpose": purpose,
            "durationSeconds": int(seconds),
        },
    }

    async def run(client: Client) -> int:
        created = await client.create(kinds.GRANT, body, namespace=ns)
        _emit(created, output)
        return 1 if (created.get("status") or {}).get("phase") == "Denied" else 0

    run_with_client(ctx, run)


def _verb(verb: str) -> Any:
    def command(
        ctx: typer.Context,
        name: str = typer.Argument(..., metavar="NAME", help="The Grant."),
        namespace: str | None = NamespaceOption,
        reason: str | None = typer.Option(
            None, "--reason", help="Why, for the status and the audit log.", show_default=False
        ),
        output: str | None = typer.Option(
            None, "--output", "-o", help="json, yaml or name.", show_default=False
        ),
    ) -> None:
        if output is not None and output not in REQUEST_OUTPUTS:
            usage_error(ctx, f"unknown output format {output!r}; use one of: json, yaml, name")
        ns = namespace_or_default(namespace)

        async def run(client: Client) -> int:
            call = {
                "approve": client.approve_grant,
                "deny": client.deny_grant,
                "revoke": client.revoke_grant,
            }[verb]
            _emit(await call(ns, name, reason=reason), output)
            return 0

        run_with_client(ctx, run)

    return command


app.command(
    "approve",
    help="Approve a Pending grant: Active for its durationSeconds from now. Never by its "
    "requester, nor by the agent it is for.",
)(_verb("approve"))
app.command("deny", help="Deny a Pending grant.")(_verb("deny"))
app.command(
    "revoke",
    help="End an Active grant (or withdraw a Pending one) at once. The agent a grant is for may "
    "always give it up.",
)(_verb("revoke"))


@app.command("list")
def list_grants(
    ctx: typer.Context,
    namespace: str | None = NamespaceOption,
    all_namespaces: bool = typer.Option(
        False, "--all-namespaces", "-A", help="List across all namespaces."
    ),
) -> None:
    """List grants: NAME AGENT PHASE ACTIONS RESOURCES EXPIRES AGE."""
    ns = None if all_namespaces else namespace_or_default(namespace)
    columns = [c for name in LIST_COLUMNS for c in kinds.GRANT.columns if c.name == name]

    async def run(client: Client) -> int:
        items, _ = await client.list(kinds.GRANT, namespace=ns)
        if not items:
            where = "" if ns is None else f" in {ns} namespace"
            typer.echo(f"No grants found{where}.", err=True)
            return 0
        now = datetime.now(UTC)
        headers = (["NAMESPACE"] if ns is None else []) + ["NAME"]
        headers += [c.name.upper() for c in columns]
        rows = []
        for obj in items:
            meta = obj["metadata"]
            row = [meta.get("namespace") or ""] if ns is None else []
            row.append(meta["name"])
            row.extend(printing.cell(obj, c, now=now) for c in columns)
            rows.append(row)
        typer.echo(printing.render_table(headers, rows))
        return 0

    run_with_client(ctx, run)


def register(root: typer.Typer) -> None:
    """Add ``grant`` to the ``aviator`` command."""
    root.add_typer(app)
