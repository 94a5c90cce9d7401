"""Properties of the chain: an intact chain verifies, and any single act of tampering — an edit,
a deletion, an insertion, a reordering, a truncation — is detected and named for what it is,
with the right seq (and, where the entry is there, the right place)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aviator.audit import chain
from aviator.audit.chain import Entry, Finding, Head, Item, Unreadable, VerifyReport

from .helpers import HEX, chains, record_bytes, records

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def head_of(entries: list[Entry]) -> Head:
    return entries[-1].head


def only(report: VerifyReport) -> Finding:
    assert not report.ok
    assert len(report.findings) == 1, [f.message for f in report.findings]
    return report.findings[0]


@PROPS
@given(chains)
def test_an_intact_chain_verifies_and_reports_its_head(entries: list[Entry]) -> None:
    report = chain.verify(entries, head=head_of(entries))
    assert report.ok
    assert report.head == head_of(entries)
    assert report.entries == len(entries)
    # Every prefix is a valid log too, and any entry of it is a valid anchor.
    assert chain.verify(entries, expect=entries[len(entries) // 2].head).ok
    assert chain.verify(entries, expect=entries[0].hash).ok


@PROPS
@given(records)
def test_an_export_line_reads_back_to_the_same_entry(record: object) -> None:
    from aviator.audit.record import AuditRecord

    assert isinstance(record, AuditRecord)
    (entry,) = chain.build([record.to_json()])
    again = Entry.from_json(entry.to_json())
    assert again == entry
    assert again.audit_record() == record


EDITS = ("record", "seq", "prev_hash", "hash", "rewrite")


@PROPS
@given(chains, st.data())
def test_any_single_edit_is_named_with_its_seq(entries: list[Entry], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(entries) - 1), label="entry")
    what = data.draw(st.sampled_from(EDITS), label="edit")
    original = entries[i]
    if what in ("record", "rewrite"):
        new = data.draw(record_bytes.filter(lambda b: b != original.record))
        edited = dataclasses.replace(original, record=new)
        if what == "rewrite":  # the tamperer recomputes this entry's own hash
            edited = dataclasses.replace(
                edited, hash=chain.entry_hash(original.prev_hash, original.seq, new)
            )
    elif what == "seq":
        seq = data.draw(st.integers(-3, len(entries) + 3).filter(lambda s: s != original.seq))
        edited = dataclasses.replace(original, seq=seq)
    else:
        value = data.draw(HEX.filter(lambda h: h != getattr(original, what)))
        edited = dataclasses.replace(original, **{what: value})
    tampered: list[Item] = [*entries[:i], edited, *entries[i + 1 :]]

    finding = only(chain.verify(tampered, head=head_of(entries)))
    assert finding.kind == "edited"
    assert finding.seq == original.seq
    assert finding.position == i + 1
    if what == "seq":
        assert f"seq field reads {edited.seq}" in finding.message
    if what == "rewrite":
        assert "rewritten" in finding.message


@PROPS
@given(chains, st.data())
def test_any_single_deletion_is_named_and_the_last_one_is_a_truncation(
    entries: list[Entry], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(entries) - 1), label="deleted")
    tampered = entries[:i] + entries[i + 1 :]
    finding = only(chain.verify(tampered, head=head_of(entries)))
    assert finding.kind == ("truncated" if i == len(entries) - 1 else "deleted")
    assert (finding.seq, finding.last_seq) == (i + 1, i + 1)
    assert finding.position is None


@PROPS
@given(chains, st.data())
def test_truncating_the_tail_is_caught_by_the_head(
    entries: list[Entry], data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, len(entries)), label="removed")
    tampered = entries[: len(entries) - k]
    finding = only(chain.verify(tampered, head=head_of(entries)))
    assert finding.kind == "truncated"
    assert (finding.seq, finding.last_seq) == (len(entries) - k + 1, len(entries))
    # The same cut checked against an anchored head only (the stored one rewritten to match).
    short_head = tampered[-1].head if tampered else chain.GENESIS_HEAD
    anchored = only(chain.verify(tampered, head=short_head, expect=head_of(entries)))
    assert anchored.kind == "truncated"
    assert anchored.last_seq == len(entries)


FORGERIES = ("copy", "linked", "garbage", "unreadable")


@PROPS
@given(chains, st.data())
def test_any_single_insertion_is_named_at_its_place(
    entries: list[Entry], data: st.DataObject
) -> None:
    p = data.draw(st.integers(0, len(entries)), label="position")
    how = data.draw(st.sampled_from(FORGERIES), label="forgery")
    forged: Item
    if how == "copy":  # a replayed entry
        j = data.draw(st.integers(0, len(entries) - 1), label="copied")
        forged = entries[j]
    elif how == "linked":  # a new record chained properly onto the entry before it
        before = entries[p - 1].head if p > 0 else chain.GENESIS_HEAD
        forged = chain.link(before, data.draw(record_bytes))
    elif how == "garbage":
        forged = Entry(
            seq=data.draw(st.integers(-2, len(entries) + 3)),
            prev_hash=data.draw(HEX),
            hash=data.draw(HEX),
            record=data.draw(record_bytes),
        )
    else:
        forged = Unreadable("not JSON")
    tampered = [*entries[:p], forged, *entries[p:]]

    finding = only(chain.verify(tampered, head=head_of(entries)))
    assert finding.kind == "inserted"
    twin = next(
        (k for k, e in enumerate(tampered) if isinstance(forged, Entry) and e == forged and k != p),
        None,
    )
    if twin is not None and abs(twin - p) == 1:
        # An exact copy right beside its original: either of the two identical lines is "the" copy.
        assert finding.position in (p + 1, twin + 1)
    else:
        assert finding.position == p + 1
    expected_seq = forged.seq if isinstance(forged, Entry) else p + 1
    assert finding.seq == expected_seq


@PROPS
@given(chains.filter(lambda es: len(es) >= 2), st.data())
def test_swapping_two_entries_names_the_swapped_ones(
    entries: list[Entry], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(entries) - 2), label="first")
    j = data.draw(st.integers(i + 1, len(entries) - 1), label="second")
    tampered = list(entries)
    tampered[i], tampered[j] = tampered[j], tampered[i]
    report = chain.verify(tampered, head=head_of(entries))
    assert report.kinds() == {"reordered"}
    named = {f.seq for f in report.findings}
    if j - i == 1:
        assert len(named) == 1
        assert named <= {i + 1, j + 1}
    else:
        assert named == {i + 1, j + 1}
    for f in report.findings:
        assert f.position == (j + 1 if f.seq == i + 1 else i + 1)


@PROPS
@given(chains.filter(lambda es: len(es) >= 3), st.data())
def test_moving_one_entry_names_it(entries: list[Entry], data: st.DataObject) -> None:
    a = data.draw(st.integers(0, len(entries) - 1), label="from")
    targets = [b for b in range(len(entries)) if abs(b - a) >= 2]
    assume(targets)
    b = data.draw(st.sampled_from(targets), label="to")
    tampered = list(entries)
    moved = tampered.pop(a)
    tampered.insert(b, moved)
    finding = only(chain.verify(tampered, head=head_of(entries)))
    assert finding.kind == "reordered"
    assert finding.seq == moved.seq
    assert finding.position == b + 1


@PROPS
@given(chains.filter(lambda es: len(es) >= 2), st.data())
def test_swapping_seqs_in_place_as_in_the_database_is_a_reordering(
    entries: list[Entry], data: st.DataObject
) -> None:
    """In the database the seq is the order: swapping two rows' seqs swaps their places."""
    i = data.draw(st.integers(0, len(entries) - 2), label="first")
    j = data.draw(st.integers(i + 1, len(entries) - 1), label="second")
    tampered = list(entries)
    tampered[i] = dataclasses.replace(entries[j], seq=entries[i].seq)
    tampered[j] = dataclasses.replace(entries[i], seq=entries[j].seq)
    report = chain.verify(tampered, head=head_of(entries))
    assert report.kinds() == {"reordered"}
    assert {f.seq for f in report.findings} == {i + 1, j + 1}


@PROPS
@given(chains.filter(lambda es: len(es) >= 2), st.data())
def test_without_a_head_tampering_before_the_last_entry_is_named_the_same(
    entries: list[Entry], data: st.DataObject
) -> None:
    """The stored head only matters at the tail: elsewhere the chain names everything itself."""
    n = len(entries)
    op = data.draw(st.sampled_from(["edit", "delete", "insert", "swap"]))
    i = data.draw(st.integers(0, n - 2), label="entry")
    tampered: list[Item] = list(entries)
    if op == "edit":
        tampered[i] = dataclasses.replace(entries[i], hash=data.draw(HEX))
    elif op == "delete":
        del tampered[i]
    elif op == "insert":
        tampered.insert(i, entries[-1])
    else:
        tampered[i], tampered[n - 2] = tampered[n - 2], tampered[i]
    with_head = chain.verify(tampered, head=head_of(entries))
    without = chain.verify(tampered)
    assert without.findings == with_head.findings or (op == "swap" and i == n - 2)
