"""Process plumbing shared by the benchmarks: children that announce their URL, signals, ports.

Benchmarks run as scripts (``python bench/x.py``), so this module is imported by its bare name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

__all__ = ["Synced", "child", "cpu_seconds", "free_port", "run_forever", "until_signalled"]

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def run_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run a child's main coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class Synced:
    """A gateway feed that is synced from the start and never changes (tables filled by hand)."""

    def __init__(self) -> None:
        self.synced = asyncio.Event()
        self.synced.set()

    async def run(self) -> None:
        await asyncio.Event().wait()


@contextlib.contextmanager
def child(
    args: list[str],
    *,
    url: str | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[int, str]]:
    """Start a child process and yield (pid, URL); stop it on exit.

    Without ``url`` the child must print ``listening on URL``; with one, its output goes to
    ``log`` and the caller waits for the URL itself. ``env`` is added to the environment.
    """
    out = log.open("w") if log is not None else subprocess.PIPE
    proc = subprocess.Popen(
        args,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        if url is None:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            seen: list[str] = []
            while url is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if match := _LISTENING.search(line):
                    url = match.group(1)
            if url is None:
                raise RuntimeError(f"{args[:3]} did not start:\n{''.join(seen)}")
        yield proc.pid, url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None and not isinstance(out, int):
            out.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
