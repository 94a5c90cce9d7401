"""Pragmas and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aviator.api import errors
from aviator.store import schema


def test_configure_sets_durable_wal(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        schema.configure(conn)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        conn.close()


def test_configure_refuses_a_database_without_wal() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        with pytest.raises(errors.InternalError, match="WAL"):
            schema.configure(conn)
    finally:
        conn.close()


def test_migrate_is_idempotent_and_returns_the_revision(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        assert schema.migrate(conn) == 0
        conn.execute("UPDATE revision SET rv = 41")
        assert schema.migrate(conn) == 41
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
        assert not conn.in_transaction
    finally:
        conn.close()


def test_a_failed_migration_leaves_no_transaction_open(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        schema.migrate(conn)
        conn.execute(f"UPDATE schema_version SET version = {schema.SCHEMA_VERSION + 1}")
        with pytest.raises(errors.InternalError, match="newer"):
            schema.migrate(conn)
        assert not conn.in_transaction
    finally:
        conn.close()
