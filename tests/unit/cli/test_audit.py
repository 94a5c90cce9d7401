"""``aviator audit tail|export|verify`` against a real audit log file in a data directory."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
import typer
from tests.unit.audit import example
from typer.testing import CliRunner, Result

from aviator.audit import AuditLog, AuditReader, AuditRecord, Head, chain
from aviator.audit.chain import GENESIS
from aviator.cli import audit as audit_cli
from aviator.cli.context import CliContext
from aviator.settings import AuditSettings


def make_app() -> typer.Typer:
    """``audit`` under the same global ``--data-dir`` as ``aviator`` itself."""
    app = typer.Typer(name="aviator", add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def root(
        ctx: typer.Context, data_dir: Path = typer.Option(Path(".aviator"), "--data-dir")
    ) -> None:
        ctx.obj = CliContext(data_dir=data_dir)

    app.add_typer(audit_cli.app, name="audit")
    return app


def rec(i: int, decision: str = "allow") -> AuditRecord:
    return AuditRecord(
        source="gateway",
        principal="spiffe://aviator.local/ns/default/agent/bot",
        principal_kind="agent",
        action="infer",
        resource='ModelDeployment::"default/chat"',
        decision=decision,  # type: ignore[arg-type]
        policies=("bot-chat",) if decision == "allow" else (),
        reason="permitted by bot-chat" if decision == "allow" else "no policy permits",
        request_id=f"req-{i}",
        extra={"status": 200 if decision == "allow" else 403},
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db(data_dir: Path) -> Path:
    path = data_dir / "audit.db"
    with AuditLog.open(path, settings=AuditSettings(batch_interval_s=0.001)) as log:
        for i in range(1, 31):
            log.append(rec(i, "deny" if i % 10 == 0 else "allow"))
    return path


def run(data_dir: Path, args: Sequence[str]) -> Result:
    return CliRunner().invoke(make_app(), ["--data-dir", str(data_dir), "audit", *args])


def tamper(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
        conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
        conn.execute(statement)
    finally:
        conn.close()


# -- tail ----------------------------------------------------------------------------------------


def test_tail_shows_the_last_entries_as_a_table(data_dir: Path, db: Path) -> None:
    result = run(data_dir, ["tail", "-n", "3"])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == audit_cli.HEADERS
    assert [row.split()[0] for row in rows] == ["28", "29", "30"]
    assert rows[-1].split()[2:7] == [
        "gateway",
        "spiffe://aviator.local/ns/default/agent/bot",
        "infer",
        'ModelDeployment::"default/chat"',
        "deny",
    ]
    assert "<none>" in rows[-1]  # no policy decided the default deny
    assert rows[0].endswith("permitted by bot-chat")
    assert len(run(data_dir, ["tail"]).stdout.splitlines()) == 21  # 20 by default


def test_tail_json_prints_export_lines(data_dir: Path, db: Path) -> None:
    result = run(data_dir, ["tail", "-n", "2", "-o", "json"])
    assert result.exit_code == 0
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [29, 30]
    assert lines[1]["record"]["reason"] == "no policy permits"
    assert lines[1]["prev_hash"] == lines[0]["hash"]


def test_tail_follow_prints_new_entries_as_they_are_written(
    data_dir: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls = 0

    def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 1:
            with AuditLog.open(db) as log:  # another process records two decisions
                log.append(rec(31))
                log.append(rec(32, "deny"))
        elif polls == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(audit_cli, "_sleep", sleep)
    result = run(data_dir, ["tail", "-n", "1", "-f"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["SEQ", "30", "31", "32"]
    assert polls == 3


def test_tail_of_an_empty_log_prints_the_header(data_dir: Path) -> None:
    AuditLog.open(data_dir / "audit.db").close()
    result = run(data_dir, ["tail"])
    assert result.exit_code == 0
    assert result.stdout.split() == audit_cli.HEADERS


def test_a_missing_log_is_an_error_not_an_empty_one(data_dir: Path) -> None:
    for args in (["tail"], ["verify"], ["export"]):
        result = run(data_dir, args)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: no audit log at {data_dir / 'audit.db'}")
    assert not (data_dir / "audit.db").exists()  # reading never creates it


def test_bad_options_are_usage_errors(data_dir: Path, db: Path) -> None:
    assert run(data_dir, ["tail", "-o", "yaml"]).exit_code == 2
    assert run(data_dir, ["tail", "-n", "-1"]).exit_code == 2
    assert run(data_dir, ["verify", "--since", "3"]).exit_code == 2
    result = run(data_dir, ["verify", "--expect-head", "nonsense"])
    assert result.exit_code == 2
    assert "--expect-head" in result.stderr


# -- export and verify ---------------------------------------------------------------------------


def test_verify_prints_the_head_of_an_intact_log(data_dir: Path, db: Path) -> None:
    result = run(data_dir, ["verify"])
    assert result.exit_code == 0, result.output
    head = AuditReader(db).head()
    assert result.stdout.splitlines() == [
        f"OK: {db}: 30 entries (seq 1-30), chain intact",
        f"head: {head}",
    ]


def test_an_anchored_head_is_accepted_as_seq_hash_or_bare_hash(data_dir: Path, db: Path) -> None:
    head = AuditReader(db).head()
    for anchor in (str(head), head.hash, head.hash.upper()):
        result = run(data_dir, ["verify", "--expect-head", anchor])
        assert result.exit_code == 0, result.output
        assert "is in the log" in result.stdout
    result = run(data_dir, ["verify", "--expect-head", f"12:{'a' * 64}"])
    assert result.exit_code == 1
    assert "seq 12 differs from the anchored head" in result.stdout


def test_an_edited_log_on_disk_fails_verify_naming_the_seq(data_dir: Path, db: Path) -> None:
    tamper(db, "UPDATE entries SET record = json_set(record, '$.decision', 'allow') WHERE seq = 10")
    result = run(data_dir, ["verify"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"FAILED: {db}: 1 problem in 30 entries read",
        "  seq 10 was edited: its content does not match its hash",
    ]
    report = orjson.loads(run(data_dir, ["verify", "-o", "json"]).stdout)
    assert report["ok"] is False
    assert report["findings"] == [
        {
            "kind": "edited",
            "seq": 10,
            "last_seq": None,
            "position": 10,
            "message": "seq 10 was edited: its content does not match its hash",
        }
    ]


def test_the_installed_command_catches_an_edit_on_disk(tmp_path: Path, db: Path) -> None:
    """The same through the real ``aviator`` entry point, as an operator would run it."""
    tamper(db, "DELETE FROM entries WHERE seq = 17")
    result = subprocess.run(
        [sys.executable, "-m", "aviator", "--data-dir", str(db.parent), "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "seq 17 is missing (deleted)" in result.stdout


def test_export_writes_json_lines_that_verify_as_a_file(data_dir: Path, db: Path) -> None:
    out = data_dir / "audit.jsonl"
    result = run(data_dir, ["export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    head = AuditReader(db).head()
    assert result.stderr == f"exported 30 entries to {out}; the log's head is {head}\n"
    lines = out.read_bytes().splitlines()
    assert len(lines) == 30
    assert orjson.loads(lines[0])["seq"] == 1
    result = run(data_dir, ["verify", "--file", str(out), "--expect-head", str(head)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"OK: {out}: 30 entries (seq 1-30), chain intact"


def test_export_to_stdout_and_a_partial_export(data_dir: Path, db: Path) -> None:
    result = run(data_dir, ["export", "--since", "25"])
    assert result.exit_code == 0
    assert [orjson.loads(line)["seq"] for line in result.stdout.splitlines()] == list(range(26, 31))
    part = data_dir / "part.jsonl"
    part.write_text(result.stdout)
    assert run(data_dir, ["verify", "--file", str(part)]).exit_code == 1  # seqs 1-25 missing
    assert run(data_dir, ["verify", "--file", str(part), "--since", "25"]).exit_code == 0


def test_an_export_edited_by_hand_fails_naming_the_line(data_dir: Path, db: Path) -> None:
    out = data_dir / "audit.jsonl"
    run(data_dir, ["export", "-o", str(out)])
    lines = out.read_text().splitlines()
    lines[4] = lines[4].replace('"decision":"allow"', '"decision":"deny"')
    lines[6], lines[7] = lines[7], lines[6]
    lines[20] = "{not json"
    del lines[25]
    out.write_text("\n".join(lines) + "\n")
    result = run(data_dir, ["verify", "--file", str(out)])
    assert result.exit_code == 1
    problems = result.stdout.splitlines()[1:]
    assert problems[:2] == [
        "  seq 5 was edited: its content does not match its hash",
        "  seq 8 is out of order: the entry at line 7, after seq 6",
    ]
    assert problems[2].startswith(
        "  seq 21 was edited: the entry at line 21 is not an entry (not JSON"
    )
    assert problems[3:] == ["  seq 26 is missing (deleted)"]


def test_verify_of_a_missing_file(data_dir: Path) -> None:
    result = run(data_dir, ["verify", "--file", str(data_dir / "nope.jsonl")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no such file")


def test_parse_expect() -> None:
    assert audit_cli.parse_expect(f"3:{'a' * 64}") == Head(3, "a" * 64)
    assert audit_cli.parse_expect(GENESIS) == GENESIS
    with pytest.raises(ValueError, match="64-hex-digit"):
        audit_cli.parse_expect("abc")


# -- the governance guide ------------------------------------------------------------------------

GUIDE = Path(__file__).parents[3] / "docs" / "governance.md"


def guide_section() -> str:
    text = GUIDE.read_text()
    start = text.index("\n## Audit\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def assert_shown(output: str, section: str) -> None:
    lines = set(section.splitlines())
    for line in output.splitlines():
        assert line in lines, f"not in the guide: {line!r}"


def test_the_governance_guide_shows_real_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = guide_section()
    monkeypatch.chdir(tmp_path)
    data_dir = Path(".aviator")
    db = data_dir / "audit.db"
    example.write(db)

    tail_out = run(data_dir, ["tail"])
    assert tail_out.exit_code == 0
    assert len(tail_out.stdout.splitlines()) == 5
    assert_shown(tail_out.stdout, section)
    intact = run(data_dir, ["verify"])
    assert intact.exit_code == 0
    assert_shown(intact.stdout, section)
    anchor = AuditReader(db).head()
    assert f"aviator audit verify --expect-head {anchor}" in section

    exported = run(data_dir, ["export", "-o", "audit.jsonl"])
    assert exported.exit_code == 0
    assert_shown(exported.stderr, section)
    shown = section[section.index("```json\n") + 8 :]
    shown = shown[: shown.index("```")]
    assert orjson.loads(shown) == orjson.loads(Path("audit.jsonl").read_text().splitlines()[1])
    good_file = run(data_dir, ["verify", "--file", "audit.jsonl"])
    assert good_file.exit_code == 0
    assert_shown(good_file.stdout, section)
    lines = Path("audit.jsonl").read_text().splitlines(keepends=True)
    Path("audit.jsonl").write_text("".join(lines[:1] + lines[2:]))  # sed -i 2d
    bad_file = run(data_dir, ["verify", "--file", "audit.jsonl"])
    assert bad_file.exit_code == 1
    assert_shown(bad_file.stdout, section)

    statement = "UPDATE entries SET record = json_set(record, '$.decision', 'allow') WHERE seq = 3"
    assert statement in section
    tamper(db, statement)
    edited = run(data_dir, ["verify"])
    assert edited.exit_code == 1
    assert_shown(edited.stdout, section)

    # The whole chain rewritten from seq 3 on, head included: only the anchor tells.
    rewritten = Path("rewritten")
    example.write(rewritten / "audit.db")
    entries = list(AuditReader(rewritten / "audit.db").iterate())
    records = [e.record for e in entries]
    records[2] = records[2].replace(b'"decision":"deny"', b'"decision":"allow"')
    forged = chain.build(records)
    conn = sqlite3.connect(rewritten / "audit.db", isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_delete")
    conn.execute("DELETE FROM entries")
    conn.executemany(
        "INSERT INTO entries VALUES (?, ?, ?, ?)",
        [(e.seq, e.prev_hash, e.hash, e.record.decode()) for e in forged],
    )
    conn.execute("UPDATE head SET seq = ?, hash = ?", (forged[-1].seq, forged[-1].hash))
    conn.close()
    assert run(rewritten, ["verify"]).exit_code == 0
    caught = run(rewritten, ["verify", "--expect-head", str(anchor)])
    assert caught.exit_code == 1
    assert_shown(caught.stdout.replace("rewritten/audit.db", ".aviator/audit.db"), section)


def test_a_record_that_is_not_json_any_more_shows_as_unreadable(data_dir: Path, db: Path) -> None:
    tamper(db, "UPDATE entries SET record = 'gone' WHERE seq = 30")
    result = run(data_dir, ["tail", "-n", "1"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].split()[:2] == ["30", "<unreadable>"]
    assert run(data_dir, ["tail", "-n", "1", "-o", "json"]).exit_code == 0
    verdict = run(data_dir, ["verify"])
    assert verdict.exit_code == 1
    assert "seq 30 was edited" in verdict.stdout
