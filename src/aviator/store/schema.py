"""The on-disk layout of the embedded store: pragmas, tables, and the schema version.

Durability: WAL with ``synchronous=NORMAL``. A commit that returned has been written to the
WAL file (the OS holds it even if the process dies), so a ``kill -9`` loses nothing acknowledged.
A power loss or kernel crash may lose the last commits before the next WAL sync (the database
itself stays consistent); ``synchronous=FULL`` would close that window at several times the cost
per write.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from aviator.api.errors import InternalError

__all__ = ["SCHEMA_VERSION", "configure", "migrate"]

SCHEMA_VERSION: Final = 1

_BUSY_TIMEOUT_MS: Final = 5_000
"""How long a write waits for another connection's lock (another process reading the file)."""

_CACHE_KIB: Final = 64 * 1024
"""Page cache ceiling (KiB). Pages are cached only once read, so a small store stays small; 10k
Replica-sized objects take ~16 MiB, and a cache smaller than the file makes a full list reread
pages through the OS (3x slower)."""

_V1: Final = (
    # One row: the last resourceVersion handed out. It outlives deletions (an etcd revision).
    """CREATE TABLE revision (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        rv INTEGER NOT NULL CHECK (rv >= 0)
    )""",
    "INSERT INTO revision (id, rv) VALUES (0, 0)",
    # namespace is '' for cluster-scoped kinds so that the key stays NOT NULL and unique.
    """CREATE TABLE objects (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL UNIQUE,
        rv INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (kind, namespace, name)
    )""",
    # Owner uid -> dependent key: a cascade finds dependents without scanning objects. Rows go
    # with their dependent (ON DELETE CASCADE); rows naming a vanished owner are harmless.
    """CREATE TABLE owners (
        owner_uid TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (owner_uid, kind, namespace, name),
        FOREIGN KEY (kind, namespace, name) REFERENCES objects (kind, namespace, name)
            ON DELETE CASCADE
    ) WITHOUT ROWID""",
    # The foreign key's child columns need an index, or every delete scans owners.
    "CREATE INDEX owners_by_dependent ON owners (kind, namespace, name)",
)


def configure(conn: sqlite3.Connection) -> None:
    """Per-connection settings; refuses a file that cannot run in WAL mode."""
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise InternalError(f"the store needs WAL journaling, but the database is in {mode!r} mode")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")


def migrate(conn: sqlite3.Connection) -> int:
    """Create or upgrade the schema in one transaction; return the stored resourceVersion."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise InternalError(
                f"the store's schema version is {version}, newer than this aviator "
                f"understands ({SCHEMA_VERSION}); upgrade aviator"
            )
        if version == 0:
            for statement in _V1:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        (revision,) = conn.execute("SELECT rv FROM revision WHERE id = 0").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(revision)
