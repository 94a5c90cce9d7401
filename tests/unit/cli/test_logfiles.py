"""Log files: the last N lines, and incremental reads as a follower sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from aviator.cli import logfiles
from aviator.cli.logfiles import LogReader


@pytest.mark.parametrize(
    ("text", "lines", "expected"),
    [
        ("a\nb\nc\n", -1, "a\nb\nc\n"),
        ("a\nb\nc\n", 0, ""),
        ("a\nb\nc\n", 2, "b\nc\n"),
        ("a\nb\nc\n", 3, "a\nb\nc\n"),
        ("a\nb\nc\n", 10, "a\nb\nc\n"),
        ("a\nb\nc", 1, "c"),
        ("a\nb\nc", 2, "b\nc"),
        ("", 5, ""),
        ("\n\n", 1, "\n"),
    ],
)
def test_tail_offset(tmp_path: Path, text: str, lines: int, expected: str) -> None:
    path = tmp_path / "x.log"
    path.write_text(text)
    with path.open("rb") as handle:
        offset = logfiles.tail_offset(handle, size=len(text), lines=lines)
    assert text[offset:] == expected


def test_tail_offset_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfiles, "CHUNK_BYTES", 7)
    text = "".join(f"line {i}\n" for i in range(50))
    path = tmp_path / "x.log"
    path.write_text(text)
    reader = LogReader.open_tail(path, lines=3)
    assert reader.read_all() == ["line 47", "line 48", "line 49"]


def test_reader_follows_appends_partial_lines_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("one\ntw")
    reader = LogReader.open_tail(path, lines=-1, prefix="[r] ")
    assert reader.read() == (["[r] one"], False)
    assert reader.read() == ([], False)
    with path.open("a") as handle:
        handle.write("o\nthree\n")
    assert reader.read() == (["[r] two", "[r] three"], False)
    path.write_text("new\n")  # truncated and rewritten (a restarted engine)
    assert reader.read() == (["[r] new"], False)
    path.unlink()
    assert reader.read() == ([], False)


def test_reader_reads_in_bounded_steps(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"x" * 10 + b"\n" + b"y" * 10 + b"\n")
    reader = LogReader(path=path)
    assert reader.read(limit=12) == (["x" * 10], True)
    assert reader.read(limit=12) == (["y" * 10], False)


def test_reader_replaces_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"ok \xff\n")
    assert LogReader(path=path).read_all() == ["ok \ufffd"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LogReader.open_tail(tmp_path / "none.log", lines=10)
