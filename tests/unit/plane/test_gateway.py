"""Reaping a gateway that a killed plane left behind."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aviator.plane.gateway import read_record, reap_leftover, write_record

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, like a gateway a killed plane left behind."""
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _wait_started(proc: subprocess.Popen[bytes]) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        if cmdline and cmdline[-1] == SLEEPER[-1].encode():
            return [part.decode() for part in cmdline]
        time.sleep(0.01)
    raise AssertionError("sleeper did not start")


async def test_a_recorded_survivor_is_stopped_and_the_record_removed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    argv = _wait_started(sleeper)
    record = tmp_path / "gateway.json"
    write_record(record, pid=sleeper.pid, argv=argv)
    assert read_record(record) == (sleeper.pid, argv)
    await reap_leftover(record, grace_s=2.0)
    assert sleeper.wait(timeout=5) == -15  # SIGTERM, not the fixture's SIGKILL
    assert not record.exists()


async def test_a_reused_pid_is_left_alone(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    _wait_started(sleeper)
    record = tmp_path / "gateway.json"
    write_record(record, pid=sleeper.pid, argv=["python", "-m", "aviator", "gateway"])
    await reap_leftover(record, grace_s=0.2)
    assert sleeper.poll() is None, "a process whose command line differs must not be signalled"
    assert not record.exists()


async def test_missing_or_corrupt_records_are_ignored(tmp_path: Path) -> None:
    await reap_leftover(tmp_path / "absent.json", grace_s=0.1)
    corrupt = tmp_path / "gateway.json"
    corrupt.write_text("{not json")
    assert read_record(corrupt) is None
    await reap_leftover(corrupt, grace_s=0.1)
