"""Run records: atomic round trip, garbage is dropped, never the environment."""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import pytest

from aviator.runtime.records import RecordDir, RunRecord

RECORD = RunRecord(
    namespace="default",
    name="chat-abc-0",
    engine="sim",
    pid=1234,
    pgid=1234,
    port=40123,
    argv=("python", "-m", "aviator", "sim"),
    started_at=datetime(2026, 11, 27, 9, 0, 1, 500, tzinfo=UTC),
    template_hash="5d8f1",
    plane_instance="abc",
    restarts=2,
    ready=True,
)


def test_round_trip(tmp_path):
    records = RecordDir(tmp_path / "run")
    records.ensure()
    records.write(RECORD)
    path = records.path_for("default", "chat-abc-0")
    assert path.name == "default__chat-abc-0.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(records.path.stat().st_mode) == 0o700
    assert records.read("default", "chat-abc-0") == RECORD
    assert records.load_all() == [RECORD]
    assert [p.name for p in records.path.iterdir()] == [path.name]  # no temporary left
    records.remove("default", "chat-abc-0")
    records.remove("default", "chat-abc-0")
    assert records.read("default", "chat-abc-0") is None


def test_load_all_drops_garbage(tmp_path):
    records = RecordDir(tmp_path / "run")
    records.ensure()
    records.write(RECORD)
    (records.path / "default__broken.json").write_text("{not json")
    (records.path / "default__old.json").write_text('{"version": 0}')
    (records.path / "default__x.json.tmp").write_text("half")
    (records.path / "default__misnamed.json").write_bytes(RECORD.to_json())
    (records.path / ".lock").write_text("")
    assert records.load_all() == [RECORD]
    assert sorted(p.name for p in records.path.iterdir()) == [".lock", "default__chat-abc-0.json"]


def test_load_all_without_directory(tmp_path):
    assert RecordDir(tmp_path / "missing").load_all() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"version": 1}',
        b'{"version": 1, "namespace": "a", "name": "b", "engine": "sim", "pid": -1, "pgid": 1,'
        b' "port": 1, "argv": [], "startedAt": "2026-01-01T00:00:00+00:00", "templateHash": "",'
        b' "planeInstance": ""}',
        b'{"version": 1, "namespace": "a", "name": "b", "engine": "sim", "pid": 1, "pgid": 1,'
        b' "port": 1, "argv": "python", "startedAt": "2026-01-01T00:00:00+00:00",'
        b' "templateHash": "", "planeInstance": ""}',
        b"[]",
    ],
)
def test_from_json_rejects_malformed(body):
    with pytest.raises(ValueError, match="record"):
        RunRecord.from_json(body)
