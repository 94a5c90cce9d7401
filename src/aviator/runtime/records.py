"""On-disk records of the engine processes this machine runs, so a restarted plane can find them.

One JSON file per replica in ``<data_dir>/run/<namespace>__<name>.json``, replaced atomically
(write a temporary file, then ``os.replace``). Records hold argv (needed to recognise the process
again through ``/proc/<pid>/cmdline``) but never the environment, which may carry secrets.
Files are created 0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["RECORD_ENV", "RecordDir", "RunRecord"]

logger = logging.getLogger(__name__)

RECORD_ENV = "AVIATOR_RUN_RECORD"
"""Set in every engine's environment to its record's path: the one proof, besides argv, that a
process found without a pid (see ``RunRecord.pid``) was launched for that record."""

_VERSION = 1
_SUFFIX = ".json"
_TMP_SUFFIX = ".json.tmp"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One engine process as launched. ``pid`` is None in the intent record written just before
    the spawn, so a plane killed between the spawn and the second write can still find it."""

    namespace: str
    name: str
    engine: str
    pid: int | None
    pgid: int | None
    port: int
    argv: tuple[str, ...]
    started_at: datetime
    template_hash: str
    plane_instance: str
    restarts: int = 0
    ready: bool = False
    """True once the process passed a readiness probe; adoption then requires the probe to pass."""
    version: int = field(default=_VERSION)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "version": self.version,
            "namespace": self.namespace,
            "name": self.name,
            "engine": self.engine,
            "pid": self.pid,
            "pgid": self.pgid,
            "port": self.port,
            "argv": list(self.argv),
            "startedAt": self.started_at.isoformat(),
            "templateHash": self.template_hash,
            "planeInstance": self.plane_instance,
            "restarts": self.restarts,
            "ready": self.ready,
        }
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        """Parse a record; raises ``ValueError`` on anything malformed."""
        try:
            raw = json.loads(data)
            if raw.get("version") != _VERSION:
                raise ValueError(f"unsupported version {raw.get('version')!r}")
            argv = raw["argv"]
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv must be a list of strings")
            pid, pgid = raw["pid"], raw["pgid"]
            for value in (pid, pgid):
                if value is not None and (type(value) is not int or value <= 0):
                    raise ValueError(f"bad pid {value!r}")
            return cls(
                namespace=str(raw["namespace"]),
                name=str(raw["name"]),
                engine=str(raw["engine"]),
                pid=pid,
                pgid=pgid,
                port=int(raw["port"]),
                argv=tuple(argv),
                started_at=datetime.fromisoformat(raw["startedAt"]),
                template_hash=str(raw["templateHash"]),
                plane_instance=str(raw["planeInstance"]),
                restarts=int(raw.get("restarts", 0)),
                ready=bool(raw.get("ready", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # json.JSONDecodeError is a ValueError.
            raise ValueError(f"malformed run record: {exc}") from exc


class RecordDir:
    """The ``run/`` directory. Callers serialise access per key; the plane holds it alone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_for(self, namespace: str, name: str) -> Path:
        # Namespaces and names are DNS-1123 (no "_", no "/"), so "__" separates them unambiguously.
        return self.path / f"{namespace}__{name}{_SUFFIX}"

    def marker(self, namespace: str, name: str) -> str:
        """The ``RECORD_ENV`` value for the replica's engine."""
        return str(self.path_for(namespace, name).absolute())

    def write(self, record: RunRecord) -> None:
        final = self.path_for(record.namespace, record.name)
        tmp = final.with_name(final.name.removesuffix(_SUFFIX) + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, record.to_json())
        finally:
            os.close(fd)
        os.replace(tmp, final)

    def read(self, namespace: str, name: str) -> RunRecord | None:
        path = self.path_for(namespace, name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return RunRecord.from_json(data)
        except ValueError as exc:
            logger.warning("dropping unreadable run record %s: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def remove(self, namespace: str, name: str) -> None:
        self.path_for(namespace, name).unlink(missing_ok=True)

    def load_all(self) -> list[RunRecord]:
        """Every readable record; unreadable ones and leftover temporary files are deleted."""
        records: list[RunRecord] = []
        try:
            entries = sorted(self.path.iterdir())
        except FileNotFoundError:
            return records
        for entry in entries:
            if entry.name.endswith(_TMP_SUFFIX):
                entry.unlink(missing_ok=True)
                continue
            if not entry.name.endswith(_SUFFIX):
                continue
            try:
                record = RunRecord.from_json(entry.read_bytes())
            except (ValueError, OSError) as exc:
                logger.warning("dropping unreadable run record %s: %s", entry.name, exc)
                entry.unlink(missing_ok=True)
                continue
            if entry != self.path_for(record.namespace, record.name):
                logger.warning("dropping misnamed run record %s", entry.name)
                entry.unlink(missing_ok=True)
                continue
            records.append(record)
        return records
