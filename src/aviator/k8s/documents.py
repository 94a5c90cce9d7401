"""Multi-document YAML for ``kubectl apply -f -`` (pure text; no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

__all__ = ["dump_documents"]


def dump_documents(objects: Sequence[dict[str, Any]]) -> str:
    """``---``-separated YAML, keys in the order built (apiVersion, kind, metadata, spec)."""
    return yaml.safe_dump_all(
        objects,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
        explicit_start=True,
    )
