"""Operating-system mechanics: spawn into a new session, watch and signal, find by command line.

Why ``os.posix_spawn`` and not ``asyncio.create_subprocess_exec``: asyncio's (and uvloop's)
subprocess transport kills its child when it is closed or collected, so a runtime that shuts down
with ``stop_processes=False`` could not leave its engines running for the next plane to adopt.
Here a process is just a pid: a pidfd (Linux >= 5.3) tells the event loop the moment it exits,
for our own children and for adopted ones alike, and signals go through the pidfd or to a process
group whose leader is known to be alive, so a recycled pid is never hit. Without pidfds (other
systems) exits are found by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import signal
import socket
from collections.abc import Mapping, Sequence

from aviator.api.meta import now_utc
from aviator.runtime.state import ExitInfo

__all__ = [
    "ProcessHandle",
    "child_env",
    "find_session_leaders",
    "free_port",
    "port_taken",
    "read_cmdline",
    "read_environ_has",
    "reserve_port",
    "spawn",
    "terminate",
]

logger = logging.getLogger(__name__)

_POLL_S = 0.1
"""Exit polling period where pidfds are unavailable."""
_KILL_WAIT_S = 10.0
"""How long to wait for a SIGKILLed process to vanish before giving up (it is stuck in the
kernel, e.g. uninterruptible GPU driver I/O); its record is then kept for a later attempt."""

_PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "XDG_CACHE_HOME",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""Variables engines inherit from the plane: locations and locale, never credentials. Anything
else (tokens, proxies, device selection) must be given explicitly in ``spec.env``."""


def child_env(base: Mapping[str, str], *layers: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: allowed names (and ``LC_*``) from ``base``, then each layer."""
    env = {k: v for k, v in base.items() if k in _PASSTHROUGH_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    for layer in layers:
        env.update(layer)
    return env


def free_port(host: str) -> int:
    """A port nobody listens on right now (the kernel's pick for port 0). Racy by nature: the
    caller notices a lost race when the engine dies early and ``port_taken`` says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) ``SO_REUSEPORT`` socket on ``host:port`` (0: a free port). Held by
    a supervisor, it keeps the port for the processes it starts (which bind it with
    ``SO_REUSEPORT`` too) while they start and restart: no race with anyone else for it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port:
            # A fixed port may still have connections in TIME_WAIT from a run just stopped. Not
            # for a fresh one: with SO_REUSEADDR, anyone setting it too (asyncio's servers do)
            # could bind a port whose holder does not listen.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def port_taken(host: str, port: int) -> bool:
    """Whether another socket holds ``port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def spawn(executable: str, argv: Sequence[str], *, env: Mapping[str, str], log_fd: int) -> int:
    """Start ``argv`` in a new session (pid == pgid == sid) with stdout and stderr on ``log_fd``
    and stdin on /dev/null; return its pid. Raises ``OSError`` when the exec fails.

    The new session keeps a Ctrl-C of the plane's terminal away from the engine, and lets
    ``stop`` signal the engine's whole process group (vLLM starts worker processes).
    """
    file_actions = [
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    ]
    return os.posix_spawn(
        executable,
        list(argv),
        dict(env),
        file_actions=file_actions,
        setsid=True,
        # Python ignores SIGPIPE/SIGXFSZ and ignored signals survive exec; restore them, as
        # subprocess does with restore_signals=True.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        setsigmask=(),
    )


def read_cmdline(pid: int) -> list[str] | None:
    """``/proc/<pid>/cmdline`` as argv, or None when the process (or /proc) is not there."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def read_environ_has(pid: int, entry: str) -> bool:
    """Whether ``NAME=value`` ``entry`` is in the environment ``pid`` was started with."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return os.fsencode(entry) in f.read().split(b"\0")
    except OSError:
        return False


def find_session_leaders(argv: Sequence[str], *, env_entry: str) -> list[int]:
    """Pids of session leaders whose command line is exactly ``argv`` and whose environment
    holds ``env_entry`` (blocking: scans /proc)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    wanted = list(argv)
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        if read_cmdline(pid) != wanted or not read_environ_has(pid, env_entry):
            continue
        with contextlib.suppress(OSError):
            if os.getsid(pid) == pid:
                found.append(pid)
    return found


def _exit_from_status(status: int) -> ExitInfo:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return ExitInfo(code=None, signal=-code, reason="Signaled", finished_at=now_utc())
    return ExitInfo(
        code=code, signal=None, reason="Completed" if code == 0 else "Error", finished_at=now_utc()
    )


class ProcessHandle:
    """A running process known by pid: wait for its exit, signal it or its group, reap it.

    Works the same for a child of this process and for an adopted process spawned by an earlier
    plane. On exit of our own child the rest of its process group is SIGKILLed while the
    unreaped leader still pins the group id, then the leader is reaped.
    """

    def __init__(self, pid: int, *, pgid: int | None, pidfd: int | None) -> None:
        self.pid = pid
        self.pgid = pgid
        self._pidfd = pidfd
        self._exit: asyncio.Future[ExitInfo] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """Set while the loop watches the pidfd."""

    @classmethod
    def open(cls, pid: int, *, pgid: int | None) -> ProcessHandle | None:
        """A handle on a live ``pid``, or None when no such process exists (or it is a zombie)."""
        pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
            except OSError:  # e.g. ENOSYS on an old kernel: fall back to polling
                pidfd = None
        handle = cls(pid, pgid=pgid, pidfd=pidfd)
        if not handle.alive():
            handle.close()
            return None
        return handle

    @classmethod
    def for_child(cls, pid: int) -> ProcessHandle:
        """A handle on a child just spawned into its own session (pgid == pid). Never None:
        a child that already exited stays a zombie until this handle reaps it."""
        pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(pid)
        return cls(pid, pgid=pid, pidfd=pidfd)

    def alive(self) -> bool:
        if self._exit is not None and self._exit.done():
            return False
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], 0)
            return not readable
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(self.pid)

    async def wait(self) -> ExitInfo:
        """Wait for the exit (cancelling the wait leaves the handle usable)."""
        return await asyncio.shield(self._exit_future())

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (or just the process when its group is unknown).
        A no-op once the process is known to be gone, so a recycled pid is never signalled."""
        if not self.alive():
            return
        try:
            if self.pgid is not None:
                os.killpg(self.pgid, sig)
            elif self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop watching (the process itself is left alone)."""
        self._unwatch()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._exit is not None and not self._exit.done():
            self._exit.cancel()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _unwatch(self) -> None:
        if self._loop is not None and self._pidfd is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._pidfd)
        self._loop = None

    def _exit_future(self) -> asyncio.Future[ExitInfo]:
        if self._exit is None:
            loop = asyncio.get_running_loop()
            self._exit = loop.create_future()
            if self._pidfd is not None:
                loop.add_reader(self._pidfd, self._on_exit)
                self._loop = loop
            else:
                self._poller = loop.create_task(self._poll(), name=f"runtime:poll-pid-{self.pid}")
        return self._exit

    async def _poll(self) -> None:
        while self.alive():
            await asyncio.sleep(_POLL_S)
        self._on_exit()

    def _on_exit(self) -> None:
        self._unwatch()
        info = self._reap()
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(info)

    def _reap(self) -> ExitInfo:
        unknown = ExitInfo(code=None, signal=None, reason="Exited", finished_at=now_utc())
        try:
            peek = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return unknown  # adopted from an earlier plane: init reaps it, status unknown
        if peek is None:
            return unknown
        # Our child: its zombie still pins the group id, so stragglers can be killed safely.
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
        try:
            _, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return unknown
        return _exit_from_status(status)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # Field 3 follows the parenthesised command name, which may itself contain ") ".
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


async def terminate(handle: ProcessHandle, *, grace: float) -> ExitInfo | None:
    """SIGTERM the group, wait ``grace`` seconds, then SIGKILL; return how it ended, or None if
    it would not die even then."""
    handle.signal_group(signal.SIGTERM)
    try:
        return await asyncio.wait_for(handle.wait(), timeout=grace)
    except TimeoutError:
        pass
    logger.warning("pid %d did not exit %.3gs after SIGTERM; sending SIGKILL", handle.pid, grace)
    handle.signal_group(signal.SIGKILL)
    try:
        return await asyncio.wait_for(handle.wait(), timeout=_KILL_WAIT_S)
    except TimeoutError:
        logger.error("pid %d survived SIGKILL for %.3gs; giving up", handle.pid, _KILL_WAIT_S)
        return None
