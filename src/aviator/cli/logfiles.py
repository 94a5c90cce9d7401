"""Reading replica log files: the last N lines, and what was appended since (``tail -f``).

Synchronous file I/O on purpose: callers in async code run ``LogReader.read`` in a thread.
Memory stays bounded however large a log is: reads go in chunks and only a partial last line is
held back between reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["CHUNK_BYTES", "LogReader", "tail_offset"]

CHUNK_BYTES = 64 * 1024
"""Bytes read per step, backwards when looking for the last lines and forwards when printing."""


def tail_offset(handle: BinaryIO, *, size: int, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of the file begin (``lines < 0``: 0, all of it).

    A final line without a newline counts as a line, as with ``tail -n``.
    """
    if lines < 0:
        return 0
    if lines == 0:
        return size
    seen = 0
    end = size
    while end > 0:
        start = max(0, end - CHUNK_BYTES)
        handle.seek(start)
        block = handle.read(end - start)
        idx = len(block)
        while True:
            idx = block.rfind(b"\n", 0, idx)
            if idx < 0:
                break
            if start + idx == size - 1:
                continue  # the newline ending the last line
            seen += 1
            if seen == lines:
                return start + idx + 1
        end = start
    return 0


@dataclass(slots=True)
class LogReader:
    """Hands out complete lines appended to ``path`` since the last read, prefixed with ``prefix``.

    A shrinking file (truncated or replaced) is read again from its start.
    """

    path: Path
    prefix: str = ""
    offset: int = 0
    pending: bytes = b""

    @classmethod
    def open_tail(cls, path: Path, *, lines: int, prefix: str = "") -> LogReader:
        """A reader positioned at the last ``lines`` lines; ``FileNotFoundError`` if there is no log."""
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            offset = tail_offset(handle, size=size, lines=lines)
        return cls(path=path, prefix=prefix, offset=offset)

    def read(self, *, limit: int = 16 * CHUNK_BYTES) -> tuple[list[str], bool]:
        """New complete lines (at most about ``limit`` bytes of them), and whether more remain."""
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < self.offset:
                    self.offset, self.pending = 0, b""
                if size == self.offset:
                    return [], False
                handle.seek(self.offset)
                data = handle.read(min(size - self.offset, limit))
        except FileNotFoundError:
            return [], False
        self.offset += len(data)
        parts = (self.pending + data).split(b"\n")
        self.pending = parts.pop()
        return [
            self.prefix + p.decode("utf-8", errors="replace") for p in parts
        ], self.offset < size

    def flush(self) -> list[str]:
        """The held-back last line, if the file does not end with a newline."""
        if not self.pending:
            return []
        line, self.pending = self.prefix + self.pending.decode("utf-8", errors="replace"), b""
        return [line]

    def read_all(self) -> list[str]:
        """Everything up to the current end of the file, including an unterminated last line."""
        out: list[str] = []
        more = True
        while more:
            lines, more = self.read()
            out.extend(lines)
        return out + self.flush()
