"""``aviator portability``: the fleet report of where each deployment could run.

One row per deployment (the vendors and engines its execution paths allow, the vendors its
replicas run on, and flags such as ``single-path`` for vendor lock-in), then the fleet's allocated
devices by vendor and their concentration (HHI). The report itself is computed by the pure core
:mod:`aviator.placement.portability`; this module reads the objects and prints.
"""

from __future__ import annotations

import asyncio

import typer

from aviator.api import kinds
from aviator.cli import printing
from aviator.cli.resources import (
    NamespaceOption,
    namespace_or_default,
    run_with_client,
    usage_error,
)
from aviator.client import Client
from aviator.placement.portability import FleetReport, concentration, report

__all__ = ["OUTPUTS", "fleet_lines", "portability", "render", "table_rows"]

OUTPUTS = ("table", "json", "yaml")

HEADERS = ["NAME", "PATHS", "VENDORS", "ENGINES", "RUNS-ON", "FLAGS"]

ANY_VENDOR = "any"
"""The VENDORS cell of a deployment without an accelerator claim: it needs no device."""


def _joined(values: tuple[str, ...]) -> str:
    return ",".join(values) if values else printing.NONE


def table_rows(result: FleetReport, *, all_namespaces: bool) -> list[list[str]]:
    """Headers and one row per deployment; NAMESPACE first across all namespaces (like ``get``)."""
    headers = (["NAMESPACE"] if all_namespaces else []) + HEADERS
    rows = [headers]
    for d in result.deployments:
        row = [d.namespace] if all_namespaces else []
        row += [
            d.name,
            str(d.paths) if d.claim else "-",
            _joined(d.vendors) if d.claim else ANY_VENDOR,
            _joined(d.engines),
            _joined(d.runs_on),
            _joined(d.flags),
        ]
        rows.append(row)
    return rows


def _count(value: float) -> str:
    return f"{round(value):,}"


def fleet_lines(result: FleetReport, *, namespace: str | None) -> list[str]:
    """The allocated devices by vendor, and their concentration."""
    where = f" (namespace {namespace})" if namespace is not None else ""
    if result.by_vendor:
        shares = ", ".join(
            f"{v.vendor} {v.devices} ({100 * v.share:.1f}%)" for v in result.by_vendor
        )
        allocated = f"{shares}; {result.allocated_devices} in all"
    else:
        allocated = "none"
    if result.hhi is None:
        index = "undefined — no devices are allocated"
    else:
        index = f"{_count(result.hhi)} — {concentration(result.hhi)}"
    return [
        f"allocated devices by vendor{where}: {allocated}",
        f"vendor concentration (HHI): {index}",
    ]


def render(result: FleetReport, *, namespace: str | None) -> str:
    """The table, a blank line, the fleet lines (``namespace`` None: across all namespaces)."""
    lines: list[str] = []
    if result.deployments:
        lines += printing.TableWriter().render(table_rows(result, all_namespaces=namespace is None))
        lines.append("")
    lines += fleet_lines(result, namespace=namespace)
    return "\n".join(lines)


def portability(
    ctx: typer.Context,
    namespace: str | None = NamespaceOption,
    all_namespaces: bool = typer.Option(
        False, "--all-namespaces", "-A", help="Report across all namespaces."
    ),
    output: str = typer.Option("table", "--output", "-o", help="table, json or yaml."),
) -> None:
    """Where each deployment could run, and how concentrated the fleet is by vendor.

    Per deployment: its execution paths (status.alternatives), the vendors and engines they
    allow, the vendors its replicas run on, and flags: `single-path` (every path is one vendor's:
    lock-in), `no-path` (nothing satisfies its claim), `not-observed` (paths not computed yet).
    Then the allocated devices by vendor and their Herfindahl-Hirschman Index (0 to 10,000,
    bands of the 2010 US DOJ/FTC Horizontal Merger Guidelines).

    Examples: `aviator portability -A`; `aviator portability -n team -o json`
    """
    if output not in OUTPUTS:
        usage_error(ctx, f"unknown output format {output!r}; use one of: {', '.join(OUTPUTS)}")
    ns = None if all_namespaces else namespace_or_default(namespace)

    async def body(client: Client) -> int:
        (deployments, _), (replicas, _) = await asyncio.gather(
            client.list(kinds.MODEL_DEPLOYMENT, namespace=ns),
            client.list(kinds.REPLICA, namespace=ns),
        )
        result = report(deployments, replicas)
        if output == "json":
            typer.echo(printing.to_json(result.to_dict()))
        elif output == "yaml":
            typer.echo(printing.to_yaml(result.to_dict()), nl=False)
        else:
            if not result.deployments:
                where = "" if ns is None else f" in {ns} namespace"
                typer.echo(f"No resources found{where}.", err=True)
            typer.echo(render(result, namespace=ns))
        return 0

    run_with_client(ctx, body)
