"""``aviator audit tail|export|verify``: the audit log, read straight from its file.

These commands never talk to the Control API: they open ``<data-dir>/audit.db`` (or ``--db``)
read-only, so they work while the plane runs, after it stopped, and on a copy of the file.
``verify`` also checks an export (``--file``), e.g. one shipped off the machine long ago.

Exit codes: 0 intact (or printed), 1 tampering found or no log to read, 2 usage.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import orjson
import typer

from aviator.audit import chain
from aviator.audit.chain import Entry, Head, Unreadable, VerifyReport
from aviator.audit.log import AuditLogMissing, AuditReader, default_path
from aviator.cli import printing
from aviator.cli.context import CliContext

__all__ = ["HEADERS", "app", "parse_expect", "render_report", "table_rows"]

app = typer.Typer(
    name="audit",
    help="Read and verify the audit log (every admit/refuse decision, hash-chained).",
    no_args_is_help=True,
)

HEADERS = [
    "SEQ",
    "TIME",
    "SOURCE",
    "PRINCIPAL",
    "ACTION",
    "RESOURCE",
    "DECISION",
    "POLICIES",
    "REASON",
]
REASON_WIDTH = 60
"""The REASON column is cut here so that a long policy message does not wrap every row."""
FOLLOW_POLL_S = 0.5
"""How often ``tail -f`` looks for new entries."""

_sleep = time.sleep
"""Indirection for tests of ``--follow``."""

DbOption = typer.Option(
    None, "--db", show_default=False,
    help="The audit log file (default: <data-dir>/audit.db).",
)  # fmt: skip


# -- plumbing ------------------------------------------------------------------------------------


def _fail(text: str, code: int = 1) -> NoReturn:
    typer.echo(text, err=True)
    raise typer.Exit(code)


def _usage(ctx: typer.Context, message: str) -> NoReturn:
    _fail(f"error: {message}\nSee '{ctx.command_path} --help' for usage.", 2)


def _reader(ctx: typer.Context, db: Path | None) -> AuditReader:
    if db is not None:
        return AuditReader(db)
    cli = ctx.find_object(CliContext)
    if cli is None:  # pragma: no cover - the root callback always sets it
        raise RuntimeError("the aviator root callback did not set a CliContext")
    return AuditReader(default_path(cli.data_dir))


def _unreadable_log(reader: AuditReader, exc: Exception) -> NoReturn:
    if isinstance(exc, AuditLogMissing):
        _fail(
            f"error: no audit log at {reader.path} (nothing recorded yet; or pass --data-dir "
            "or --db)"
        )
    _fail(f"error: cannot read the audit log {reader.path}: {exc}")


def _stdout() -> IO[bytes]:
    sys.stdout.flush()
    return sys.stdout.buffer


# -- tail ----------------------------------------------------------------------------------------


def _cell(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if value is None or value in ("", []):
        return printing.NONE
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def table_rows(entries: Sequence[Entry]) -> list[list[str]]:
    """One row per entry; a record that is not JSON (tampered) shows ``<unreadable>``."""
    rows = []
    for entry in entries:
        try:
            data = entry.data()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            rows.append([str(entry.seq), "<unreadable>", *[printing.NONE] * (len(HEADERS) - 2)])
            continue
        reason = _cell(data, "reason")
        if len(reason) > REASON_WIDTH:
            reason = reason[: REASON_WIDTH - 1] + "…"
        rows.append(
            [
                str(entry.seq),
                _cell(data, "time"),
                _cell(data, "source"),
                _cell(data, "principal"),
                _cell(data, "action"),
                _cell(data, "resource"),
                _cell(data, "decision"),
                _cell(data, "policies"),
                reason,
            ]
        )
    return rows


@app.command("tail")
def tail(
    ctx: typer.Context,
    lines: int = typer.Option(20, "--lines", "-n", help="How many of the last entries to show."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new entries (Ctrl-C stops)."
    ),
    output: str = typer.Option(
        "table", "--output", "-o", help="table, or json (one entry per line, as export)."
    ),
    db: Path | None = DbOption,
) -> None:
    """Show the last entries of the audit log.

    Examples: `aviator audit tail`; `aviator audit tail -n 100 -o json`; `aviator audit tail -f`
    """  # fmt: skip
    if output not in ("table", "json"):
        _usage(ctx, f"--output must be table or json, not {output!r}")
    if lines < 0:
        _usage(ctx, "--lines must not be negative")
    reader = _reader(ctx, db)
    writer = printing.TableWriter()
    try:
        entries = reader.tail(lines)
        if output == "table":
            for line in writer.render([HEADERS, *table_rows(entries)]):
                typer.echo(line)
        else:
            _print_json(entries)
        if not follow:
            raise typer.Exit(0)
        since = entries[-1].seq if entries else reader.head().seq
        for batch in _follow(reader, since):
            if output == "table":
                for line in writer.render(table_rows(batch)):
                    typer.echo(line)
            else:
                _print_json(batch)
    except (AuditLogMissing, sqlite3.Error) as exc:
        _unreadable_log(reader, exc)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _print_json(entries: Sequence[Entry]) -> None:
    for entry in entries:
        typer.echo(entry.to_json().decode())


def _follow(reader: AuditReader, since: int) -> Iterator[list[Entry]]:
    """New entries after ``since``, batch by batch, polling the file; ends with Ctrl-C."""
    while True:
        _sleep(FOLLOW_POLL_S)
        batch = list(reader.iterate(since_seq=since))
        if batch:
            since = batch[-1].seq
            yield batch


# -- export --------------------------------------------------------------------------------------


@app.command("export")
def export(
    ctx: typer.Context,
    since: int | None = typer.Option(None, "--since", help="Only entries after this seq."),
    out: Path | None = typer.Option(
        None, "--output", "-o", show_default=False, help="Write to FILE instead of stdout."
    ),
    db: Path | None = DbOption,
) -> None:
    """Write the audit log as JSON lines: {"hash", "prev_hash", "record", "seq"} per entry.

    A summary with the head to anchor goes to stderr. Check a file later with
    `aviator audit verify --file FILE` (add `--since SEQ` for a partial export).

    Examples: `aviator audit export -o audit.jsonl`; `aviator audit export --since 1000 > new.jsonl`
    """  # fmt: skip
    reader = _reader(ctx, db)
    try:
        if out is None:
            stream = _stdout()
            count = reader.export(stream, since_seq=since)
            stream.flush()
        else:
            with out.open("wb") as handle:
                count = reader.export(handle, since_seq=since)
        head = reader.head()
    except (AuditLogMissing, sqlite3.Error) as exc:
        _unreadable_log(reader, exc)
    except OSError as exc:
        _fail(f"error: cannot write {out}: {exc.strerror or exc}")
    where = f" to {out}" if out is not None else ""
    typer.echo(f"exported {count} entries{where}; the log's head is {head}", err=True)


# -- verify --------------------------------------------------------------------------------------


def parse_expect(text: str) -> Head | str:
    """``SEQ:HASH`` (as ``verify`` prints it) or a bare 64-hex-digit hash."""
    value = text.strip().lower()
    if ":" in value:
        return Head.parse(value)
    if not chain.is_hash(value):
        raise ValueError(f"expected SEQ:HASH or a 64-hex-digit hash, not {text!r}")
    return value


class _ExportFile:
    """The entries of an export file, re-read on each iteration; a bad line is ``Unreadable``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[Entry | Unreadable]:
        with self.path.open("rb") as handle:
            for raw in handle:
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    yield Unreadable("an empty line")
                    continue
                try:
                    yield Entry.from_json(line)
                except ValueError as exc:
                    yield Unreadable(str(exc))


def render_report(report: VerifyReport, *, source: str, expect: Head | str | None) -> list[str]:
    """What ``verify`` prints: the verdict, then the head to anchor or one line per problem."""
    span = (
        f"seq {report.first_seq}-{report.head.seq}"
        if report.head.seq >= report.first_seq
        else "no entries"
    )
    if report.ok:
        lines = [f"OK: {source}: {report.entries} entries ({span}), chain intact"]
        if expect is not None:
            lines.append(f"anchored head {expect} is in the log")
        lines.append(f"head: {report.head}")
        return lines
    count = len(report.findings)
    lines = [
        f"FAILED: {source}: {count} problem{'s' if count != 1 else ''} in {report.entries} "
        f"entries read"
    ]
    lines += [f"  {finding.message}" for finding in report.findings]
    return lines


@app.command("verify")
def verify(
    ctx: typer.Context,
    expect_head: str | None = typer.Option(
        None,
        "--expect-head",
        metavar="SEQ:HASH",
        help="A head printed earlier (or a bare hash) that must still be in the log.",
    ),
    file: Path | None = typer.Option(None, "--file", help="Verify this export instead of the log."),
    since: int | None = typer.Option(
        None,
        "--since",
        help="With --file: the export starts after this seq (export --since).",
    ),
    output: str = typer.Option("text", "--output", "-o", help="text, or json (the report)."),
    db: Path | None = DbOption,
) -> None:
    """Check that no audit entry was edited, deleted, inserted or reordered.

    Exit 0 and the head (SEQ:HASH) when intact: keep that head somewhere else (a ticket, a log
    shipper, a second machine) and pass it to --expect-head later; only such an anchor exposes
    a log that was rewritten as a whole. Exit 1, naming each entry and what is wrong, otherwise.

    Examples: `aviator audit verify`; `aviator audit verify --expect-head 1234:9f86d0…`;
    `aviator audit verify --file audit.jsonl`
    """  # fmt: skip
    if output not in ("text", "json"):
        _usage(ctx, f"--output must be text or json, not {output!r}")
    if since is not None and file is None:
        _usage(ctx, "--since applies to an export (--file)")
    if since is not None and since < 0:
        _usage(ctx, "--since must not be negative")
    expect: Head | str | None = None
    if expect_head is not None:
        try:
            expect = parse_expect(expect_head)
        except ValueError as exc:
            _usage(ctx, f"--expect-head: {exc}")
    if file is not None:
        if not file.is_file():
            _fail(f"error: no such file {file}")
        source = str(file)
        first = (since or 0) + 1
        try:
            report = chain.verify(_ExportFile(file), expect=expect, first_seq=first, label="line")
        except OSError as exc:
            _fail(f"error: cannot read {file}: {exc.strerror or exc}")
    else:
        reader = _reader(ctx, db)
        source = str(reader.path)
        try:
            report = reader.verify(expect=expect)
        except (AuditLogMissing, sqlite3.Error) as exc:
            _unreadable_log(reader, exc)
    if output == "json":
        typer.echo(
            orjson.dumps(_report_json(report, source=source), option=orjson.OPT_INDENT_2).decode()
        )
    else:
        for line in render_report(report, source=source, expect=expect):
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


def _report_json(report: VerifyReport, *, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "ok": report.ok,
        "entries": report.entries,
        "head": str(report.head),
        "findings": [
            {
                "kind": f.kind,
                "seq": f.seq,
                "last_seq": f.last_seq,
                "position": f.position,
                "message": f.message,
            }
            for f in report.findings
        ],
    }
