"""The hash chain over audit records, and its verifier. Pure: no I/O, no clock.

An entry is ``(seq, prev_hash, hash, record)``: ``record`` is the record's canonical JSON,
``seq`` counts from 1, ``prev_hash`` is the previous entry's ``hash`` (``GENESIS``, 64 zeros,
for seq 1) and::

    hash = sha256(prev_hash || {"record":<record>,"seq":<seq>}).hexdigest()

where ``prev_hash`` is taken as its 64 ASCII hex characters and the braces are the canonical
JSON of the pair (sorted keys, no whitespace). A *head* ``SEQ:HASH`` names the last entry; the
log stores one beside the entries, and ``aviator audit verify`` prints it for anchoring.

``verify`` reads entries in their stored order (the log's seq order, an export's line order).
A clean chain is checked in one streaming pass. Anything else is diagnosed against what the
chain itself proves: an entry whose content matches its hash is *genuine* (its true seq is its
own, or, if only its seq field was altered, the one its ``prev_hash`` implies). Then, for one
act of tampering, it names:

- ``edited``: an entry whose content no longer matches its hash (record, seq field, prev_hash or
  hash altered), or one rewritten with a recomputed hash (the next entry, or the head, still
  names the original);
- ``deleted``: seqs missing from the middle (or the start) of the log;
- ``truncated``: seqs missing at the end, up to the head (the stored one, or an anchored one);
- ``inserted``: an entry that takes no place in the chain: a second claimant of a seq (the
  chain links through the other), a seq outside the log, or beyond the head;
- ``reordered``: genuine entries out of seq order (the fewest that explain the order);
- ``head``: an anchored head that is not in the log.

What it cannot see: without a head, the loss of the last entries and an appended entry with a
valid hash look like a shorter or longer honest log; someone who can rewrite the entries *and*
the stored head (recomputing every later hash) produces a valid chain, which only an anchored
head kept elsewhere (``expect=``) exposes. Several simultaneous changes are all reported, but
their names are then best effort.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from aviator.audit.record import AuditRecord

__all__ = [
    "GENESIS",
    "GENESIS_HEAD",
    "Entry",
    "Finding",
    "FindingKind",
    "Head",
    "Unreadable",
    "VerifyReport",
    "build",
    "canonical",
    "entry_hash",
    "genesis_anchor",
    "is_hash",
    "link",
    "link_rows",
    "verify",
]

GENESIS: Final = "0" * 64
"""The ``prev_hash`` of seq 1."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

FindingKind = Literal["edited", "deleted", "inserted", "reordered", "truncated", "head"]


def is_hash(text: str) -> bool:
    """64 lowercase hex digits."""
    return bool(_HEX64.match(text))


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry of a log (or of a prefix of it): ``SEQ:HASH``; seq 0 is the empty log."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """``SEQ:HASH`` as printed by ``aviator audit verify``; ``ValueError`` otherwise."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or not is_hash(digest):
            raise ValueError(f"a head is SEQ:HASH (64 hex digits), not {text!r}")
        return cls(int(seq), digest)


GENESIS_HEAD: Final = Head(0, GENESIS)


def canonical(seq: int, record: bytes) -> bytes:
    """``{"record":<record>,"seq":<seq>}``, the bytes an entry's hash covers after prev_hash.

    Equal to ``orjson.dumps({"record": value, "seq": seq}, option=OPT_SORT_KEYS)`` when
    ``record`` is the canonical JSON of ``value``.
    """
    return b'{"record":' + record + b',"seq":' + str(seq).encode() + b"}"


def entry_hash(prev_hash: str, seq: int, record: bytes) -> str:
    data = prev_hash.encode("utf-8", "surrogatepass") + canonical(seq, record)
    return hashlib.sha256(data).hexdigest()


def link_rows(
    prev_hash: str, seq: int, records: Iterable[bytes]
) -> list[tuple[int, str, str, bytes]]:
    """``build`` as plain rows for the log's writer: ``(seq, prev_hash, hash, record)`` for each
    record chained after the entry ``seq``/``prev_hash`` (equal to ``build``, the tests prove
    it, in a third of the time: the writer chains every record of the gateway's requests)."""
    sha256 = hashlib.sha256
    out = []
    prev = prev_hash
    for record in records:
        seq += 1
        digest = sha256(
            b'%s{"record":%s,"seq":%d}' % (prev.encode("utf-8", "surrogatepass"), record, seq)
        ).hexdigest()
        out.append((seq, prev, digest, record))
        prev = digest
    return out


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    prev_hash: str
    hash: str
    record: bytes
    """The record's canonical JSON (``AuditRecord.to_json``)."""

    @property
    def head(self) -> Head:
        return Head(self.seq, self.hash)

    def data(self) -> Any:
        """The record as JSON data (``ValueError`` if it is not JSON)."""
        try:
            return orjson.loads(self.record)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"entry {self.seq}: the record is not JSON: {exc}") from exc

    def audit_record(self) -> AuditRecord:
        """The record (``ValueError`` if it is not one, e.g. after tampering)."""
        return AuditRecord.from_dict(self.data())

    def to_dict(self) -> dict[str, Any]:
        """``{seq, prev_hash, hash, record}``; a record that is not JSON becomes its text."""
        try:
            record: Any = orjson.loads(self.record)
        except orjson.JSONDecodeError:
            record = self.record.decode("utf-8", "replace")
        return {"hash": self.hash, "prev_hash": self.prev_hash, "record": record, "seq": self.seq}

    def to_json(self) -> bytes:
        """One export line (without the newline): sorted keys, no whitespace."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, line: bytes | str) -> Entry:
        """Parse an export line; the record is re-canonicalised. ``ValueError`` if malformed."""
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from exc
        if not isinstance(data, Mapping):
            raise ValueError("not an object")
        missing = {"seq", "prev_hash", "hash", "record"} - set(data)
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
        seq, prev_hash, digest = data["seq"], data["prev_hash"], data["hash"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise ValueError("seq is not an integer")
        if not isinstance(prev_hash, str) or not isinstance(digest, str):
            raise ValueError("prev_hash and hash must be strings")
        record = orjson.dumps(data["record"], option=orjson.OPT_SORT_KEYS)
        return cls(seq=seq, prev_hash=prev_hash, hash=digest, record=record)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A place in the input that holds no entry (a line of an export that is not one)."""

    reason: str


def link(head: Head, record: bytes) -> Entry:
    """The entry that follows ``head``."""
    seq = head.seq + 1
    return Entry(
        seq=seq, prev_hash=head.hash, hash=entry_hash(head.hash, seq, record), record=record
    )


def build(records: Iterable[bytes], *, head: Head = GENESIS_HEAD) -> list[Entry]:
    """Chain ``records`` after ``head``."""
    entries = []
    for record in records:
        entry = link(head, record)
        entries.append(entry)
        head = entry.head
    return entries


# -- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    seq: int | None
    """The entry concerned: its true seq, or the first missing one."""
    message: str
    position: int | None = None
    """Where it is in the input, from 1 (the line of an export); None if it is not there."""
    last_seq: int | None = None
    """The last missing seq of a ``deleted``/``truncated`` range."""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    """Places read (entries and unreadable lines)."""
    head: Head
    """The last entry read (``GENESIS_HEAD`` for none): what to anchor when the log is intact."""
    findings: tuple[Finding, ...] = ()
    first_seq: int = 1

    @property
    def ok(self) -> bool:
        return not self.findings

    def kinds(self) -> set[FindingKind]:
        return {f.kind for f in self.findings}


# -- verification --------------------------------------------------------------------------------

Item = Entry | Unreadable
"""One place of the input: an entry, or a line that holds none."""


def verify(
    entries: Iterable[Item],
    *,
    head: Head | None = None,
    expect: Head | str | None = None,
    first_seq: int = 1,
    label: str = "position",
) -> VerifyReport:
    """Check ``entries`` (in stored order) and name whatever is wrong.

    ``head`` is the log's stored head: entries after it are ``inserted``, missing ones up to it
    ``truncated``, a different hash at its seq ``edited``. ``expect`` is an anchored head
    (``Head``, or a bare hash): it must be in the log, which may have grown since. ``first_seq``
    > 1 checks a partial export (``export --since``) whose first entry's link is taken on trust,
    unless ``expect`` names the entry before it. ``label`` names a place in messages (``line``
    for an export file).

    ``entries`` is iterated once when intact and twice otherwise (an iterator is first read
    into a list); intact logs are checked in constant memory.
    """
    if first_seq < 1:
        raise ValueError("first_seq counts from 1")
    if isinstance(entries, Iterator):
        entries = list(entries)
    report = _fast(entries, head=head, expect=expect, first_seq=first_seq)
    if report is not None:
        return report
    items = entries if isinstance(entries, Sequence) else list(entries)
    from aviator.audit import _diagnosis  # only a broken chain needs it

    return _diagnosis.diagnose(items, head=head, expect=expect, first_seq=first_seq, label=label)


def _fast(
    entries: Iterable[Item], *, head: Head | None, expect: Head | str | None, first_seq: int
) -> VerifyReport | None:
    """The report of an intact chain, or None when anything is off (then: diagnose)."""
    seq = first_seq
    prev = GENESIS if first_seq == 1 else None
    last: Entry | None = None
    found = expect is None or genesis_anchor(expect, first_seq)
    sha256 = hashlib.sha256
    for item in entries:
        if type(item) is not Entry or item.seq != seq:
            return None
        if prev is None:
            prev = item.prev_hash
            if isinstance(expect, Head) and expect.seq == first_seq - 1:
                found = expect.hash == prev
            elif isinstance(expect, str) and expect == prev:
                found = True
        if item.prev_hash != prev:
            return None
        # entry_hash, inlined: this loop is what verify costs on an intact log.
        data = b"".join(
            (prev.encode("utf-8", "surrogatepass"), b'{"record":', item.record, b',"seq":%d}' % seq)
        )
        if sha256(data).hexdigest() != item.hash:
            return None
        if not found:
            assert expect is not None
            found = _is_anchor(expect, item)
        prev = item.hash
        last = item
        seq += 1
    empty = Head(first_seq - 1, GENESIS if first_seq == 1 else "")
    tail = empty if last is None else last.head
    if head is not None and (head.seq != tail.seq or head.hash != tail.hash):
        return None
    if not found:
        return None
    return VerifyReport(entries=seq - first_seq, head=tail, first_seq=first_seq)


def _is_anchor(expect: Head | str, entry: Entry) -> bool:
    if isinstance(expect, Head):
        return expect.seq == entry.seq and expect.hash == entry.hash
    return expect == entry.hash


def genesis_anchor(expect: Head | str | None, first_seq: int) -> bool:
    """Whether the anchor is the genesis of a full log (always there)."""
    if first_seq != 1 or expect is None:
        return False
    if isinstance(expect, Head):
        return expect.seq == 0 and expect.hash == GENESIS
    return expect == GENESIS
