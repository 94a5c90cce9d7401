"""The audit log on disk: one SQLite file (WAL) that several processes append to.

Writing is off the caller's path. ``append`` encodes the record and puts it on a bounded
in-memory queue; one writer thread per ``AuditLog`` takes up to ``max_batch`` records, waiting at
most ``batch_interval_s`` for a batch to fill (no wait when it is full or someone flushes), and
appends them in one ``BEGIN IMMEDIATE`` transaction that reads the stored head, chains the batch
onto it, inserts it and moves the head. The transaction is what makes several processes safe:
SQLite serialises writers on the file, so the plane and the gateway each keep their own
``AuditLog`` and together produce one chain.

Guarantees. A record is *acknowledged* when ``append`` returns. ``flush`` returns once every
record acknowledged before it is committed; ``close`` flushes everything acknowledged, so a
clean shutdown loses nothing (an interpreter that exits normally closes open logs itself).
Commits use WAL with ``synchronous=NORMAL`` (as the object store): they survive ``kill -9`` of
the process; a power loss may lose the last ones. Records acknowledged but not yet written when
a process is killed are lost: that window is at most ``batch_interval_s`` plus one write.

Backpressure, never silent loss. When ``queue_bound`` records wait (the disk is slower than the
decisions, or writes fail), ``append`` blocks the caller until there is room and, after
``full_timeout_s``, raises ``AuditUnavailable`` so the caller can refuse the request it could not
record. A failing write is retried with backoff, never skipped; its error is in ``stats``.

The file refuses ``UPDATE`` and ``DELETE`` of entries (triggers), which stops accidents, not an
attacker: tampering is for ``verify`` to find. Readers (``AuditReader``) open the file read-only
and never block the writers. An ``AuditLog`` must not cross a ``fork``: open it in the process
that uses it.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from aviator.api.errors import AviatorError
from aviator.audit import chain
from aviator.audit.chain import GENESIS, Entry, Finding, Head, VerifyReport
from aviator.audit.record import AuditRecord
from aviator.settings import AuditSettings

__all__ = [
    "FILENAME",
    "AuditClosed",
    "AuditError",
    "AuditLog",
    "AuditLogMissing",
    "AuditReader",
    "AuditStats",
    "AuditUnavailable",
    "AuditWriteError",
    "default_path",
    "open_for_writing",
    "write_batch",
]

FILENAME: Final = "audit.db"
FORMAT_VERSION: Final = 1

_BUSY_TIMEOUT_MS: Final = 5_000
"""How long a writer waits for another process's transaction on the file."""
_RETRY_MIN_S: Final = 0.05
_RETRY_MAX_S: Final = 1.0
_ERROR_TEXT_MAX: Final = 200
_EXIT_TIMEOUT_S: Final = 10.0
"""How long an exiting interpreter waits for a log nobody closed; then it reports the loss."""

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # seq is the rowid: entries are kept, and read, in chain order.
    """CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        record TEXT NOT NULL
    )""",
    # The last entry, moved in the same transaction as every append: truncating the entries
    # without also rewriting this row is detected.
    """CREATE TABLE IF NOT EXISTS head (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    )""",
    f"INSERT OR IGNORE INTO head (id, seq, hash) VALUES (0, 0, '{GENESIS}')",
    f"INSERT OR IGNORE INTO meta (key, value) VALUES ('format', '{FORMAT_VERSION}')",
    """CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


def default_path(data_dir: Path) -> Path:
    """``<data-dir>/audit.db``."""
    return data_dir / FILENAME


class AuditError(AviatorError):
    """Root of the audit log's errors."""


class AuditLogMissing(AuditError):
    """There is no audit log at the path (nothing was ever recorded there)."""


class AuditClosed(AuditError):
    """``append`` after ``close``."""


class AuditUnavailable(AuditError):
    """The queue stayed full for ``full_timeout_s``: the decision could not be recorded."""


class AuditWriteError(AuditError):
    """Acknowledged records could not be written before a ``flush``/``close`` deadline."""


@dataclass(frozen=True, slots=True)
class AuditStats:
    appended: int
    """Records acknowledged (``append`` returned)."""
    written: int
    """Records committed to the file."""
    pending: int
    """Acknowledged, not yet committed."""
    batches: int
    """Transactions committed."""
    blocked: int
    """``append`` calls that had to wait for room in the queue."""
    write_errors: int
    """Failed write attempts (each retried)."""
    last_error: str | None
    """The latest write failure, cleared by the next successful write."""


# -- the file ------------------------------------------------------------------------------------


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise AuditLogMissing(f"no audit log at {path}")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # First, so that the statements below wait for another process instead of failing.
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if not readonly:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise AuditError(f"the audit log needs WAL journaling, not {mode!r}")
            conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if int(version) > FORMAT_VERSION:
            raise AuditError(
                f"the audit log's format is {version}, newer than this aviator understands "
                f"({FORMAT_VERSION}); upgrade aviator"
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _entry(row: tuple[object, object, object, object]) -> Entry:
    """A row as an entry. Readers fetch text as bytes, so a record is hashed exactly as stored
    (even bytes that are not UTF-8, which only tampering puts there)."""
    seq, prev_hash, digest, record = row
    if type(record) is not bytes:
        record = _text(record).encode()
    return Entry(
        seq=seq if type(seq) is int else -1,
        prev_hash=prev_hash.decode("utf-8", "replace")
        if type(prev_hash) is bytes
        else _text(prev_hash),
        hash=digest.decode("utf-8", "replace") if type(digest) is bytes else _text(digest),
        record=record,
    )


_COLUMNS = "seq, prev_hash, hash, record"
_ROWS_PER_INSERT: Final = 64
"""Rows per INSERT (4 parameters each, far below SQLite's 32,766): the statements for 1-64 rows
all fit sqlite3's statement cache (128)."""


def _insert(rows: int) -> str:
    return f"INSERT INTO entries ({_COLUMNS}) VALUES " + ",".join(["(?, ?, ?, ?)"] * rows)


class _Rows:
    """All entries in seq order, re-read on each iteration (inside the caller's transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __iter__(self) -> Iterator[Entry]:
        cursor = self._conn.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq")
        for row in cursor:
            yield _entry(row)


# -- writing, one caller ---------------------------------------------------------------------------


def open_for_writing(path: Path) -> sqlite3.Connection:
    """A connection to the log at ``path`` (created if needed) for ``write_batch``: for a writer
    that is a process of its own and has no use for ``AuditLog``'s queue and thread."""
    conn = _connect(path, readonly=False)
    try:
        _create(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def write_batch(conn: sqlite3.Connection, batch: list[bytes]) -> None:
    """Chain ``batch`` (records' canonical JSON, in order) onto the log's head and store it, in
    one ``BEGIN IMMEDIATE`` transaction: SQLite serialises it with every other writer's, so
    several processes extend one chain. Raises (and changes nothing) if the write fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT seq, hash FROM head WHERE id = 0").fetchone()
        seq, prev = (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)
        rows = chain.link_rows(prev, seq, batch)
        # Many rows per statement: sqlite3 lets go of the GIL for every step, and a step per row
        # made a writer thread and the event loop trade it for every record.
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            values: list[int | str] = []
            for s, p, h, r in chunk:
                # The record as TEXT (what readers and older writers store and read back).
                values += (s, p, h, r.decode())
            conn.execute(_insert(len(chunk)), values)
        seq, _, prev, _ = rows[-1]
        conn.execute("INSERT OR REPLACE INTO head (id, seq, hash) VALUES (0, ?, ?)", (seq, prev))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# -- reading -------------------------------------------------------------------------------------


class AuditReader:
    """Read-only access to an audit log: never writes, never blocks a writer.

    Each call opens its own connection, so a reader may be used from any thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.path, readonly=True)
        conn.text_factory = bytes
        try:
            conn.execute("BEGIN")  # one snapshot for everything read in this block
            yield conn
        finally:
            conn.close()

    def head(self) -> Head:
        """The stored head: the last entry's seq and hash (``0:000…`` for an empty log)."""
        with self._reading() as conn:
            return _read_head(conn) or chain.GENESIS_HEAD

    def tail(self, n: int) -> list[Entry]:
        """The last ``n`` entries, oldest first."""
        if n <= 0:
            return []
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM entries ORDER BY seq DESC LIMIT ?", (n,)
            ).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def iterate(self, since_seq: int | None = None) -> Iterator[Entry]:
        """Entries after ``since_seq`` (all by default), in seq order, from one snapshot."""
        with self._reading() as conn:
            cursor = conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE seq > ? ORDER BY seq",
                (since_seq if since_seq is not None else -(2**63),),
            )
            for row in cursor:
                yield _entry(row)

    def export(self, fp: IO[bytes], *, since_seq: int | None = None) -> int:
        """Write entries after ``since_seq`` as JSON lines (``Entry.to_json``); return the count."""
        count = 0
        for entry in self.iterate(since_seq):
            fp.write(entry.to_json() + b"\n")
            count += 1
        return count

    def verify(self, *, expect: Head | str | None = None) -> VerifyReport:
        """Check the whole chain and the stored head, in one snapshot (see ``chain.verify``)."""
        with self._reading() as conn:
            head = _read_head(conn)
            report = chain.verify(_Rows(conn), head=head, expect=expect)
        if head is None:
            missing = Finding("head", None, "the log's stored head is missing or unreadable")
            report = dataclasses.replace(report, findings=(missing, *report.findings))
        return report


def _read_head(conn: sqlite3.Connection) -> Head | None:
    row = conn.execute("SELECT seq, hash FROM head WHERE id = 0").fetchone()
    if row is None or type(row[0]) is not int or not isinstance(row[1], bytes | str):
        return None
    return Head(row[0], _text(row[1]))


# -- writing -------------------------------------------------------------------------------------


class AuditLog:
    """Appends records to the log at ``path`` from any thread; reads it like ``AuditReader``.

    Build it with ``open``; ``close`` it (or use ``with``) to make every acknowledged record
    durable.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, settings: AuditSettings) -> None:
        self.path = path
        self.settings = settings
        self._conn = conn
        self._reader = AuditReader(path)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        """The writer waits here for records, a flush or close."""
        self._room = threading.Condition(self._lock)
        """Appenders wait here for room in the queue."""
        self._done = threading.Condition(self._lock)
        """Flushers wait here for the written count to move."""
        self._pending: collections.deque[bytes] = collections.deque()
        self._appended = 0
        self._written = 0
        self._batches = 0
        self._blocked = 0
        self._write_errors = 0
        self._last_error: str | None = None
        self._flushers = 0
        self._closing = False
        self._closed = False
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aviator-audit", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: Path, *, settings: AuditSettings | None = None) -> AuditLog:
        """Open (creating if needed) the log at ``path`` and start its writer thread."""
        settings = settings or AuditSettings()
        if settings.max_batch < 1 or settings.queue_bound < 1 or settings.batch_interval_s < 0:
            raise ValueError("audit settings: max_batch and queue_bound must be positive")
        log = cls(path, open_for_writing(path), settings)
        # A process that exits without close() still writes what it acknowledged (the writer is
        # a daemon thread, and atexit handlers run while it is alive).
        atexit.register(log.close, _EXIT_TIMEOUT_S)
        return log

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the caller's side -----------------------------------------------------------------------

    def append(self, record: AuditRecord) -> None:
        """Queue ``record``; when this returns it is acknowledged (see the module docstring).

        Does not wait for the disk. Blocks only while the queue is full, and raises
        ``AuditUnavailable`` if it stays full for ``full_timeout_s``.
        """
        self.append_json(record.to_json())

    def append_json(self, data: bytes) -> None:
        """``append`` for a record already encoded: ``data`` MUST be a record's canonical JSON
        (``AuditRecord.to_json`` or ``RecordTemplate.encode``), which is what gets chained."""
        with self._lock:
            if self._closing:
                raise AuditClosed(f"the audit log {self.path} is closed")
            if len(self._pending) >= self.settings.queue_bound:
                self._blocked += 1
                deadline = time.monotonic() + self.settings.full_timeout_s
                while len(self._pending) >= self.settings.queue_bound:
                    if self._closing:
                        raise AuditClosed(f"the audit log {self.path} is closed")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AuditUnavailable(
                            f"the audit log {self.path} has {len(self._pending)} records "
                            f"waiting to be written ({self._last_error or 'the disk is slow'}); "
                            "the decision was not recorded"
                        )
                    self._room.wait(remaining)
            self._pending.append(data)
            self._appended += 1
            # Wake the writer when it waits for a first record or for a full batch.
            if len(self._pending) in (1, self.settings.max_batch):
                self._wake.notify()

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything appended before this call is committed.

        ``AuditWriteError`` if that takes longer than ``timeout`` seconds (writes failing).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._appended
            if self._written >= target:
                return
            self._flushers += 1
            self._wake.notify()
            try:
                while self._written < target:
                    if not self._thread.is_alive():
                        raise AuditWriteError(self._unwritten_message(target - self._written))
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise AuditWriteError(self._unwritten_message(target - self._written))
                    self._done.wait(remaining if remaining is not None else 1.0)
            finally:
                self._flushers -= 1

    def close(self, timeout: float | None = None) -> None:
        """Write everything acknowledged, then close the file. Idempotent.

        ``AuditWriteError`` (naming how many records were lost) if the writes still fail after
        ``timeout`` seconds; without a timeout it waits as long as the writes take.
        """
        with self._lock:
            if self._closed:
                return
            self._closing = True
            self._wake.notify()
            self._room.notify_all()
        atexit.unregister(self.close)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join()
            with self._lock:
                lost = self._appended - self._written
                self._closed = True
            self._conn.close()
            raise AuditWriteError(self._unwritten_message(lost))
        with self._lock:
            self._closed = True
        self._conn.close()

    async def aflush(self, timeout: float | None = None) -> None:
        """``flush`` without blocking the event loop."""
        await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """``close`` without blocking the event loop."""
        await asyncio.to_thread(self.close, timeout)

    @property
    def pending(self) -> int:
        """Records acknowledged and waiting to be written: cheaper than ``stats``, without the
        lock (a deque's length is read atomically), for a caller that asks on every request."""
        return len(self._pending)

    @property
    def stats(self) -> AuditStats:
        with self._lock:
            return AuditStats(
                appended=self._appended,
                written=self._written,
                pending=self._appended - self._written,
                batches=self._batches,
                blocked=self._blocked,
                write_errors=self._write_errors,
                last_error=self._last_error,
            )

    def _unwritten_message(self, count: int) -> str:
        return (
            f"{count} acknowledged audit record(s) are not written to {self.path}: "
            f"{self._last_error or 'the writer stopped'}"
        )

    # -- readers ---------------------------------------------------------------------------------

    def head(self) -> Head:
        return self._reader.head()

    def tail(self, n: int) -> list[Entry]:
        return self._reader.tail(n)

    def iterate(self, since_seq: int | None = None) -> Iterator[Entry]:
        return self._reader.iterate(since_seq)

    def export(self, fp: IO[bytes], *, since_seq: int | None = None) -> int:
        return self._reader.export(fp, since_seq=since_seq)

    def verify(self, *, expect: Head | str | None = None) -> VerifyReport:
        return self._reader.verify(expect=expect)

    # -- the writer thread -----------------------------------------------------------------------

    def _take(self) -> list[bytes] | None:
        """The next batch, or None once closing with nothing left."""
        limit = self.settings.max_batch
        with self._lock:
            while not self._pending and not self._closing:
                self._wake.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.settings.batch_interval_s
            while len(self._pending) < limit and not self._closing and not self._flushers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            batch = [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]
            self._room.notify_all()
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            if not self._write_until_done(batch):
                return
            with self._lock:
                self._written += len(batch)
                self._batches += 1
                self._last_error = None
                self._done.notify_all()

    def _write_until_done(self, batch: list[bytes]) -> bool:
        """Write ``batch``, retrying failures with backoff; False when told to give up."""
        delay = _RETRY_MIN_S
        while True:
            try:
                self._write(batch)
            except Exception as exc:  # a full disk, a locked or broken file: retry, never skip
                with self._lock:
                    self._write_errors += 1
                    self._last_error = f"{type(exc).__name__}: {str(exc)[:_ERROR_TEXT_MAX]}"
                    self._done.notify_all()
                if self._abandon.wait(delay):
                    return False
                delay = min(delay * 2, _RETRY_MAX_S)
            else:
                return True

    def _write(self, batch: list[bytes]) -> None:
        write_batch(self._conn, batch)
