"""The audit writer process: ``python -m aviator.audit.writer PATH``, started by ``AuditSink``.

It reads the frames an ``AuditSink`` sends on standard input (the wire format is in
``aviator.audit.sink``), renders each record with the same ``RecordTemplate`` the parent would
use, and commits each line's records in one transaction (``log.write_batch``) before it answers
the count committed so far on standard output. When standard input ends it has written
everything it was sent, and exits 0 (a last line cut off by a parent that died mid-write is
logged and dropped: its records were never whole). A write that fails (a full disk, a locked
file) is retried with backoff, never skipped: meanwhile the pipe fills and the parent refuses
work at its bound.

Its own module, apart from ``AuditSink``'s: an entry point run with ``-m`` must stay Python
source, while the parent's side is compiled with mypyc (``tools/native.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from aviator.audit.log import open_for_writing, write_batch
from aviator.audit.record import AuditRecord, RecordTemplate, Stamps, encode_facts
from aviator.audit.sink import template_of

__all__ = ["main"]

log = logging.getLogger("aviator.audit.writer")

_RETRY_MIN_S: Final = 0.05
_RETRY_MAX_S: Final = 1.0
"""The backoff between attempts at a failing write."""


def _serve(lines: Iterable[bytes], conn: sqlite3.Connection, out: _Answers) -> int:
    """Render what the parent sends and commit each line's records before the next line (one
    transaction each); return the count written."""
    templates: dict[int, RecordTemplate] = {}
    stamps = Stamps()
    written = 0
    for line in lines:
        if line[-1:] != b"\n":
            # Only the last line can lack its end: the parent died in the middle of writing it.
            log.error(
                "the last frame (%d bytes) was cut off by the gateway's exit; its records are lost",
                len(line),
            )
            break
        kind, body = line[:1], line[1:-1]
        batch: list[bytes] = []
        if kind == b"B":
            batch = encode_facts(templates, orjson.loads(body), stamps=stamps, rejected=_rejected)
        elif kind == b"R":
            # Checked as a record, and chained as sent (it is its canonical JSON).
            batch.append(AuditRecord.from_json(body).to_json())
        elif kind == b"T":
            number, *fields = orjson.loads(body)
            templates[number] = template_of(fields)
            continue
        elif kind == b"F":
            out.flushed(written)  # every line before it is committed already
            continue
        elif line.strip():
            raise ValueError(f"unknown audit sink frame {line[:40]!r}")
        if batch:
            _write_until_done(conn, batch)
            written += len(batch)
        out.committed(written)
    return written


def _rejected(fact: Sequence[Any], error: ValueError) -> None:
    # A caller's bug; the other records of the batch are still written.
    log.error("audit record %r not written: %s", fact[1] if len(fact) > 1 else fact, error)


def _write_until_done(conn: sqlite3.Connection, batch: list[bytes]) -> None:
    """Commit ``batch``, retrying failures (a full disk, a locked file) with backoff: never
    skipped. Meanwhile the pipe fills, and the parent refuses work at its bound."""
    delay = _RETRY_MIN_S
    while True:
        try:
            write_batch(conn, batch)
        except (sqlite3.Error, OSError) as exc:
            log.error("writing %d audit record(s) failed (%s); retrying", len(batch), exc)
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        else:
            return


class _Answers:
    """The child's answers on its standard output."""

    def __init__(self, stream: object) -> None:
        self._out: object | None = stream
        self.broken = False

    def _say(self, text: bytes) -> None:
        out = self._out
        if out is None:
            return
        try:
            out.write(text)  # type: ignore[attr-defined]
            out.flush()  # type: ignore[attr-defined]
        except BrokenPipeError:
            # The parent is gone (killed): nobody reads the answers, but what it sent before
            # is still in the pipe and still gets written.
            self._out = None
            self.broken = True

    def ready(self) -> None:
        self._say(b"ready\n")

    def committed(self, count: int) -> None:
        self._say(b"%d\n" % count)

    def flushed(self, count: int) -> None:
        self._say(b"F%d\n" % count)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aviator.audit.writer PATH``: write what arrives on standard input until it
    closes, then everything, then exit 0."""
    parser = argparse.ArgumentParser(
        prog="python -m aviator.audit.writer",
        description="Write the audit records an AuditSink sends on standard input to PATH.",
    )
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    # Its life is the pipe's: a Ctrl-C or SIGTERM meant for the process group must not cut the
    # records in the pipe short; the parent's close (or death) ends standard input, then this.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        conn = open_for_writing(args.path)
    except Exception as exc:
        print(f"aviator.audit.writer: cannot open {args.path}: {exc}", file=sys.stderr)
        return 1
    answers = _Answers(sys.stdout.buffer)
    answers.ready()
    try:
        _serve(sys.stdin.buffer, conn, answers)
    finally:
        conn.close()
        if answers.broken:  # what stdout still buffers has no reader: not an error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
