"""Token usage read off an answer on its way to the client. Pure: bytes in, counts out.

OpenAI-shaped answers report ``usage`` as ``{"prompt_tokens", "completion_tokens",
"prompt_tokens_details": {"cached_tokens"}}``: a non-streamed answer in its JSON body, a streamed
one in its last ``data:`` event when the request asked for ``stream_options.include_usage`` (vLLM
with ``continuous_usage_stats`` repeats it, growing, in every event; the last one counts).

The gateway must not slow the relay down to read it, so nothing here parses a whole answer:

- ``from_json`` finds the last ``"usage"`` key whose value is an object (a ``bytes.rfind``) and
  decodes only that object.
- ``Scanner`` is fed the chunks of a stream as they pass. It keeps only the unfinished last line
  (bounded by ``LINE_MAX_BYTES``) and, per chunk, looks for ``"usage"`` with one ``bytes.find``;
  ``"usage":null`` (what every chunk carries with ``include_usage``) is skipped without decoding
  anything. A JSON body that arrives in chunks (a large non-streamed answer) keeps only its last
  ``TAIL_BYTES``, where ``usage`` sits.

A ``"usage"`` inside generated text cannot be mistaken for the key: in JSON its quotes are escaped
(``\\"usage\\"``), and the key must be followed by ``:`` and ``{``.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

__all__ = ["LINE_MAX_BYTES", "TAIL_BYTES", "Scanner", "Usage", "from_json", "scanner_for"]

LINE_MAX_BYTES = 64 * 1024
"""Longest unfinished SSE line kept between chunks; a longer one is skipped to its end (a usage
event is a few hundred bytes)."""

TAIL_BYTES = 8 * 1024
"""How much of the end of a chunked JSON body is kept to find its ``usage`` in."""

USAGE_OBJECT_MAX_BYTES = 8 * 1024
"""Longest ``usage`` object decoded; anything longer is not a usage report."""

_CLOSE_TRIES = 8
"""Closing braces tried as the end of a usage object (it nests one level: two suffice)."""

_KEY = b'"usage"'
_KEY_LEN = len(_KEY)
_SPACE = b" \t\r\n"


_new_tuple = tuple.__new__


class Usage(NamedTuple):
    """Tokens one answer accounted for (a named tuple: cheap to make on every answer)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    """Prompt tokens served from the prefix cache; None when the engine did not say (vLLM reports
    it only with ``--enable-prompt-tokens-details``)."""


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None  # bool is not a count


def _usage(doc: object) -> Usage | None:
    # (Inlined checks, positional construction: this runs for every answer.)
    if type(doc) is not dict:
        return None
    prompt = doc.get("prompt_tokens")
    completion = doc.get("completion_tokens", 0)
    if type(prompt) is not int or prompt < 0 or type(completion) is not int or completion < 0:
        return None  # (bool is not a count: its type is not int)
    details = doc.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if type(details) is dict else None
    if cached is not None:
        cached = min(cached, prompt)
    # (``Usage(...)`` goes through a Python-level ``__new__``; this is the same tuple, made in C.)
    return _new_tuple(Usage, (prompt, completion, cached))


def _value_start(data: bytes, key_at: int) -> int:
    """Where the object value of the ``"usage"`` key at ``key_at`` opens, or -1 (not a key, or
    its value is not an object: ``null``, say)."""
    if key_at > 0 and data[key_at - 1] == 0x5C:  # an escaped quote: text inside a string
        return -1
    i = key_at + len(_KEY)
    n = len(data)
    while i < n and data[i] in _SPACE:
        i += 1
    if i >= n or data[i] != 0x3A:  # :
        return -1
    i += 1
    while i < n and data[i] in _SPACE:
        i += 1
    return i if i < n and data[i] == 0x7B else -1


def _decode_at(data: bytes, key_at: int) -> Usage | None:
    """The usage object whose key is at ``key_at``, or None.

    The object ends at one of the next ``}``: the first one that balances the braces opened since
    ``{`` is decoded (counting and decoding run in C, far faster than walking the bytes in
    Python). Should a brace inside a string throw the count off, orjson rejects the cut-off text
    and every following ``}`` is tried, up to ``_CLOSE_TRIES`` braces in all.
    """
    # The usual shape, ``"usage":{``, without walking whitespace in Python.
    start = key_at + _KEY_LEN + 1
    if data[start - 1 : start + 1] != b":{" or (key_at > 0 and data[key_at - 1] == 0x5C):
        start = _value_start(data, key_at)
        if start < 0:
            return None
    stop = min(len(data), start + USAGE_OBJECT_MAX_BYTES)
    end = start
    counting = True
    for _ in range(_CLOSE_TRIES):
        end = data.find(b"}", end + 1, stop)
        if end < 0:
            return None
        if counting and data.count(b"{", start, end) != data.count(b"}", start, end) + 1:
            continue
        try:
            doc = orjson.loads(data[start : end + 1])
        except orjson.JSONDecodeError:
            counting = False
            continue
        return _usage(doc)
    return None


def from_json(body: bytes) -> Usage | None:
    """The ``usage`` of a JSON answer (the last ``"usage"`` key with an object value), or None."""
    end = len(body)
    # The usual answer first, in fewer steps than ``_decode_at`` (and with its outcome): the last
    # key is followed by ``:{`` and its object holds no other (so its first ``}`` balances).
    at = body.rfind(_KEY)
    if at < 0:
        return None
    start = at + _KEY_LEN + 1
    if body[start - 1 : start + 1] == b":{" and not (at and body[at - 1] == 0x5C):
        close = body.find(b"}", start + 1, start + USAGE_OBJECT_MAX_BYTES)
        if close > 0 and body.find(b"{", start + 1, close) < 0:
            try:
                doc = orjson.loads(body[start : close + 1])
            except orjson.JSONDecodeError:
                pass  # (``_decode_at`` goes on with the next braces)
            else:
                found = _usage(doc)
                if found is not None:
                    return found
                end = at  # decoded, not a usage: an earlier key may be
    while True:
        at = body.rfind(_KEY, 0, end)
        if at < 0:
            return None
        found = _decode_at(body, at)
        if found is not None:
            return found
        end = at


class Scanner:
    """Finds the usage in a streamed answer, chunk by chunk (``feed``, then ``finish``)."""

    __slots__ = ("_pending", "_skipping", "_sse", "usage")

    def __init__(self, *, sse: bool) -> None:
        self._sse = sse
        self._pending = b""
        """SSE: the unfinished last line. JSON: the last ``TAIL_BYTES`` seen."""
        self._skipping = False
        """SSE: the current line grew past ``LINE_MAX_BYTES`` and is ignored to its end."""
        self.usage: Usage | None = None
        """The latest usage seen so far."""

    def feed(self, chunk: bytes) -> None:
        if not self._sse:
            tail = self._pending + chunk if len(chunk) < TAIL_BYTES else chunk
            self._pending = tail[-TAIL_BYTES:]
            return
        last_nl = chunk.rfind(b"\n")
        if last_nl < 0:  # no line ends in this chunk: keep it for the next one
            self._hold(chunk)
            return
        if self._skipping:
            first_nl = chunk.find(b"\n")
            self._skipping = False
            lines = chunk[first_nl + 1 : last_nl + 1]
        else:
            lines = self._pending + chunk[: last_nl + 1] if self._pending else chunk[: last_nl + 1]
        self._pending = b""
        self._scan(lines)
        self._hold(chunk[last_nl + 1 :])

    def finish(self) -> Usage | None:
        """The usage of the whole answer, once it ended (None when it reported none)."""
        if self._sse:
            if self._pending and not self._skipping:
                self._scan(self._pending)
        elif self._pending:
            found = from_json(self._pending)
            if found is not None:
                self.usage = found
        self._pending = b""
        return self.usage

    def _hold(self, rest: bytes) -> None:
        if self._skipping or not rest:
            return
        if len(self._pending) + len(rest) > LINE_MAX_BYTES:
            self._pending = b""
            self._skipping = True
        else:
            self._pending += rest

    def _scan(self, lines: bytes) -> None:
        at = lines.find(_KEY)
        while at >= 0:
            line_start = lines.rfind(b"\n", 0, at) + 1
            if lines.startswith(b"data:", line_start):
                found = _decode_at(lines, at)
                if found is not None:
                    self.usage = found
            at = lines.find(_KEY, at + len(_KEY))


def scanner_for(content_type: str) -> Scanner | None:
    """A scanner for an answer of ``content_type`` (server-sent events or JSON), else None."""
    media = content_type.partition(";")[0].strip().lower()
    if media == "text/event-stream":
        return Scanner(sse=True)
    if media == "application/json":
        return Scanner(sse=False)
    return None
