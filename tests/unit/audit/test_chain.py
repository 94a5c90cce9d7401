"""The chain by example: the hash rule, heads, export lines, anchors, partial exports, and the
messages verify prints for each kind of tampering."""

from __future__ import annotations

import dataclasses
import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.audit import chain
from aviator.audit.chain import GENESIS, GENESIS_HEAD, Entry, Head, Unreadable

from .helpers import entries, record, record_bytes


def test_the_hash_covers_the_previous_hash_and_the_canonical_seq_and_record() -> None:
    data = record(1).to_json()
    (first,) = chain.build([data])
    pair = orjson.dumps({"record": orjson.loads(data), "seq": 1}, option=orjson.OPT_SORT_KEYS)
    assert chain.canonical(1, data) == pair
    assert first.hash == hashlib.sha256(GENESIS.encode() + pair).hexdigest()
    assert first.prev_hash == GENESIS == "0" * 64
    second = chain.link(first.head, data)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash != first.hash  # same record, different place


def test_a_head_prints_and_parses_as_seq_colon_hash() -> None:
    head = entries(3)[-1].head
    assert Head.parse(str(head)) == head
    assert str(GENESIS_HEAD) == "0:" + "0" * 64
    for bad in ("", "12", "x:" + "a" * 64, "3:" + "a" * 63, "3:" + "A" * 64):
        with pytest.raises(ValueError, match="SEQ:HASH"):
            Head.parse(bad)


def test_an_export_line_has_the_entry_fields_with_the_record_as_an_object() -> None:
    entry = entries(1)[0]
    line = orjson.loads(entry.to_json())
    assert list(line) == ["hash", "prev_hash", "record", "seq"]
    assert line["record"]["request_id"] == "req-0"
    assert Entry.from_json(entry.to_json()) == entry


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not an object"),
        (b'{"seq": 1}', "missing hash, prev_hash, record"),
        (b'{"seq": "1", "prev_hash": "", "hash": "", "record": {}}', "seq is not an integer"),
        (b'{"seq": true, "prev_hash": "", "hash": "", "record": {}}', "seq is not an integer"),
        (b'{"seq": 1, "prev_hash": 0, "hash": "", "record": {}}', "must be strings"),
    ],
)
def test_malformed_export_lines_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Entry.from_json(line)


def test_an_empty_log_is_intact_and_its_head_is_genesis() -> None:
    report = chain.verify([], head=GENESIS_HEAD)
    assert report.ok
    assert report.head == GENESIS_HEAD
    assert chain.verify([], expect=GENESIS).ok


def test_an_iterator_is_read_once_and_still_diagnosed() -> None:
    log = entries(5)
    del log[2]
    report = chain.verify(iter(log), head=entries(5)[-1].head)
    assert [f.kind for f in report.findings] == ["deleted"]


def messages(items: list[Entry | Unreadable], **kwargs: object) -> list[str]:
    return [f.message for f in chain.verify(items, **kwargs).findings]  # type: ignore[arg-type]


def test_each_kind_of_tampering_reads_plainly() -> None:
    log = entries(8)
    head = log[-1].head
    edited = dataclasses.replace(log[3], record=log[3].record.replace(b"allow", b"deny"))
    assert messages([*log[:3], edited, *log[4:]], head=head) == [
        "seq 4 was edited: its content does not match its hash"
    ]
    assert messages([*log[:3], *log[6:]], head=head) == ["seqs 4-6 are missing (deleted)"]
    assert messages(log[:5], head=head) == [
        "the log ends at seq 5 but its head is seq 8: seqs 6-8 were removed"
    ]
    assert messages([*log[:3], log[6], *log[3:]], head=head) == [
        "the entry at position 4 was inserted: it is a copy of seq 7 (position 8)"
    ]
    assert messages([*log, chain.link(head, log[0].record)], head=head) == [
        "the entry at position 9 was inserted: it claims seq 9, beyond the log's head (seq 8)"
    ]
    assert messages([*log[:2], log[5], *log[3:5], log[2], *log[6:]], head=head) == [
        "seq 3 is out of order: the entry at position 6, after seq 5",
        "seq 6 is out of order: the entry at position 3, after seq 2",
    ]
    assert messages([*log[:2], Unreadable("not JSON"), *log[3:]], head=head, label="line") == [
        "seq 3 was edited: the entry at line 3 is not an entry (not JSON)"
    ]


def test_a_rewrite_with_a_recomputed_hash_is_caught_by_the_next_link_or_the_head() -> None:
    log = entries(4)
    head = log[-1].head

    def rewrite(e: Entry) -> Entry:
        data = e.record.replace(b"allow", b"deny")
        return dataclasses.replace(e, record=data, hash=chain.entry_hash(e.prev_hash, e.seq, data))

    assert messages([log[0], rewrite(log[1]), *log[2:]], head=head) == [
        "seq 2 was rewritten: its hash was recomputed, but seq 3 still links to the original"
    ]
    assert messages([*log[:3], rewrite(log[3])], head=head) == [
        "seq 4 was rewritten: its hash differs from the log's head"
    ]
    # Without a head (or an anchor), rewriting the very last entry cannot be seen.
    assert chain.verify([*log[:3], rewrite(log[3])]).ok


def test_an_anchored_head_must_be_in_the_log_which_may_have_grown_since() -> None:
    log = entries(6)
    anchor = log[3].head
    assert chain.verify(log, expect=anchor).ok
    assert chain.verify(log, expect=anchor.hash).ok
    report = chain.verify(log, expect=Head(4, "a" * 64))
    assert [(f.kind, f.seq) for f in report.findings] == [("head", 4)]
    assert "differs from the anchored head" in report.findings[0].message
    report = chain.verify(log, expect="b" * 64)
    assert [f.kind for f in report.findings] == ["head"]
    assert "is not in the log" in report.findings[0].message
    report = chain.verify(log[:3], expect=anchor)
    assert [(f.kind, f.seq, f.last_seq) for f in report.findings] == [("truncated", 4, 4)]


def test_a_full_rewrite_verifies_on_its_own_but_not_against_an_anchor() -> None:
    log = entries(5)
    anchor = log[-1].head
    forged = chain.build(
        e.record.replace(b"allow", b"deny") if e.seq == 2 else e.record for e in log
    )
    assert chain.verify(forged, head=forged[-1].head).ok
    report = chain.verify(forged, head=forged[-1].head, expect=anchor)
    assert [(f.kind, f.seq) for f in report.findings] == [("head", 5)]


def test_a_partial_export_checks_from_its_first_seq_and_links_to_an_anchor() -> None:
    log = entries(6)
    part = log[3:]
    assert not chain.verify(part).ok  # seqs 1-3 missing
    assert chain.verify(part, first_seq=4).ok
    assert chain.verify(part, first_seq=4, expect=log[2].head).ok
    report = chain.verify(part, first_seq=4, expect=Head(3, "c" * 64))
    assert [(f.kind, f.seq) for f in report.findings] == [("head", 3)]
    report = chain.verify(part, first_seq=4, expect=log[0].head)
    assert "cannot be checked here" in report.findings[0].message
    with pytest.raises(ValueError, match="from 1"):
        chain.verify(part, first_seq=0)


def test_several_changes_are_all_reported() -> None:
    log = entries(10)
    tampered = list(log)
    tampered[1] = dataclasses.replace(log[1], hash="f" * 64)
    del tampered[5]
    tampered.append(log[0])
    kinds = {(f.kind, f.seq) for f in chain.verify(tampered, head=log[-1].head).findings}
    assert kinds == {("edited", 2), ("deleted", 6), ("inserted", 1)}


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(record_bytes | st.binary(max_size=200), max_size=10),
    seq=st.integers(0, 2**40),
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_writers_rows_are_the_chain_build_makes(
    records: list[bytes], seq: int, prev: str
) -> None:
    head = Head(seq, prev)
    expected = [(e.seq, e.prev_hash, e.hash, e.record) for e in chain.build(records, head=head)]
    assert chain.link_rows(prev, seq, records) == expected
