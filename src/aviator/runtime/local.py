"""``LocalRuntime``: the embedded home's process runtime, one engine process per Replica."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import aiohttp

from aviator.api.errors import AviatorError, FieldError, InternalError, Invalid
from aviator.api.meta import dns1123_label_problem, dns1123_subdomain_problem, now_utc
from aviator.api.replica import Replica
from aviator.runtime.engines import EngineAdapter, builtin_engines
from aviator.runtime.engines.base import LOOPBACK
from aviator.runtime.probe import SharedProbe, probe
from aviator.runtime.processes import (
    ProcessHandle,
    child_env,
    find_session_leaders,
    read_cmdline,
    terminate,
)
from aviator.runtime.records import RECORD_ENV, RecordDir, RunRecord
from aviator.runtime.state import ProcessState
from aviator.runtime.supervisor import Instance, Supervisor, SupervisorContext, fingerprint
from aviator.settings import RuntimeSettings

__all__ = ["LocalRuntime"]

logger = logging.getLogger(__name__)

Key = tuple[str, str]
_PROBE_CONNECTIONS = 256
"""Bound on concurrent probe connections (probes are sequential per replica)."""


class LocalRuntime:
    """Runs, watches, restarts and stops engine processes on this machine.

    Call ``start()``, then ``adopt(wanted)`` once with every Replica the store holds for this
    node, then ``ensure``/``stop`` from the controller. Every observable change of a replica's
    ``ProcessState`` calls ``on_change(namespace, name)`` on the event loop; the controller then
    reads ``state(namespace, name)`` (None once stopped) and writes the Replica's status.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        settings: RuntimeSettings,
        on_change: Callable[[str, str], None],
        engines: Mapping[str, EngineAdapter] | None = None,
    ) -> None:
        """``engines`` replaces the built-in adapters (sim, vllm, external); tests use it."""
        self._settings = settings
        self._on_change = on_change
        self._engines = dict(engines) if engines is not None else builtin_engines()
        self._records = RecordDir(data_dir / "run")
        self._logs_dir = data_dir / "logs"
        self._base_env = child_env(os.environ)  # only the allow-list is ever kept
        self.instance_id = uuid.uuid4().hex
        """Identifies this plane run in the records it writes."""
        self._supervisors: dict[Key, Supervisor] = {}
        self._locks = _KeyedLocks()
        self._ctx: SupervisorContext | None = None
        self._lock_fd: int | None = None
        self._closing = False

    async def start(self) -> None:
        """Create the directories, take the data directory's runtime lock, open the probe client."""
        if self._ctx is not None:
            return
        self._records.ensure()
        self._logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = _lock(self._records.path / ".lock")
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_PROBE_CONNECTIONS), trust_env=False
        )
        self._ctx = SupervisorContext(
            settings=self._settings,
            session=session,
            external_probes=SharedProbe(
                session,
                timeout=self._settings.probe_timeout_s,
                # Half an interval: every replica still sees an answer at most one interval old.
                max_age=self._settings.external_probe_interval_s / 2,
            ),
            records=self._records,
            logs_dir=self._logs_dir,
            instance_id=self.instance_id,
            base_env=self._base_env,
            notify=self._on_change,
        )
        self._closing = False

    async def close(self, *, stop_processes: bool = True) -> None:
        """Stop every process (concurrently), or with ``stop_processes=False`` only stop
        watching them, leaving them and their records for the next plane to adopt."""
        ctx = self._ctx
        if ctx is None:
            return
        self._closing = True
        keys = list(self._supervisors)
        if stop_processes:
            results = await asyncio.gather(
                *(self.stop(ns, name) for ns, name in keys), return_exceptions=True
            )
            for key, result in zip(keys, results, strict=True):
                if isinstance(result, BaseException):
                    logger.error("%s/%s: stop failed: %s", *key, result)
        else:
            await asyncio.gather(*(self._detach(key) for key in keys))
        await ctx.session.close()
        self._ctx = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def adopt(self, wanted: Mapping[Key, Replica]) -> None:
        """Take over the processes an earlier plane left running.

        For each record: a live process whose command line matches, launched from the same
        template as a wanted replica (and, if it had been ready, still answering its probe) is
        supervised again without a restart; any other live match is stopped; a record whose
        pid is dead or runs something else (pid reuse) is dropped, that process left alone.
        Then ``ensure`` each wanted replica as usual: the adopted ones are no-ops.
        """
        self._require_started()
        records = self._records.load_all()
        await asyncio.gather(*(self._adopt_one(r, wanted.get(r.key)) for r in records))

    async def ensure(self, replica: Replica) -> ProcessState:
        """Start, or keep running, what ``replica.spec`` asks for; idempotent. A changed spec
        (template hash, command line, environment) replaces the process. Returns once the
        first launch was attempted, so the state carries a pid or the reason there is none."""
        self._require_started()
        key = _key(replica)
        adapter = self._adapter(replica.spec.engine)
        async with self._locks.hold(key):
            current = self._supervisors.get(key)
            if current is not None:
                same = current.fingerprint == fingerprint(replica, adapter)
                if same and not current.finished:
                    return current.state
                why = "supervisor ended" if same else "spec changed"
                logger.info("%s/%s: %s; replacing the engine", *key, why)
                await self._stop_locked(key)
            adopted: Instance | None = None
            restarts = 0
            record = self._records.read(*key)
            if record is not None:  # left by an earlier plane, and adopt() was not called
                adopted = await self._claim(record, replica)
                restarts = record.restarts
            supervisor = Supervisor(replica=replica, adapter=adapter, ctx=self._require_started())
            self._supervisors[key] = supervisor
            supervisor.start(adopted, restarts=restarts)
            await supervisor.launched()
            return supervisor.state

    async def stop(self, namespace: str, name: str) -> None:
        """Stop the replica's process (SIGTERM to its group, ``stop_grace_s``, SIGKILL), reap
        it and drop its record; idempotent. Raises ``InternalError`` if it survives SIGKILL."""
        self._require_started(allow_closing=True)
        key = (namespace, name)
        async with self._locks.hold(key):
            await self._stop_locked(key)

    def state(self, namespace: str, name: str) -> ProcessState | None:
        """What the runtime observes now; None for a replica it does not run."""
        supervisor = self._supervisors.get((namespace, name))
        return None if supervisor is None else supervisor.state

    def log_path(self, namespace: str, name: str) -> Path:
        """Where the engine's stdout and stderr are appended."""
        return self._logs_dir / namespace / f"{name}.log"

    # -- internals --------------------------------------------------------------------------

    def _require_started(self, *, allow_closing: bool = False) -> SupervisorContext:
        if self._ctx is None or (self._closing and not allow_closing):
            raise AviatorError("LocalRuntime is not started (or is closing)")
        return self._ctx

    def _adapter(self, engine: str) -> EngineAdapter:
        try:
            return self._engines[engine]
        except KeyError:
            raise Invalid(
                f"engine {engine!r} is not available in the local runtime",
                kind="Replica",
                causes=(FieldError("spec.engine", f"expected one of {sorted(self._engines)}"),),
            ) from None

    async def _stop_locked(self, key: Key) -> None:
        supervisor = self._supervisors.get(key)
        if supervisor is None:
            record = self._records.read(*key)
            if record is not None:  # an earlier plane's process nobody adopted
                await self._claim(record, None)
                if self._records.read(*key) is not None:
                    raise InternalError(f"engine process of {key[0]}/{key[1]} would not die")
            return
        gone = await supervisor.stop()
        del self._supervisors[key]
        self._notify(key)
        if not gone:
            raise InternalError(f"engine process of {key[0]}/{key[1]} would not die")

    async def _detach(self, key: Key) -> None:
        async with self._locks.hold(key):
            supervisor = self._supervisors.pop(key, None)
            if supervisor is not None:
                await supervisor.detach()

    async def _adopt_one(self, record: RunRecord, replica: Replica | None) -> None:
        key = record.key
        async with self._locks.hold(key):
            if key in self._supervisors:
                return
            adopted = await self._claim(record, replica)
            if adopted is None or replica is None:
                return
            supervisor = Supervisor(
                replica=replica,
                adapter=self._adapter(replica.spec.engine),
                ctx=self._require_started(),
            )
            self._supervisors[key] = supervisor
            supervisor.start(adopted, restarts=record.restarts)
            logger.info("%s/%s: adopted pid %d on port %d", *key, record.pid, record.port)

    async def _claim(self, record: RunRecord, replica: Replica | None) -> Instance | None:
        """Resolve an earlier plane's record: the live process to adopt for ``replica``, or
        None after stopping a live process we started but no longer want (and dropping the
        record). A process that is not provably ours is never signalled."""
        key = record.key
        if record.pid is None:
            # The plane died between spawn and the second record write: find the process by
            # argv and by the record marker in its environment.
            marker = f"{RECORD_ENV}={self._records.marker(*key)}"
            leaders = await asyncio.to_thread(find_session_leaders, record.argv, env_entry=marker)
            for pid in leaders:
                handle = ProcessHandle.open(pid, pgid=pid)
                if handle is not None and read_cmdline(pid) == list(record.argv):
                    logger.info("%s/%s: reaping pid %d (launch never recorded)", *key, pid)
                    await terminate(handle, grace=self._settings.stop_grace_s)
                if handle is not None:
                    handle.close()
            self._records.remove(*key)
            return None
        handle = ProcessHandle.open(record.pid, pgid=record.pgid)
        if handle is None:
            logger.info("%s/%s: dropping record of exited pid %d", *key, record.pid)
            self._records.remove(*key)
            return None
        if read_cmdline(record.pid) != list(record.argv):
            logger.warning(
                "%s/%s: pid %d no longer runs the recorded command (pid reused?); leaving it alone",
                *key,
                record.pid,
            )
            handle.close()
            self._records.remove(*key)
            return None
        with contextlib.suppress(OSError):
            if os.getpgid(record.pid) != record.pgid:
                handle.pgid = None  # signal only the process itself
        reason = self._mismatch(record, replica)
        if reason is None and record.ready:
            problem = await probe(
                self._require_started().session,
                f"http://{LOOPBACK}:{record.port}{self._adapter(record.engine).health_path}",
                timeout=self._settings.probe_timeout_s,
            )
            if problem is not None:
                reason = f"readiness probe failed: {problem}"
        if reason is None:
            age = max(0.0, (now_utc() - record.started_at).total_seconds())
            return Instance(
                handle=handle,
                port=record.port,
                argv=record.argv,
                started_at=record.started_at,
                started_mono=time.monotonic() - age,
                ever_ready=record.ready,
            )
        logger.info("%s/%s: stopping pid %d: %s", *key, record.pid, reason)
        info = await terminate(handle, grace=self._settings.stop_grace_s)
        handle.close()
        if info is not None:
            self._records.remove(*key)
        return None

    def _mismatch(self, record: RunRecord, replica: Replica | None) -> str | None:
        """Why the recorded process cannot serve ``replica``, or None when it can."""
        if replica is None:
            return "replica no longer wanted"
        if record.engine != replica.spec.engine or record.engine not in self._engines:
            return "engine changed"
        if record.template_hash != replica.spec.template_hash:
            return "template changed"
        argv = self._engines[record.engine].argv(replica, host=LOOPBACK, port=record.port)
        if argv != list(record.argv):
            return "command line changed"
        return None

    def _notify(self, key: Key) -> None:
        try:
            self._on_change(*key)
        except Exception:
            logger.exception("%s/%s: on_change callback failed", *key)


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Key) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _key(replica: Replica) -> Key:
    namespace, name = replica.namespace, replica.name
    # Both become file names under data_dir: refuse anything that is not DNS-1123.
    for field, problem in (
        ("metadata.namespace", dns1123_label_problem(namespace)),
        ("metadata.name", dns1123_subdomain_problem(name)),
    ):
        if problem is not None:
            raise Invalid(
                f"Replica {namespace}/{name} is invalid: {field}: {problem}",
                kind="Replica",
                name=name,
                causes=(FieldError(field, problem),),
            )
    return (namespace, name)


def _lock(path: Path) -> int:
    """Hold an exclusive lock on ``path`` for as long as the returned fd is open."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AviatorError(
            f"another aviator runtime is using {path.parent.parent}; stop it first"
        ) from None
    return fd
