"""Supervision of the gateway process: start it, restart it with backoff if it dies, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from aviator.runtime.processes import read_cmdline, reserve_port

log = logging.getLogger("aviator.plane.gateway")

HEALTHY_RESET_S = 60.0
"""A gateway that ran this long without dying has its restart backoff reset."""


class GatewayProcess:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        control_url: str | None,
        token_file: Path,
        audit_file: Path,
        log_file: Path,
        record: Path,
        stop_grace_s: float = 5.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        workers: int = 1,
        identity_config: Path | None = None,
    ) -> None:
        """``port`` 0: a free port, reserved here (``reserve_port``) for as long as this
        supervises the gateway, restarts included; ``port`` is then the one reserved once
        ``start`` returns. ``workers`` > 1 runs the gateway as that many processes sharing the port
        (``aviator gateway --workers``). Callers authenticate with agent tokens (or the admin
        token ``token_file``, which the gateway also watches with); every decision goes to the
        audit log ``audit_file``, which the plane writes too. ``identity_config``: the plane's
        own identity configuration file, so that the gateway accepts the same issuers' tokens in
        the same trust domain (read again by every gateway start).

        ``control_url`` None: the Control API does not listen yet. The gateway is started anyway
        (``--control-url-from-stdin``) and imports its server stack, most of its start, while
        the plane starts; ``set_control_url`` hands it the URL, and only then does it begin."""
        self.host = host
        self.port = port
        self._reserved: socket.socket | None = None
        self._control_url = control_url
        self._options = [
            "--token-file",
            str(token_file),
            "--audit-file",
            str(audit_file),
            # A plane killed with -9 cannot stop its gateway; the gateway then stops by itself.
            "--exit-with-parent",
        ]
        if workers > 1:
            self._options += ["--workers", str(workers)]
        if identity_config is not None:
            self._options += ["--identity-config", str(identity_config)]
        self._log_file = log_file
        self._record = record
        self._stop_grace_s = stop_grace_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    def _argv(self) -> list[str]:
        url = self._control_url
        control = ["--control-url-from-stdin"] if url is None else ["--control-url", url]
        return [
            sys.executable,
            "-m",
            "aviator",
            "gateway",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *control,
            *self._options,
        ]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        await reap_leftover(self._record, grace_s=self._stop_grace_s)
        if self.port == 0 and self._reserved is None:
            # Picked and held here, not picked and let go: between a free port's pick and the
            # gateway's bind (its start-up, a second or more) anyone could take it.
            self._reserved = reserve_port(self.host, 0)
            self.port = self._reserved.getsockname()[1]
            self._options.append("--reuse-port")
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="gateway supervisor")

    async def set_control_url(self, url: str) -> None:
        """Give the URL of the Control API, now listening, to a gateway started without it (and
        to every restart from here on)."""
        self._control_url = url
        process = self._process
        if process is None or process.stdin is None:
            return
        # A gateway that died meanwhile is restarted by the supervisor, with the URL.
        with contextlib.suppress(ConnectionError):
            process.stdin.write(f"{url}\n".encode())
            await process.stdin.drain()
        process.stdin.close()

    async def wait_ready(self, *, timeout: float) -> None:
        """Poll the gateway's /health until it answers 200 (discovery synced) or time runs out."""
        import aiohttp  # here, not at the top: the plane starts the gateway before importing it

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise TimeoutError(
            f"gateway did not become healthy within {timeout:.0f}s; see {self._log_file}"
        )

    async def _spawn(self) -> None:
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self._argv()
        waiting = self._control_url is None
        with self._log_file.open("ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if waiting else asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        write_record(self._record, pid=self._process.pid, argv=argv)
        log.info("gateway started (pid %d) on %s", self._process.pid, self.url)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            assert self._process is not None
            started = time.monotonic()
            code = await self._process.wait()
            if self._stopping:
                return
            failures = 0 if time.monotonic() - started > HEALTHY_RESET_S else failures + 1
            delay = (
                min(self._backoff_max_s, self._backoff_base_s * 2 ** (failures - 1))
                if failures
                else 0.0
            )
            log.warning(
                "gateway exited with %s; restarting in %.1fs (log: %s)", code, delay, self._log_file
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=self._stop_grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        remove_record(self._record)


def write_record(path: Path, *, pid: int, argv: list[str]) -> None:
    """Remember the gateway process, so a plane restarted after a crash can stop a survivor."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": pid, "argv": argv}))
    os.replace(tmp, path)


async def reap_leftover(path: Path, *, grace_s: float) -> None:
    """Stop a gateway an earlier plane started and could not stop (it was killed).

    Only a process whose command line is exactly the recorded one is signalled: a pid reused by
    something else is left alone.
    """
    found = read_record(path)
    if found is None:
        return
    pid, argv = found
    if read_cmdline(pid) == argv:
        log.warning("stopping gateway pid %d left running by an earlier plane", pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while read_cmdline(pid) == argv and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if read_cmdline(pid) == argv:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    remove_record(path)


def read_record(path: Path) -> tuple[int, list[str]] | None:
    try:
        record = json.loads(path.read_text())
        return int(record["pid"]), [str(arg) for arg in record["argv"]]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def remove_record(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
