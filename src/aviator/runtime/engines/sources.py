"""``model.source`` spellings the engine adapters understand (pure string work, no I/O)."""

from __future__ import annotations

__all__ = ["FILE_SCHEME", "HF_SCHEME", "file_path"]

HF_SCHEME = "hf://"
"""``hf://<org>/<repo>``: a Hugging Face Hub repository (llama.cpp also takes ``:<quant>``)."""
FILE_SCHEME = "file://"
"""``file:///abs/path`` (or ``file://localhost/abs/path``): weights on this machine."""


def file_path(source: str) -> str | None:
    """The local path of a ``file://`` source, or None for any other spelling.

    Only the scheme (and a ``localhost`` host) is removed; the path is taken as written, not
    percent-decoded, so it reads the same as a plain path would.
    """
    if not source.startswith(FILE_SCHEME):
        return None
    path = source.removeprefix(FILE_SCHEME)
    return path.removeprefix("localhost") if path.startswith("localhost/") else path
