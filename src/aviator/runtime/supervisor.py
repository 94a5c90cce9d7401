"""One replica's supervisor task: launch, probe, restart with backoff, stop.

All state changes happen on the event loop and are reported through ``notify`` right away;
``ProcessState`` is replaced, never mutated, so readers always see a consistent snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from aviator.api.errors import Invalid
from aviator.api.meta import format_time, now_utc
from aviator.api.replica import Replica
from aviator.runtime.engines.base import LOOPBACK, EngineAdapter
from aviator.runtime.probe import SharedProbe, probe
from aviator.runtime.processes import (
    ProcessHandle,
    child_env,
    free_port,
    port_taken,
    spawn,
    terminate,
)
from aviator.runtime.records import RECORD_ENV, RecordDir, RunRecord
from aviator.runtime.state import ExitInfo, ProcessState
from aviator.settings import RuntimeSettings

__all__ = ["Instance", "Supervisor", "SupervisorContext", "fingerprint"]

logger = logging.getLogger(__name__)

HEALTHY_RESET_S = 60.0
"""Ready this long without interruption, a process earns a fresh backoff: its next crash
restarts after ``restart_backoff_base_s`` again."""
PORT_RACE_RETRIES = 3
"""Immediate relaunches on a new port when the engine died because someone took its port
between our pick and its bind; beyond that, exits count as crashes."""


@dataclass(frozen=True, slots=True)
class SupervisorContext:
    """What every supervisor of one runtime shares."""

    settings: RuntimeSettings
    session: aiohttp.ClientSession
    external_probes: SharedProbe
    records: RecordDir
    logs_dir: Path
    instance_id: str
    base_env: Mapping[str, str]
    notify: Callable[[str, str], None]

    def log_path(self, namespace: str, name: str) -> Path:
        return self.logs_dir / namespace / f"{name}.log"


@dataclass(slots=True)
class Instance:
    """One launched or adopted engine process."""

    handle: ProcessHandle
    port: int
    argv: tuple[str, ...]
    started_at: datetime
    started_mono: float
    """``time.monotonic()`` at launch (back-dated for adopted processes)."""
    ever_ready: bool


def fingerprint(replica: Replica, adapter: EngineAdapter) -> tuple[object, ...]:
    """Everything that, when changed, means the running process must be replaced."""
    argv = adapter.argv(replica, host=LOOPBACK, port=0)
    try:
        endpoint = adapter.endpoint(replica, 0)
    except Invalid:
        endpoint = ""
    env = {**adapter.env(replica), **replica.spec.env}
    return (
        adapter.name,
        replica.spec.template_hash,
        None if argv is None else tuple(argv),
        endpoint,
        tuple(sorted(env.items())),
    )


class Supervisor:
    def __init__(self, *, replica: Replica, adapter: EngineAdapter, ctx: SupervisorContext) -> None:
        self.namespace = replica.namespace
        self.name = replica.name
        self.replica = replica
        self.adapter = adapter
        self.fingerprint = fingerprint(replica, adapter)
        self.state = ProcessState(phase="Pending")
        self._ctx = ctx
        self._instance: Instance | None = None
        self._task: asyncio.Task[None] | None = None
        self._launched = asyncio.Event()
        self._failures = 0
        self._last_warning = ""

    @property
    def log_path(self) -> Path:
        return self._ctx.log_path(self.namespace, self.name)

    @property
    def finished(self) -> bool:
        """True when the task ended on its own (bad spec, or a bug that was logged)."""
        return self._task is not None and self._task.done()

    def start(self, adopted: Instance | None = None, *, restarts: int = 0) -> None:
        """Begin supervising; with ``adopted``, carry on with that process instead of launching."""
        if adopted is not None:
            self._instance = adopted
            ready = adopted.ever_ready
            self._update(
                phase="Running" if ready else "Starting",
                ready=ready,
                endpoint=self.adapter.endpoint(self.replica, adopted.port),
                pid=adopted.handle.pid,
                port=adopted.port,
                restarts=restarts,
                started_at=adopted.started_at,
                message="" if ready else "waiting for the readiness probe",
            )
            self._launched.set()
        self._task = asyncio.create_task(
            self._run(adopted), name=f"runtime:{self.namespace}/{self.name}"
        )

    async def launched(self) -> None:
        """Return once the first launch was attempted (so ``state`` shows a pid or a reason)."""
        await self._launched.wait()

    async def stop(self) -> bool:
        """Stop supervising and terminate the process; False if it would not die."""
        self._update(phase="Terminating", ready=False, message="stopping")
        await self._cancel_task()
        instance, self._instance = self._instance, None
        if instance is None:
            return True
        info = await terminate(instance.handle, grace=self._ctx.settings.stop_grace_s)
        instance.handle.close()
        if info is None:
            return False
        self._banner(f"stopped pid {instance.handle.pid} ({info.describe()})")
        logger.info("%s/%s: stopped pid %d", self.namespace, self.name, instance.handle.pid)
        self._ctx.records.remove(self.namespace, self.name)
        return True

    async def detach(self) -> None:
        """Stop supervising but leave the process running, its record in place for adoption."""
        await self._cancel_task()
        instance, self._instance = self._instance, None
        if instance is not None:
            instance.handle.close()

    # -- the task ---------------------------------------------------------------------------

    async def _run(self, adopted: Instance | None) -> None:
        try:
            if self.adapter.argv(self.replica, host=LOOPBACK, port=0) is None:
                await self._run_external()
            else:
                await self._run_process(adopted)
        except Invalid as exc:
            self._update(phase="Failed", ready=False, message=exc.message)
        except Exception:
            logger.exception("%s/%s: supervisor crashed", self.namespace, self.name)
            self._update(
                phase="Failed", ready=False, message="internal error in the runtime (see plane log)"
            )
        finally:
            self._launched.set()

    async def _run_external(self) -> None:
        settings = self._ctx.settings
        endpoint = self.adapter.endpoint(self.replica, None)
        url = endpoint + self.adapter.health_path
        self._update(phase="Starting", endpoint=endpoint, message="probing the external endpoint")
        self._launched.set()
        while True:
            problem = await self._ctx.external_probes.check(url)
            if problem is None:
                self._update(phase="Running", ready=True, message="")
            else:
                self._update(ready=False, message=f"external endpoint not ready: {problem}")
            await asyncio.sleep(settings.external_probe_interval_s)

    async def _run_process(self, adopted: Instance | None) -> None:
        settings = self._ctx.settings
        instance = adopted
        port_races = 0
        while True:
            if instance is None:
                launched = self._launch()
                self._launched.set()
                if isinstance(launched, str):
                    self._cannot_launch(launched)
                    await asyncio.sleep(settings.restart_backoff_max_s)
                    continue
                instance = launched
            exit_info, healthy_for = await self._watch(instance)
            self._instance = None
            instance.handle.close()
            self._ctx.records.remove(self.namespace, self.name)
            self._banner(f"pid {instance.handle.pid} {exit_info.describe()}")
            if (
                exit_info.reason != "StartupTimeout"
                and not instance.ever_ready
                and port_races < PORT_RACE_RETRIES
                and port_taken(LOOPBACK, instance.port)
            ):
                port_races += 1
                logger.info(
                    "%s/%s: port %d was taken before the engine could bind it; trying another",
                    self.namespace,
                    self.name,
                    instance.port,
                )
                instance = None
                continue
            port_races = 0
            if healthy_for >= HEALTHY_RESET_S:
                self._failures = 0
            self._failures += 1
            delay = min(
                settings.restart_backoff_base_s * 2 ** min(self._failures - 1, 32),
                settings.restart_backoff_max_s,
            )
            if exit_info.reason == "StartupTimeout":
                limit = settings.startup_timeout_s
                what = f"not ready within {limit:.3g}s ({exit_info.describe()})"
            else:
                what = exit_info.describe()
            logger.warning(
                "%s/%s: engine pid %d %s; restarting in %.3gs",
                self.namespace,
                self.name,
                instance.handle.pid,
                what,
                delay,
            )
            self._update(
                phase="Failed",
                ready=False,
                endpoint=None,
                pid=None,
                port=None,
                restarts=self.state.restarts + 1,
                last_exit=exit_info,
                message=f"{what}; restarting in {delay:.3g}s (log: {self.log_path})",
            )
            instance = None
            await asyncio.sleep(delay)

    def _launch(self) -> Instance | str:
        """Spawn the engine (synchronously, so ``stop`` never sees half a launch); a string
        says why it could not be started."""
        ctx, replica = self._ctx, self.replica
        env = child_env(
            ctx.base_env,
            self.adapter.env(replica),
            replica.spec.env,
            {RECORD_ENV: ctx.records.marker(self.namespace, self.name)},
        )
        port = free_port(LOOPBACK)
        argv = self.adapter.argv(replica, host=LOOPBACK, port=port)
        if argv is None:
            return f"engine {self.adapter.name!r} runs no process"
        executable = shutil.which(argv[0], path=env["PATH"])
        if executable is None:
            hint = self.adapter.install_hint
            return f"{argv[0]} executable not found on PATH" + (f"; {hint}" if hint else "")
        if missing := _missing_module(argv, executable):
            hint = self.adapter.install_hint
            return f"Python module {missing} not found for {argv[0]}" + (
                f"; {hint}" if hint else ""
            )
        started_at = now_utc()
        intent = RunRecord(
            namespace=self.namespace,
            name=self.name,
            engine=self.adapter.name,
            pid=None,
            pgid=None,
            port=port,
            argv=tuple(argv),
            started_at=started_at,
            template_hash=replica.spec.template_hash,
            plane_instance=ctx.instance_id,
            restarts=self.state.restarts,
        )
        try:
            # The intent record lets a plane killed right after the spawn find the process.
            ctx.records.write(intent)
            self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            log_fd = os.open(
                self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            ctx.records.remove(self.namespace, self.name)
            return f"cannot prepare the launch: {exc}"
        try:
            _write_banner(log_fd, f"starting {self.adapter.name} on port {port}")
            pid = spawn(executable, argv, env=env, log_fd=log_fd)
        except OSError as exc:
            ctx.records.remove(self.namespace, self.name)
            return f"cannot start {argv[0]}: {exc.strerror or exc}"
        finally:
            os.close(log_fd)
        instance = Instance(
            handle=ProcessHandle.for_child(pid),
            port=port,
            argv=tuple(argv),
            started_at=started_at,
            started_mono=time.monotonic(),
            ever_ready=False,
        )
        self._instance = instance
        self._write_record(instance)
        self._last_warning = ""
        logger.info(
            "%s/%s: started %s engine, pid %d, port %d",
            self.namespace,
            self.name,
            self.adapter.name,
            pid,
            port,
        )
        self._update(
            phase="Starting",
            ready=False,
            endpoint=self.adapter.endpoint(replica, port),
            pid=pid,
            port=port,
            started_at=started_at,
            message="waiting for the readiness probe",
        )
        return instance

    async def _watch(self, instance: Instance) -> tuple[ExitInfo, float]:
        """Probe until the process exits (or is killed for missing its startup deadline);
        return how it ended and for how long it had been ready without interruption."""
        settings = self._ctx.settings
        url = f"http://{LOOPBACK}:{instance.port}{self.adapter.health_path}"
        deadline = instance.started_mono + settings.startup_timeout_s
        ready_since = time.monotonic() if self.state.ready else None
        exited = asyncio.ensure_future(instance.handle.wait())
        checking: asyncio.Future[str | None] | None = None
        try:
            while True:
                checking = asyncio.ensure_future(
                    probe(self._ctx.session, url, timeout=settings.probe_timeout_s)
                )
                await asyncio.wait((checking, exited), return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    return exited.result(), _elapsed(ready_since)
                problem, checking = checking.result(), None
                now = time.monotonic()
                if problem is None:
                    ready_since = ready_since or now
                    if not instance.ever_ready:
                        instance.ever_ready = True
                        self._write_record(instance)
                    self._update(phase="Running", ready=True, message="")
                elif instance.ever_ready:
                    ready_since = None
                    self._update(ready=False, message=f"readiness probe failed: {problem}")
                elif now >= deadline:
                    logger.warning(
                        "%s/%s: pid %d not ready within %.3gs; stopping it",
                        self.namespace,
                        self.name,
                        instance.handle.pid,
                        settings.startup_timeout_s,
                    )
                    info = await terminate(instance.handle, grace=settings.stop_grace_s)
                    if info is None:
                        info = ExitInfo(code=None, signal=None, reason="", finished_at=now_utc())
                    return dataclasses.replace(info, reason="StartupTimeout"), 0.0
                else:
                    self._update(message=f"waiting for the readiness probe: {problem}")
                await asyncio.wait((exited,), timeout=settings.probe_interval_s)
        finally:
            await _cancel(checking, exited)

    # -- helpers ----------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        new = dataclasses.replace(self.state, **changes)
        if new == self.state:
            return
        self.state = new
        try:
            self._ctx.notify(self.namespace, self.name)
        except Exception:
            logger.exception("%s/%s: on_change callback failed", self.namespace, self.name)

    def _cannot_launch(self, reason: str) -> None:
        if reason != self._last_warning:
            logger.warning("%s/%s: %s", self.namespace, self.name, reason)
            self._last_warning = reason
        self._update(
            phase="Failed", ready=False, endpoint=None, pid=None, port=None, message=reason
        )

    def _write_record(self, instance: Instance) -> None:
        pid = instance.handle.pid
        record = RunRecord(
            namespace=self.namespace,
            name=self.name,
            engine=self.adapter.name,
            pid=pid,
            pgid=instance.handle.pgid,
            port=instance.port,
            argv=instance.argv,
            started_at=instance.started_at,
            template_hash=self.replica.spec.template_hash,
            plane_instance=self._ctx.instance_id,
            restarts=self.state.restarts,
            ready=instance.ever_ready,
        )
        try:
            self._ctx.records.write(record)
        except OSError as exc:
            logger.warning("%s/%s: cannot write run record: %s", self.namespace, self.name, exc)

    def _banner(self, text: str) -> None:
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return
        try:
            _write_banner(fd, text)
        finally:
            os.close(fd)

    async def _cancel_task(self) -> None:
        await _cancel(self._task)


def _write_banner(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, f"=== {format_time(now_utc())} aviator: {text} ===\n".encode())


def _elapsed(since: float | None) -> float:
    return 0.0 if since is None else time.monotonic() - since


async def _cancel(*futures: asyncio.Future[Any] | None) -> None:
    pending = [f for f in futures if f is not None and not f.done()]
    for future in pending:
        future.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _missing_module(argv: list[str], executable: str) -> str | None:
    """The package of a ``python -m package.module`` command line run by this interpreter when it
    cannot be imported (SGLang not installed, say): found now, not as a crash loop later."""
    if (
        len(argv) < 3
        or argv[1] != "-m"
        or os.path.realpath(executable) != os.path.realpath(sys.executable)
    ):
        return None
    package = argv[2].split(".", 1)[0]
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else package
