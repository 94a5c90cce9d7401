"""Helpers shared by the runtime tests (a module, not conftest, so tests can import them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aviator.api.meta import ObjectMeta
from aviator.api.modeldeployment import ExternalEndpoint, ModelRef
from aviator.api.replica import Replica, ReplicaSpec
from aviator.runtime import LocalRuntime, ProcessState
from aviator.runtime.engines import LOOPBACK
from aviator.settings import RuntimeSettings

FAKE_ENGINE = str(Path(__file__).with_name("fake_engine.py"))

SMALL = RuntimeSettings(
    probe_interval_s=0.05,
    probe_timeout_s=0.5,
    startup_timeout_s=5.0,
    restart_backoff_base_s=0.05,
    restart_backoff_max_s=0.4,
    stop_grace_s=2.0,
    external_probe_interval_s=0.05,
)


class FakeEngine:
    """Runs tests/unit/runtime/fake_engine.py; ``spec.engineArgs`` are its flags."""

    name = "sim"
    health_path = "/health"
    install_hint = ""

    def argv(self, replica: Replica, *, host: str, port: int) -> list[str]:
        return [
            sys.executable,
            FAKE_ENGINE,
            "--host",
            host,
            "--port",
            str(port),
            *replica.spec.engine_args,
        ]

    def endpoint(self, replica: Replica, port: int | None) -> str:
        return f"http://{LOOPBACK}:{port}"

    def env(self, replica: Replica) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}


def make_replica(
    name: str = "chat-abc-0",
    *,
    args: list[str] | None = None,
    template_hash: str = "h1",
    engine: str = "sim",
    env: dict[str, str] | None = None,
    url: str | None = None,
) -> Replica:
    return Replica(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=ReplicaSpec(
            model=ModelRef(name="test-model"),
            engine=engine,  # type: ignore[arg-type]
            engine_args=args or [],
            env=env or {},
            external=ExternalEndpoint(url=url) if url is not None else None,
            template_hash=template_hash,
        ),
    )


@dataclass
class Recorder:
    """The on_change callback: keeps every state it could observe, per key."""

    runtime: LocalRuntime | None = None
    seen: dict[tuple[str, str], list[ProcessState | None]] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)
    """Every pid ever reported, for the clean-up safety net."""

    def __call__(self, namespace: str, name: str) -> None:
        assert asyncio.get_running_loop()  # never called from a thread
        state = self.runtime.state(namespace, name) if self.runtime is not None else None
        if state is not None and state.pid is not None:
            self.pids.add(state.pid)
        self.seen.setdefault((namespace, name), []).append(state)

    def states(self, key: tuple[str, str]) -> list[ProcessState]:
        return [s for s in self.seen.get(key, []) if s is not None]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode() for p in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def is_alive(pid: int) -> bool:
    """Running (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def is_gone(pid: int) -> bool:
    """No process at all, not even a zombie: it was reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def kill_strays(pids: set[int]) -> None:
    """Safety net: SIGKILL and reap fake engines a failed test may have left behind."""
    for pid in pids:
        if is_alive(pid) and FAKE_ENGINE in " ".join(cmdline(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
