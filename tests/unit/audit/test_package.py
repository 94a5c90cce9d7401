"""The public surface of aviator.audit: what the Control API and the gateway wire in."""

from __future__ import annotations

import aviator.audit


def test_exported_members() -> None:
    assert aviator.audit.__all__ == sorted(
        aviator.audit.__all__, key=lambda n: (not n.isupper(), n)
    )
    assert set(aviator.audit.__all__) == {
        "FILENAME", "GENESIS", "AuditClosed", "AuditError", "AuditLog", "AuditLogMissing",
        "AuditReader", "AuditRecord", "AuditStats", "AuditUnavailable", "AuditWriteError",
        "Decision", "Entry", "Finding", "FindingKind", "Head", "Source", "Tokens", "Unreadable",
        "VerifyReport", "audit_time", "default_path", "verify",
    }  # fmt: skip
    for name in aviator.audit.__all__:
        assert hasattr(aviator.audit, name)
