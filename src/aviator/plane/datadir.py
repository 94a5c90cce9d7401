"""The data directory: where the database, tokens, logs and process records live.

```
.aviator/
  aviator.db          SQLite (WAL) — every object
  admin.token         Control API admin token (0600)
  keys/               the plane's token-signing keys (0700)
  audit.db            the audit log (SQLite, WAL), appended by the plane and the gateway
  plane.json          where the running plane listens (written at start, removed at stop)
  plane.lock          held (flock) while a plane runs on this directory
  gateway.json        the gateway process (pid, command line), to stop a survivor of a crash
  logs/plane.log      the plane's own log; logs/gateway.log; logs/<ns>/<replica>.log
  run/                records of engine processes, for adoption after a restart
```
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aviator.api.errors import AviatorError


class DataDirLocked(AviatorError):
    """Another plane already runs on this data directory."""


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "aviator.db"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def plane_info(self) -> Path:
        return self.root / "plane.json"

    @property
    def gateway_record(self) -> Path:
        return self.root / "gateway.json"

    @property
    def lock(self) -> Path:
        return self.root / "plane.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def replica_log(self, namespace: str, name: str) -> Path:
        return self.logs / namespace / f"{name}.log"

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.logs.mkdir(exist_ok=True)
        ensure_secret(self.admin_token)

    def read_info(self) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads(self.plane_info.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        tmp = self.plane_info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.plane_info)

    def acquire(self) -> IO[str]:
        """Take the directory's lock for this process's lifetime (released on exit, even kill -9)."""
        handle = self.lock.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirLocked(
                f"another aviator plane is running on {self.root} (lock {self.lock} is held); "
                "stop it first or use --data-dir"
            ) from None
        return handle


def ensure_secret(path: Path) -> str:
    """Read the secret at ``path``, creating a fresh 256-bit one (mode 0600) if it is missing."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def read_secret(path: Path) -> str:
    return path.read_text().strip()
