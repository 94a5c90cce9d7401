"""``AuditLog`` on a real SQLite file: batching off the caller's path, flush and close losing
nothing, backpressure instead of loss, several processes appending to one chain, and tampering
on disk caught by ``verify``."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from aviator.audit import chain
from aviator.audit.chain import Entry
from aviator.audit.log import (
    AuditClosed,
    AuditLog,
    AuditLogMissing,
    AuditReader,
    AuditUnavailable,
    AuditWriteError,
    default_path,
)
from aviator.settings import AuditSettings

from .helpers import record

FAST = AuditSettings(batch_interval_s=0.005)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return default_path(tmp_path / "data")


@pytest.fixture
def log(path: Path) -> Iterator[AuditLog]:
    opened = AuditLog.open(path, settings=FAST)
    yield opened
    opened.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def tamper(path: Path, *statements: str) -> None:
    """What someone with the file and the sqlite3 shell can do (triggers dropped first)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
        conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def test_the_default_file_is_audit_db_in_the_data_dir(tmp_path: Path) -> None:
    assert default_path(tmp_path) == tmp_path / "audit.db"


def test_appended_records_become_a_verified_chain(log: AuditLog, path: Path) -> None:
    for i in range(10):
        log.append(record(i))
    log.flush()
    tail = log.tail(3)
    assert [e.seq for e in tail] == [8, 9, 10]
    assert [e.audit_record() for e in tail] == [record(7), record(8), record(9)]
    assert log.head() == tail[-1].head
    report = log.verify()
    assert report.ok
    assert report.head == tail[-1].head
    assert [e.seq for e in log.iterate(since_seq=7)] == [8, 9, 10]
    assert len(list(log.iterate())) == 10
    assert log.tail(0) == []
    assert AuditReader(path).verify().ok


def test_append_returns_before_the_disk_and_a_batch_waits_for_its_interval(path: Path) -> None:
    with AuditLog.open(path, settings=AuditSettings(batch_interval_s=0.3)) as log:
        started = time.perf_counter()
        for i in range(3):
            log.append(record(i))
        assert time.perf_counter() - started < 0.1
        assert log.stats.written == 0  # still inside the batching interval
        wait_for(lambda: log.stats.written == 3)
        stats = log.stats
        assert (stats.appended, stats.pending, stats.batches) == (3, 0, 1)


def test_a_full_batch_is_written_without_waiting_for_the_interval(path: Path) -> None:
    with AuditLog.open(path, settings=AuditSettings(batch_interval_s=30, max_batch=5)) as log:
        for i in range(12):
            log.append(record(i))
        wait_for(lambda: log.stats.written == 10)
        assert log.stats.batches == 2
        assert log.stats.pending == 2
        started = time.monotonic()
        log.flush()  # does not wait out the 30 s interval
        assert time.monotonic() - started < 2
        assert log.stats.written == 12


def test_close_writes_everything_acknowledged(path: Path) -> None:
    log = AuditLog.open(path, settings=AuditSettings(batch_interval_s=30, max_batch=700))
    for i in range(5_000):
        log.append(record(i))
    log.close()
    log.close()  # idempotent
    with pytest.raises(AuditClosed):
        log.append(record(0))
    report = AuditReader(path).verify()
    assert report.ok
    assert report.head.seq == 5_000
    request_ids = [orjson.loads(e.record)["request_id"] for e in AuditReader(path).iterate()]
    assert request_ids == [f"req-{i}" for i in range(5_000)]


def test_a_reopened_log_continues_the_chain(path: Path) -> None:
    with AuditLog.open(path, settings=FAST) as log:
        log.append(record(1))
    with AuditLog.open(path, settings=FAST) as log:
        log.append(record(2))
        log.flush()
        assert [e.seq for e in log.tail(5)] == [1, 2]
        assert log.verify().ok


async def test_flush_and_close_have_async_forms_that_spare_the_loop(path: Path) -> None:
    log = AuditLog.open(path, settings=AuditSettings(batch_interval_s=30))
    log.append(record(1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await log.aflush()
    assert log.stats.written == 1
    log.append(record(2))
    await log.aclose()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ticks > 0
    assert AuditReader(path).head().seq == 2


def test_a_full_queue_blocks_append_then_refuses_never_drops(path: Path) -> None:
    settings = AuditSettings(batch_interval_s=0.001, max_batch=4, queue_bound=4, full_timeout_s=0.2)
    log = AuditLog.open(path, settings=settings)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    acknowledged = 0

    def append_until_refused() -> None:
        nonlocal acknowledged
        for i in range(100):
            log.append(record(i))
            acknowledged += 1

    try:
        with pytest.raises(AuditUnavailable, match="was not recorded"):
            append_until_refused()
        assert 4 <= acknowledged <= 8  # the queue, plus at most one batch in the writer's hands
        assert log.stats.blocked >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    log.close()
    assert AuditReader(path).head().seq == acknowledged
    assert AuditReader(path).verify().ok


def test_blocked_appenders_resume_when_room_frees_up(path: Path) -> None:
    settings = AuditSettings(batch_interval_s=0.001, max_batch=2, queue_bound=2, full_timeout_s=10)
    log = AuditLog.open(path, settings=settings)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        for i in range(20):
            log.append(record(i))
    finally:
        release.join()
        blocker.close()
    log.close()
    assert log.stats.blocked >= 1
    assert AuditReader(path).head().seq == 20


def test_failed_writes_are_retried_and_reported_not_skipped(path: Path) -> None:
    log = AuditLog.open(path, settings=FAST)
    log.append(record(0))
    log.flush()
    tamper(path, "ALTER TABLE entries RENAME TO gone")
    log.append(record(1))
    with pytest.raises(AuditWriteError, match="1 acknowledged audit record"):
        log.flush(timeout=0.3)
    stats = log.stats
    assert stats.write_errors >= 1
    assert stats.last_error is not None
    assert "no such table" in stats.last_error
    assert stats.pending == 1
    tamper(path, "ALTER TABLE gone RENAME TO entries")
    log.flush(timeout=5)
    assert log.stats.last_error is None
    log.close()
    assert AuditReader(path).verify().ok


def test_close_with_a_deadline_says_how_many_records_it_could_not_write(path: Path) -> None:
    log = AuditLog.open(path, settings=FAST)
    log.append(record(0))
    log.flush()
    tamper(path, "ALTER TABLE entries RENAME TO gone")
    for i in range(3):
        log.append(record(i))
    with pytest.raises(AuditWriteError, match="3 acknowledged audit record"):
        log.close(timeout=0.3)


_APPENDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from aviator.audit import AuditLog, AuditRecord
    from aviator.settings import AuditSettings

    path, tag, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    log = AuditLog.open(path, settings=AuditSettings(batch_interval_s=0.001, max_batch=16))
    for i in range(count):
        log.append(AuditRecord(source=tag, principal="admin", principal_kind="admin",
                               action="infer", resource="default/chat", decision="allow",
                               request_id=f"{tag}-{i}"))
    log.close()
    """
)


def test_two_processes_and_this_one_append_to_one_valid_chain(path: Path) -> None:
    count = 1_500
    children = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), tag, str(count)])
        for tag in ("gateway", "controlapi")
    ]
    with AuditLog.open(path, settings=AuditSettings(batch_interval_s=0.001, max_batch=8)) as log:
        for i in range(count):
            log.append(record(i, source="plane", request_id=f"plane-{i}"))
    assert [child.wait(timeout=60) for child in children] == [0, 0]

    report = AuditReader(path).verify()
    assert report.ok, [f.message for f in report.findings]
    assert report.head.seq == 3 * count
    ids = [orjson.loads(e.record)["request_id"] for e in AuditReader(path).iterate()]
    for tag in ("gateway", "controlapi", "plane"):
        mine = [i for i in ids if i.startswith(f"{tag}-")]
        assert mine == [f"{tag}-{i}" for i in range(count)]  # none lost, in append order


def test_a_process_that_exits_without_close_still_writes_what_it_acknowledged(
    path: Path,
) -> None:
    script = _APPENDER.replace("log.close()", "")
    subprocess.run(
        [sys.executable, "-c", script, str(path), "plane", "100"], check=True, timeout=60
    )
    assert AuditReader(path).head().seq == 100
    assert AuditReader(path).verify().ok


def test_the_file_refuses_updates_and_deletes_of_entries(log: AuditLog, path: Path) -> None:
    log.append(record(1))
    log.flush()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE entries SET record = '{}' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM entries")
    finally:
        conn.close()


@pytest.fixture
def written(path: Path) -> Path:
    with AuditLog.open(path, settings=FAST) as log:
        for i in range(10):
            log.append(record(i))
    return path


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            ["UPDATE entries SET record = json_set(record, '$.decision', 'allow') WHERE seq = 5"],
            [("edited", 5)],
        ),
        (["UPDATE entries SET hash = prev_hash WHERE seq = 10"], [("edited", 10)]),
        (["UPDATE entries SET record = CAST(x'ff7b7d' AS TEXT) WHERE seq = 2"], [("edited", 2)]),
        (
            ["UPDATE entries SET record = CAST(record AS BLOB) || x'20' WHERE seq = 3"],
            [("edited", 3)],
        ),
        (["DELETE FROM entries WHERE seq = 4"], [("deleted", 4)]),
        (["DELETE FROM entries WHERE seq > 7"], [("truncated", 8)]),
        (
            [
                "UPDATE entries SET seq = -3 WHERE seq = 3",
                "UPDATE entries SET seq = 3 WHERE seq = 6",
                "UPDATE entries SET seq = 6 WHERE seq = -3",
            ],
            [("reordered", 3), ("reordered", 6)],
        ),
        (
            ["INSERT INTO entries SELECT 11, prev_hash, hash, record FROM entries WHERE seq = 2"],
            [("inserted", 2)],
        ),
        (["UPDATE head SET seq = 9"], [("head", 9)]),
        (["DELETE FROM head"], [("head", None)]),
    ],
)
def test_tampering_on_disk_is_caught_and_named(
    written: Path, statements: list[str], expected: list[tuple[str, int | None]]
) -> None:
    assert AuditReader(written).verify().ok
    tamper(written, *statements)
    report = AuditReader(written).verify()
    assert [(f.kind, f.seq) for f in report.findings] == expected


def test_a_truncation_that_also_rewrites_the_head_needs_an_anchor(written: Path) -> None:
    anchor = AuditReader(written).verify().head
    tamper(
        written,
        "DELETE FROM entries WHERE seq > 7",
        "UPDATE head SET seq = 7, hash = (SELECT hash FROM entries WHERE seq = 7)",
    )
    assert AuditReader(written).verify().ok
    report = AuditReader(written).verify(expect=anchor)
    assert [(f.kind, f.seq, f.last_seq) for f in report.findings] == [("truncated", 8, 10)]


def test_an_export_is_json_lines_that_verify_on_their_own(written: Path) -> None:
    reader = AuditReader(written)
    out = io.BytesIO()
    assert reader.export(out) == 10
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert orjson.loads(lines[0])["record"]["request_id"] == "req-0"
    exported = [Entry.from_json(line) for line in lines]
    assert exported == list(reader.iterate())
    assert chain.verify(exported, expect=reader.head()).ok
    part = io.BytesIO()
    assert reader.export(part, since_seq=6) == 4
    tail = [Entry.from_json(line) for line in part.getvalue().splitlines()]
    assert chain.verify(tail, first_seq=7, expect=exported[5].head).ok


def test_reading_a_missing_log_says_so(tmp_path: Path) -> None:
    with pytest.raises(AuditLogMissing, match="no audit log at"):
        AuditReader(tmp_path / "audit.db").verify()
    assert not (tmp_path / "audit.db").exists()


def test_settings_are_checked(path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        AuditLog.open(path, settings=AuditSettings(queue_bound=0))
