"""The audit log of the governance guide's example (docs/governance.md, "Audit"): four fixed
decisions, so that the hashes and the output the guide shows are reproducible and tested."""

from __future__ import annotations

from pathlib import Path

from aviator.api.principal import ADMIN, Principal
from aviator.audit import AuditLog, AuditRecord, Tokens

BOT = Principal(
    kind="agent",
    id="spiffe://aviator.local/ns/support/agent/support-bot",
    namespace="support",
    name="support-bot",
)

RECORDS = (
    AuditRecord.of(
        ADMIN, source="controlapi", action="create", resource='ModelDeployment::"support/chat"',
        decision="allow", policies=["admins"], reason="permitted by admins",
        request_id="c-01", extra={"status": 201}, time="2026-11-27T09:00:00.000000Z",
    ),
    AuditRecord.of(
        BOT, source="gateway", action="infer", resource='ModelDeployment::"support/chat"',
        decision="allow", policies=["support-bot-chat"], reason="permitted by support-bot-chat",
        request_id="g-7f3e", tokens=Tokens(prompt=412, completion=96),
        extra={"status": 200}, time="2026-11-27T09:00:01.250000Z",
    ),
    AuditRecord.of(
        BOT, source="gateway", action="infer", resource='ModelDeployment::"support/embed"',
        decision="deny", reason="no policy permits", request_id="g-7f41",
        extra={"status": 403}, time="2026-11-27T09:00:02.500000Z",
    ),
    AuditRecord.of(
        BOT, source="controlapi", action="approve", resource='Grant::"support/g-12"',
        decision="deny", policies=["no-self-approval"],
        reason="a requester cannot approve its own grant", request_id="c-02",
        extra={"status": 403}, time="2026-11-27T09:00:03.750000Z",
    ),
)  # fmt: skip


def write(path: Path) -> None:
    with AuditLog.open(path) as log:
        for record in RECORDS:
            log.append(record)
