"""What the runtime observes about one replica: pure, immutable data handed to the controllers."""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["ExitInfo", "Phase", "ProcessState"]

Phase = Literal["Pending", "Starting", "Running", "Failed", "Terminating"]
"""Same values as ``aviator.api.replica.ReplicaPhase``:

- ``Pending``: known, nothing launched yet.
- ``Starting``: the process runs (or the external endpoint is probed) but was never ready.
- ``Running``: it became ready at least once; ``ready`` says whether the latest probe passed.
- ``Failed``: the process exited or could not be started; a restart is scheduled.
- ``Terminating``: ``stop`` is in progress.
"""


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How an engine process ended (maps onto ``ReplicaStatus.lastExit``)."""

    code: int | None
    """Exit code, or None when killed by a signal or when the status is unknown."""
    signal: int | None
    """Number of the signal that killed it, if any."""
    reason: str
    """``Completed`` (code 0), ``Error`` (code != 0), ``Signaled``, ``StartupTimeout`` (killed
    for not becoming ready in time) or ``Exited`` (an adopted process that is not our child,
    so its status cannot be read)."""
    finished_at: datetime

    def describe(self) -> str:
        """One human line, e.g. ``exited with code 1`` or ``killed by SIGKILL``."""
        if self.signal is not None:
            try:
                name = signals.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        if self.code is not None:
            return f"exited with code {self.code}"
        return "exited (status unknown: not a child of this plane)"


@dataclass(frozen=True, slots=True)
class ProcessState:
    """What the runtime observes for one replica; the controller copies it into ``status``."""

    phase: Phase
    ready: bool = False
    """True while the latest readiness probe passed; the gateway routes only to ready replicas."""
    endpoint: str | None = None
    """Base URL of the OpenAI-compatible server (``http://127.0.0.1:PORT``), without ``/v1``."""
    pid: int | None = None
    port: int | None = None
    restarts: int = 0
    """Process exits seen so far (crashes and startup timeouts); each is followed by a restart."""
    started_at: datetime | None = None
    last_exit: ExitInfo | None = None
    message: str = ""
    """Why the replica is not ready, in one line; empty when all is well. Never holds env values."""
