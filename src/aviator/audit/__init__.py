"""The audit log: every admit/refuse decision, hash-chained, in its own SQLite file.

The package MUST record what it is given without loss once ``append`` has returned (a clean
``close`` writes everything acknowledged), MUST keep writing off the caller's path (a bounded
queue and a writer thread; backpressure, never silent dropping, when the queue is full), and
MUST let anyone holding only the file, or an export of it, check that no entry was edited,
deleted, inserted or reordered, and say which.

It MUST NOT decide anything (policy does; audit records the outcome), store credentials (a
record names a principal by id, never by token), import the gateway, the Control API or the
controllers (they call it), or share the object store's file or its thread (audit load must not
slow the store).

``record`` and ``chain`` are pure; ``log`` owns the file. See ``docs/governance.md`` (Audit).
"""

from aviator.audit.chain import (
    GENESIS,
    Entry,
    Finding,
    FindingKind,
    Head,
    Unreadable,
    VerifyReport,
    verify,
)
from aviator.audit.log import (
    FILENAME,
    AuditClosed,
    AuditError,
    AuditLog,
    AuditLogMissing,
    AuditReader,
    AuditStats,
    AuditUnavailable,
    AuditWriteError,
    default_path,
)
from aviator.audit.record import AuditRecord, Decision, Source, Tokens, audit_time

__all__ = [
    "FILENAME",
    "GENESIS",
    "AuditClosed",
    "AuditError",
    "AuditLog",
    "AuditLogMissing",
    "AuditReader",
    "AuditRecord",
    "AuditStats",
    "AuditUnavailable",
    "AuditWriteError",
    "Decision",
    "Entry",
    "Finding",
    "FindingKind",
    "Head",
    "Source",
    "Tokens",
    "Unreadable",
    "VerifyReport",
    "audit_time",
    "default_path",
    "verify",
]
