"""JSON merge patches (RFC 7386) that turn one object into another. Pure.

The Kubernetes store replaces an object's spec with a merge patch computed against the stored
object, instead of a PUT: the patch carries the stored ``resourceVersion``, so the API server
refuses it with 409 when someone wrote in between (optimistic concurrency, as a PUT would), and
keys the new object no longer has are sent as ``null`` so that they are removed. Lists are
replaced whole, as merge patches always do.

``null`` cannot be a value in a merge patch (it means "remove"), so a ``None`` in the desired
object removes the key too; aviator's wire form never stores nulls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["merge_patch"]


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that makes ``current`` equal to ``desired`` (``{}`` when they are)."""
    patch: dict[str, Any] = {}
    for key in current:
        if key not in desired:
            patch[key] = None
    for key, want in desired.items():
        have = current.get(key)
        if key in current and have == want:
            continue
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            patch[key] = merge_patch(have, want)
        elif isinstance(want, Mapping):
            # A new or retyped mapping: its nulls would mean nothing to remove, so drop them.
            patch[key] = merge_patch({}, want)
        else:
            patch[key] = want
    return patch
