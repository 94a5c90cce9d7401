"""How a CLI command finds and authenticates to the Control API.

Order: ``--server``/``AVIATOR_SERVER`` and ``--token``/``AVIATOR_TOKEN`` if given; otherwise the
running plane's ``<data-dir>/plane.json`` and ``<data-dir>/admin.token``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aviator.api.errors import AviatorError
from aviator.plane.datadir import DataDir

if TYPE_CHECKING:
    from aviator.client import Client

DEFAULT_DATA_DIR = Path(os.environ.get("AVIATOR_DATA_DIR", ".aviator"))


class NotConfigured(AviatorError):
    """The CLI cannot tell where the Control API is, or has no token for it."""


@dataclass(frozen=True, slots=True)
class CliContext:
    data_dir: Path
    server: str | None = None
    token: str | None = None

    @property
    def datadir(self) -> DataDir:
        return DataDir(self.data_dir)

    def api_url(self) -> str:
        if self.server:
            return self.server.rstrip("/")
        info = self.datadir.read_info()
        if not info or not info.get("apiUrl"):
            raise NotConfigured(
                f"no running plane found in {self.data_dir} (no plane.json); start one with "
                "`aviator up`, or pass --server/--data-dir"
            )
        return str(info["apiUrl"])

    def api_token(self) -> str:
        if self.token:
            return self.token
        path = self.datadir.admin_token
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise NotConfigured(f"no admin token at {path}; pass --token or --data-dir") from None

    def client(self, *, timeout: float = 10.0) -> Client:
        from aviator.client import Client  # not at the top: the root callback of every command

        return Client(self.api_url(), token=self.api_token(), timeout=timeout)
