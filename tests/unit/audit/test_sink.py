"""AuditSink: records rendered and chained by a child process, the same bytes as in-process."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from aviator.api.principal import ADMIN, Principal
from aviator.audit.log import AuditClosed, AuditReader, AuditUnavailable
from aviator.audit.record import AuditRecord, Stamps, Tokens
from aviator.audit.sink import AuditSink, LocalSink, Sink

AGENT = Principal(
    kind="agent", id="spiffe://aviator.local/ns/team/agent/bot", namespace="team", name="bot"
)
MICROS = 1_795_000_000_123_456
"""A fixed time (2026-11-18), so that both sinks render the same bytes."""


def _expected(request_id: str, micros: int, **fields: object) -> bytes:
    return AuditRecord.of(
        AGENT,
        source="gateway",
        action="infer",
        resource='ModelDeployment::"team/chat"',
        decision="allow",
        policies=("policy:team/p#0",),
        reason="permitted",
        request_id=request_id,
        time=Stamps().at(micros),
        **fields,  # type: ignore[arg-type]
    ).to_json()


async def _write_some(sink: Sink) -> list[bytes]:
    """Three admitted requests and a refusal between them; what the log must then hold."""
    template = sink.template(
        AGENT,
        source="gateway",
        action="infer",
        resource='ModelDeployment::"team/chat"',
        decision="allow",
        policies=["policy:team/p#0"],
        reason="permitted",
    )
    refusal = AuditRecord.of(
        ADMIN,
        source="gateway",
        action="infer",
        resource="model:x",
        decision="deny",
        reason="no",
        request_id="r-refused",
    )
    sink.record(template, request_id="r1", micros=MICROS, tokens=(10, 2), extra={"status": 200})
    sink.append(refusal)
    sink.record(template, request_id="r2", micros=MICROS + 1, extra={"status": 499})
    sink.record(template, request_id="r3", micros=MICROS + 2_000_000, tokens=(0, 0))
    return [
        _expected("r1", MICROS, tokens=Tokens(prompt=10, completion=2), extra={"status": 200}),
        refusal.to_json(),
        _expected("r2", MICROS + 1, extra={"status": 499}),
        _expected("r3", MICROS + 2_000_000, tokens=Tokens(prompt=0, completion=0)),
    ]


@pytest.mark.parametrize("kind", ["process", "local"])
async def test_records_are_chained_in_order_with_the_canonical_bytes(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "audit.db"
    sink: Sink = await (AuditSink.start(path) if kind == "process" else LocalSink.start(path))
    expected = await _write_some(sink)
    await sink.aclose()
    reader = AuditReader(path)
    assert [e.record for e in reader.iterate()] == expected
    assert reader.verify().ok
    await sink.aclose()  # idempotent
    with pytest.raises(AuditClosed):
        sink.record(0, request_id="late", micros=MICROS)


async def test_flush_returns_once_the_records_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    sink = await AuditSink.start(path)
    try:
        expected = await _write_some(sink)
        assert sink.pending == 4
        async with asyncio.timeout(10):
            await sink.flush()
        assert [e.record for e in AuditReader(path).iterate()] == expected
        assert sink.pending == 0
    finally:
        await sink.aclose()


async def test_each_flush_covers_what_was_acknowledged_before_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    sink = await AuditSink.start(path)
    try:
        template = sink.template(
            AGENT, source="gateway", action="infer", resource="r", decision="allow"
        )
        sink.record(template, request_id="first", micros=MICROS)
        first = asyncio.create_task(sink.flush())
        await asyncio.sleep(0)  # the first flush is on its way
        sink.record(template, request_id="second", micros=MICROS + 1)
        async with asyncio.timeout(10):
            await sink.flush()  # must cover "second" too, not only wait for the first
            await first
        ids = [e.data()["request_id"] for e in AuditReader(path).iterate()]
        assert ids == ["first", "second"]
    finally:
        await sink.aclose()


async def test_a_killed_writer_is_replaced_and_the_loss_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.db"
    sink = await AuditSink.start(path)
    try:
        template = sink.template(
            AGENT, source="gateway", action="infer", resource="r", decision="allow"
        )
        sink.record(template, request_id="before", micros=MICROS)
        await sink.flush()
        process = sink._process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # No writer: nothing acknowledged now could be written, so callers are told to refuse.
        async with asyncio.timeout(10):
            while sink.pending < sink.settings.queue_bound:
                await asyncio.sleep(0.01)
        # A new writer comes (it needs the template again: the sink sends it) ...
        async with asyncio.timeout(10):
            while sink.pending >= sink.settings.queue_bound:
                await asyncio.sleep(0.01)
        sink.record(template, request_id="after", micros=MICROS + 1)
        await sink.flush()
    finally:
        await sink.aclose()
    ids = [e.data()["request_id"] for e in AuditReader(path).iterate()]
    assert ids == ["before", "after"]
    assert any("exited" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_a_log_that_cannot_be_opened_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(AuditUnavailable, match="could not open"):
        await AuditSink.start(tmp_path / "a-directory.db")


def test_the_writer_writes_what_was_sent_even_when_its_parent_is_gone(tmp_path: Path) -> None:
    """A killed gateway: nobody reads the writer's answers, and what is in the pipe still counts."""
    path = tmp_path / "audit.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "aviator.audit.writer", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    child.stdout.close()  # the parent is gone: answers have no reader
    template = orjson.dumps([0, "admin", "admin", "gateway", "infer", "r", "allow", [], ""])
    child.stdin.write(b"T" + template + b"\n")
    for n in range(50):
        child.stdin.write(b"B" + orjson.dumps([[0, f"r{n}", MICROS + n, None, None, None]]) + b"\n")
    child.stdin.close()
    assert child.wait(timeout=20) == 0
    assert [e.data()["request_id"] for e in AuditReader(path).iterate()] == [
        f"r{n}" for n in range(50)
    ]


def test_a_frame_cut_off_by_a_dying_parent_is_dropped_and_the_rest_written(
    tmp_path: Path,
) -> None:
    """A gateway killed in the middle of a write leaves the last line without its end: the
    writer logs it, writes every whole line before it and exits 0 (not a decode traceback)."""
    path = tmp_path / "audit.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "aviator.audit.writer", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    template = orjson.dumps([0, "admin", "admin", "gateway", "infer", "r", "allow", [], ""])
    child.stdin.write(b"T" + template + b"\n")
    child.stdin.write(b"B" + orjson.dumps([[0, "whole", MICROS, None, None, None]]) + b"\n")
    cut = b"B" + orjson.dumps([[0, "cut", MICROS + 1, None, None, None]])
    child.stdin.write(cut[: len(cut) // 2])
    _, err = child.communicate(timeout=20)  # closes standard input: the parent is gone
    assert child.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert "cut off" in err.decode()
    assert [e.data()["request_id"] for e in AuditReader(path).iterate()] == ["whole"]


@pytest.mark.parametrize("kind", ["process", "local"])
async def test_a_template_registered_again_keeps_its_number(tmp_path: Path, kind: str) -> None:
    """A caller's cache of template numbers may start over: the sink's templates do not grow."""
    path = tmp_path / "audit.db"
    sink: Sink = await (AuditSink.start(path) if kind == "process" else LocalSink.start(path))
    fields = {"source": "gateway", "action": "infer", "resource": "r", "decision": "allow"}
    try:
        first = sink.template(AGENT, **fields, policies=["p#0"])  # type: ignore[arg-type]
        again = sink.template(AGENT, **fields, policies=("p#0",))  # type: ignore[arg-type]
        other = sink.template(AGENT, **fields, policies=("p#1",))  # type: ignore[arg-type]
        assert again == first != other
        sink.record(again, request_id="r1", micros=MICROS)
        sink.record(other, request_id="r2", micros=MICROS)
    finally:
        await sink.aclose()
    policies = [e.data()["policies"] for e in AuditReader(path).iterate()]
    assert policies == [["p#0"], ["p#1"]]
