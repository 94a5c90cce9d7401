"""``aviator top``: the Ready replicas and what their engines report, refreshed live.

Every refresh lists the Replicas through the Control API, then reads the ``/metrics`` of each Ready
one directly from the endpoint the plane reports — all at once, each with a short timeout, so one
stuck engine delays nothing. Rows come from ``topview``, which compares each replica's scrape with
the one before it (rates, cache-hit ratio and TTFT median over the last interval).

On a terminal the table is redrawn every ``--interval`` until Ctrl-C. With ``--once``, ``-o json``
or when stdout is not a terminal (a pipe, a test), one table is printed from a single scrape: the
cache-hit ratio and TTFT median are then cumulative since each engine started, REQ/S is ``-``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

import httpx
import typer

from aviator.api import errors, kinds
from aviator.cli import parsing, printing, topview
from aviator.cli.resources import (
    NamespaceOption,
    namespace_or_default,
    run_with_client,
    usage_error,
)
from aviator.cli.topview import ReplicaInfo, Row, Sample
from aviator.client import Client, Unavailable

__all__ = ["top"]

SCRAPE_TIMEOUT_S = 1.0
"""Longest wait for one replica's ``/metrics``; a replica slower than that shows ``-``."""

MIN_INTERVAL_S = 0.2

_CLEAR = "\x1b[H\x1b[2J"
"""Cursor home, clear screen."""

_Key = tuple[str, str, str]


async def _scrape(
    http: httpx.AsyncClient, replica: ReplicaInfo
) -> tuple[Sample | None, str | None]:
    try:
        response = await http.get(replica.endpoint + "/metrics")
    except httpx.TimeoutException:
        return None, f"no answer from {replica.endpoint}/metrics within {SCRAPE_TIMEOUT_S:g}s"
    except httpx.HTTPError as exc:
        return None, f"cannot read {replica.endpoint}/metrics ({type(exc).__name__})"
    if response.status_code != 200:
        return None, f"{replica.endpoint}/metrics answered {response.status_code}"
    try:
        return topview.parse_sample(response.text, at=time.monotonic()), None
    except ValueError:
        return None, f"{replica.endpoint}/metrics is not a Prometheus exposition"


class _Top:
    """Refreshes: replicas from the Control API, samples from the engines, rows from both."""

    def __init__(
        self, client: Client, http: httpx.AsyncClient, *, namespace: str | None, model: str | None
    ) -> None:
        self._client = client
        self._http = http
        self._namespace = namespace
        self._model = model
        self._previous: dict[_Key, Sample] = {}

    async def replicas(self) -> list[ReplicaInfo]:
        items, _ = await self._client.list(kinds.REPLICA, namespace=self._namespace)
        found = [info for obj in items if (info := ReplicaInfo.of(obj)) is not None]
        if self._model is not None:
            found = [info for info in found if info.model == self._model]
        return found

    async def refresh(self) -> list[Row]:
        replicas = await self.replicas()
        scraped = await asyncio.gather(*(_scrape(self._http, r) for r in replicas))
        rows, current = [], {}
        for replica, (sample, error) in zip(replicas, scraped, strict=True):
            key = (replica.namespace, replica.name, replica.endpoint)
            rows.append(topview.row_of(replica, sample, self._previous.get(key), error=error))
            if sample is not None:
                current[key] = sample
        self._previous = current
        return rows


def _where(namespace: str | None, model: str | None) -> str:
    where = "all namespaces" if namespace is None else f"namespace {namespace}"
    return where if model is None else f"{where}, model {model}"


def _render(rows: list[Row], *, namespace: str | None, model: str | None) -> str:
    if not rows:
        return f"No Ready replicas in {_where(namespace, model)}."
    headers, cells = topview.table(rows, all_namespaces=namespace is None)
    return printing.render_table(headers, cells)


def top(
    ctx: typer.Context,
    namespace: str | None = NamespaceOption,
    all_namespaces: bool = typer.Option(
        False, "--all-namespaces", "-A", help="Replicas of every namespace."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Only the replicas serving this model.", show_default=False
    ),
    interval: str = typer.Option(
        "2s", "--interval", help="Time between refreshes: 2s, 500ms, 1m or seconds."
    ),
    once: bool = typer.Option(
        False, "--once", help="Print one table and exit (also when stdout is not a terminal)."
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", help="json: print one JSON document and exit.", show_default=False
    ),
) -> None:
    """Show the Ready replicas with their engines' load, cache hits, TTFT and throughput, live.

    Columns: RUNNING and WAITING requests, KV% (KV-cache in use), CACHE-HIT% (prompt tokens found
    in the prefix cache), TTFT p50 (median time to first token) and REQ/S (finished requests per
    second), over the last refresh interval; from a single scrape (`--once`, a pipe, `-o json`)
    the ratio and median are since each engine started and REQ/S is '-'.

    Examples: `aviator top`; `aviator top -A --interval 1s`; `aviator top --model m --once -o json`
    """
    if output is not None and output != "json":
        usage_error(ctx, f"unknown output format {output!r}; top only knows json")
    try:
        period = parsing.parse_duration(interval)
    except parsing.UsageError as exc:
        usage_error(ctx, str(exc))
    if period < MIN_INTERVAL_S:
        usage_error(ctx, f"--interval must be at least {MIN_INTERVAL_S:g}s")
    ns = None if all_namespaces else namespace_or_default(namespace)
    live = not once and output is None and sys.stdout.isatty()

    async def body(client: Client) -> int:
        timeout = httpx.Timeout(SCRAPE_TIMEOUT_S)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            view = _Top(client, http, namespace=ns, model=model)
            if not live:
                rows = await view.refresh()
                if output == "json":
                    typer.echo(printing.to_json({"items": [r.to_json() for r in _sorted(rows)]}))
                    return 0
                typer.echo(_render(rows, namespace=ns, model=model))
                for row in _sorted(rows):
                    if row.error:
                        typer.echo(f"warning: {row.replica.name}: {row.error}", err=True)
                return 0
            return await _live(view, period=period, namespace=ns, model=model)

    run_with_client(ctx, body, interrupt_code=0)


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.replica.namespace, r.replica.model, r.replica.name))


async def _live(view: _Top, *, period: float, namespace: str | None, model: str | None) -> int:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            text = _render(await view.refresh(), namespace=namespace, model=model)
        except Unavailable:
            text = "cannot reach the Control API; is `aviator up` running? (retrying)"
        except errors.ApiError as exc:
            text = printing.format_api_error(exc)
        stamp = datetime.now().strftime("%H:%M:%S")
        head = f"aviator top | {_where(namespace, model)} | every {period:g}s | {stamp}"
        sys.stdout.write(f"{_CLEAR}{head}   (Ctrl-C to quit)\n\n{text}\n")
        sys.stdout.flush()
        await asyncio.sleep(max(0.0, period - (loop.time() - started)))
