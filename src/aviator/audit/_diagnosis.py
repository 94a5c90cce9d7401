"""Naming what is wrong with a chain that did not verify (``chain.verify``'s second pass).

Works on the whole input in memory. Steps, each reading what the previous ones decided:

1. *genuine* entries: content matches hash under the entry's own seq, or under the seq its
   ``prev_hash`` implies (only the seq field was altered), resolved outwards from genesis;
2. each seq gets at most one *occupant*: among genuine claimants, the one the next entry (or a
   head) links to; the others, and those outside the log, were *inserted*;
3. an entry that is not genuine occupies its claimed seq if free (*edited*), else *inserted*;
4. occupants out of seq order: the fewest that explain it were *reordered*;
5. links between neighbouring occupants, and the head: a genuine entry that the next one does not
   link to was *rewritten*;
6. free seqs: *deleted*, or *truncated* at the end; the anchored head, if any.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aviator.audit.chain import (
    GENESIS,
    GENESIS_HEAD,
    Entry,
    Finding,
    FindingKind,
    Head,
    Item,
    VerifyReport,
    entry_hash,
    genesis_anchor,
)

__all__ = ["diagnose"]


def diagnose(
    items: Sequence[Item],
    *,
    head: Head | None,
    expect: Head | str | None,
    first_seq: int,
    label: str,
) -> VerifyReport:
    return _Diagnosis(items, head=head, expect=expect, first_seq=first_seq, label=label).run()


@dataclass(slots=True)
class _Place:
    position: int
    """From 1, in input order."""
    entry: Entry | None
    reason: str = ""
    """Why an unreadable place holds no entry."""
    genuine: bool = False
    slot: int | None = None
    """The seq this place holds in the chain, once decided."""
    flagged: bool = False


class _Diagnosis:
    """Names what is wrong with a chain the fast pass refused. One instance per verify call."""

    def __init__(
        self,
        items: Sequence[Item],
        *,
        head: Head | None,
        expect: Head | str | None,
        first_seq: int,
        label: str,
    ) -> None:
        self.label = label
        self.places = [
            _Place(i, item, "") if isinstance(item, Entry) else _Place(i, None, item.reason)
            for i, item in enumerate(items, start=1)
        ]
        self.head = head
        self.expect = expect
        self.first = first_seq
        self.findings: list[Finding] = []
        self.occupant: dict[int, _Place] = {}
        """seq -> the place that holds it in the chain (genuine, or an edited original)."""

    def run(self) -> VerifyReport:
        self._resolve()
        self._check_head()
        self._place_genuine()
        self._place_broken()
        self._check_order()
        self._check_links()
        self._check_missing()
        self._check_expect()
        if not self.findings:  # pragma: no cover - the fast pass saw something; say so
            self.findings.append(
                Finding("head", None, "the chain does not verify (no single cause found)")
            )
        last = next((p.entry for p in reversed(self.places) if p.entry is not None), None)
        ordered = sorted(
            self.findings,
            key=lambda f: (f.seq if f.seq is not None else -1, f.position or 0, f.kind),
        )
        return VerifyReport(
            entries=len(self.places),
            head=last.head if last is not None else GENESIS_HEAD,
            findings=tuple(ordered),
            first_seq=self.first,
        )

    # -- which entries are genuine, and at which seq ---------------------------------------------

    def _resolve(self) -> None:
        """Genuine: content matches the hash, under its own seq or the one its link implies."""
        known: dict[str, int] = {GENESIS: 0} if self.first == 1 else {}
        waiting: dict[str, list[_Place]] = {}
        for place in self.places:
            e = place.entry
            if e is None:
                continue
            if entry_hash(e.prev_hash, e.seq, e.record) == e.hash:
                place.genuine, place.slot = True, e.seq
                known.setdefault(e.hash, e.seq)
            else:
                waiting.setdefault(e.prev_hash, []).append(place)
        queue = list(known)
        while queue:
            digest = queue.pop()
            for place in waiting.pop(digest, []):
                e = place.entry
                assert e is not None
                seq = known[digest] + 1
                if entry_hash(e.prev_hash, seq, e.record) == e.hash:
                    place.genuine, place.slot = True, seq
                    if e.hash not in known:
                        known[e.hash] = seq
                        queue.append(e.hash)

    def _check_head(self) -> None:
        """A head whose hash is a genuine entry's at another seq was itself altered: the hash
        cannot be forged, so the chain is judged against the entry it names."""
        head = self.head
        if head is None:
            return
        named = next(
            (
                p.slot
                for p in self.places
                if p.genuine and p.entry is not None and p.entry.hash == head.hash
            ),
            None,
        )
        if named is not None and named != head.seq:
            self.findings.append(
                Finding(
                    "head",
                    head.seq,
                    f"the log's head says seq {head.seq} but holds the hash of seq {named}: "
                    "the head was altered",
                )
            )
            self.head = Head(named, head.hash)

    def _at(self, place: _Place) -> str:
        return f"the entry at {self.label} {place.position}"

    def _add(self, kind: FindingKind, place: _Place | None, seq: int | None, message: str) -> None:
        self.findings.append(
            Finding(kind, seq, message, position=None if place is None else place.position)
        )
        if place is not None:
            place.flagged = True

    def _upper(self) -> int | None:
        return self.head.seq if self.head is not None else None

    def _place_genuine(self) -> None:
        claims: dict[int, list[_Place]] = {}
        for place in self.places:
            if place.genuine:
                assert place.slot is not None
                claims.setdefault(place.slot, []).append(place)
        upper = self._upper()
        for seq in sorted(claims):
            claimants = claims[seq]
            if seq < self.first or (upper is not None and seq > upper):
                for place in claimants:
                    where = (
                        f"beyond the log's head (seq {upper})"
                        if upper is not None and seq > upper
                        else f"before the start of the log (seq {self.first})"
                    )
                    self._add(
                        "inserted",
                        place,
                        seq,
                        f"{self._at(place)} was inserted: it claims seq {seq}, {where}",
                    )
                    place.slot = None
                continue
            chosen = self._original(seq, claimants, claims.get(seq + 1, []))
            self.occupant[seq] = chosen
            for place in claimants:
                if place is chosen:
                    continue
                place.slot = None
                assert place.entry is not None
                assert chosen.entry is not None
                why = (
                    f"it is a copy of seq {seq} ({self.label} {chosen.position})"
                    if place.entry.hash == chosen.entry.hash
                    else f"it claims seq {seq}, but the chain runs through the entry at "
                    f"{self.label} {chosen.position}"
                )
                self._add("inserted", place, seq, f"{self._at(place)} was inserted: {why}")

    def _original(self, seq: int, claimants: list[_Place], successors: list[_Place]) -> _Place:
        """Of several genuine claimants of ``seq``, the one the chain runs through.

        That is the one the next entry (or a head) names; among identical copies, the one whose
        position lies between its neighbours'.
        """
        if len(claimants) == 1:
            return claimants[0]
        named = {p.entry.prev_hash for p in successors if p.entry is not None}
        if self.head is not None and self.head.seq == seq:
            named.add(self.head.hash)
        if isinstance(self.expect, Head) and self.expect.seq == seq:
            named.add(self.expect.hash)
        candidates = [p for p in claimants if p.entry is not None and p.entry.hash in named]
        candidates = candidates or claimants
        before = self.occupant.get(seq - 1)
        low = before.position if before is not None else 0
        high = min((p.position for p in successors), default=len(self.places) + 1)
        for place in candidates:
            if low < place.position < high:
                return place
        return candidates[0]

    def _place_broken(self) -> None:
        """An entry that does not verify either holds its slot (edited) or none (inserted)."""
        genuine_max = max(self.occupant, default=self.first - 1)
        upper = self._upper()
        last_genuine_position = max((p.position for p in self.occupant.values()), default=0)
        previous_slot = self.first - 1
        for place in self.places:
            if place.genuine:
                if place.slot is not None:
                    previous_slot = place.slot
                continue
            e = place.entry
            claimed = e.seq if e is not None else previous_slot + 1
            if upper is not None:
                in_range = self.first <= claimed <= upper
            else:
                in_range = self.first <= claimed <= genuine_max or (
                    claimed == genuine_max + 1 and place.position > last_genuine_position
                )
            if not in_range:
                self._add(
                    "inserted",
                    place,
                    claimed,
                    f"{self._at(place)} was inserted: it claims seq {claimed}, outside the log "
                    f"(seq {self.first}-{upper if upper is not None else genuine_max})"
                    + _unreadable(place),
                )
                continue
            holder = self.occupant.get(claimed)
            if holder is not None:
                self._add(
                    "inserted",
                    place,
                    claimed,
                    f"{self._at(place)} was inserted: it claims seq {claimed}, which "
                    f"{self._at(holder)} holds" + _unreadable(place),
                )
                continue
            place.slot = claimed
            previous_slot = claimed
            self.occupant[claimed] = place
            if e is None:
                self._add(
                    "edited",
                    place,
                    claimed,
                    f"seq {claimed} was edited: {self._at(place)} is not an entry ({place.reason})",
                )
            else:
                self._add(
                    "edited",
                    place,
                    claimed,
                    f"seq {claimed} was edited: its content does not match its hash",
                )

    # -- order, links, gaps, anchors -------------------------------------------------------------

    def _check_order(self) -> None:
        held = sorted(self.occupant.values(), key=lambda p: p.position)
        slots = [_slot(p) for p in held]
        moved: set[int] = set()
        if any(b <= a for a, b in itertools.pairwise(slots)):
            keep = _in_order(slots)
            moved = {i for i in range(len(held)) if i not in keep}
        # A genuine entry whose seq field was changed: a move when the changed seqs swap among
        # themselves (the log keeps entries in seq order), else an edit of that field.
        relabelled = [
            p for p in held if p.genuine and p.entry is not None and p.entry.seq != p.slot
        ]
        swapped = sorted(p.entry.seq for p in relabelled if p.entry is not None) == sorted(
            p.slot for p in relabelled if p.slot is not None
        )
        for i, place in enumerate(held):
            assert place.slot is not None
            e = place.entry
            relabel = e is not None and place.genuine and e.seq != place.slot
            if i in moved or (relabel and swapped):
                before = held[i - 1].slot if i > 0 else None
                where = f"after seq {before}" if before is not None else "first"
                stored = f", stored as seq {e.seq}" if relabel and e is not None else ""
                self._add(
                    "reordered",
                    place,
                    place.slot,
                    f"seq {place.slot} is out of order: {self._at(place)}{stored}, {where}",
                )
            elif relabel and e is not None:
                self._add(
                    "edited",
                    place,
                    place.slot,
                    f"seq {place.slot} was edited: its seq field reads {e.seq}",
                )

    def _check_links(self) -> None:
        for seq in sorted(self.occupant):
            place = self.occupant[seq]
            e = place.entry
            if e is None or not place.genuine:
                continue
            if seq == 1:
                if e.prev_hash != GENESIS and not place.flagged:
                    self._add("edited", place, 1, "seq 1 was edited: it does not start the chain")
                continue
            before = self.occupant.get(seq - 1)
            if before is None or before.entry is None or not before.genuine or before.flagged:
                continue
            if before.entry.hash != e.prev_hash:
                self._add(
                    "edited",
                    before,
                    seq - 1,
                    f"seq {seq - 1} was rewritten: its hash was recomputed, but seq {seq} "
                    "still links to the original",
                )
        last = self.occupant.get(self.head.seq) if self.head is not None else None
        if self.head is not None and last is not None:
            e = last.entry
            if e is not None and last.genuine and not last.flagged and e.hash != self.head.hash:
                self._add(
                    "edited",
                    last,
                    self.head.seq,
                    f"seq {self.head.seq} was rewritten: its hash differs from the log's head",
                )

    def _check_missing(self) -> None:
        present = max(self.occupant, default=self.first - 1)
        upper = self.head.seq if self.head is not None else present
        missing = [s for s in range(self.first, upper + 1) if s not in self.occupant]
        for start, end in _runs(missing):
            span = f"seq {start}" if start == end else f"seqs {start}-{end}"
            if end == upper and end > present:
                message = (
                    f"the log ends at seq {start - 1} but its head is seq {upper}: "
                    f"{span} {'was' if start == end else 'were'} removed"
                )
                kind: FindingKind = "truncated"
            else:
                message = f"{span} {'is' if start == end else 'are'} missing (deleted)"
                kind = "deleted"
            self.findings.append(Finding(kind, start, message, last_seq=end))

    def _check_expect(self) -> None:
        expect = self.expect
        if expect is None or genesis_anchor(expect, self.first):
            return
        first_place = self.occupant.get(self.first)
        before_first = (
            first_place.entry.prev_hash
            if first_place is not None and first_place.entry is not None
            else None
        )
        if isinstance(expect, str):
            hashes = {p.entry.hash for p in self.occupant.values() if p.entry is not None}
            if expect in hashes or (self.first > 1 and expect == before_first):
                return
            self.findings.append(
                Finding(
                    "head",
                    None,
                    f"the anchored head {expect} is not in the log: entries up to it were "
                    "rewritten or removed",
                )
            )
            return
        present = max(self.occupant, default=self.first - 1)
        if expect.seq == self.first - 1 and self.first > 1:
            actual = before_first
        elif expect.seq > present:
            if any(
                f.kind == "truncated" and (f.last_seq or 0) >= expect.seq for f in self.findings
            ):
                return
            self.findings.append(
                Finding(
                    "truncated",
                    present + 1,
                    f"the log ends at seq {present} but the anchored head is seq {expect.seq}: "
                    f"seqs {present + 1}-{expect.seq} were removed",
                    last_seq=expect.seq,
                )
            )
            return
        elif expect.seq < self.first - 1:
            self.findings.append(
                Finding(
                    "head",
                    expect.seq,
                    f"the anchored head seq {expect.seq} is before this export (from seq "
                    f"{self.first}): it cannot be checked here",
                )
            )
            return
        else:
            holder = self.occupant.get(expect.seq)
            actual = holder.entry.hash if holder is not None and holder.entry is not None else None
        if actual != expect.hash:
            self.findings.append(
                Finding(
                    "head",
                    expect.seq,
                    f"seq {expect.seq} differs from the anchored head {expect}: the log was "
                    f"rewritten at or before seq {expect.seq}",
                )
            )


def _unreadable(place: _Place) -> str:
    return f" ({place.reason})" if place.entry is None else ""


def _runs(values: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last)."""
    start = prev = None
    for v in values:
        if start is None:
            start = prev = v
        elif prev is not None and v == prev + 1:
            prev = v
        else:
            assert prev is not None
            yield start, prev
            start = prev = v
    if start is not None and prev is not None:
        yield start, prev


def _slot(place: _Place) -> int:
    assert place.slot is not None
    return place.slot


def _in_order(slots: list[int]) -> set[int]:
    """Indices of a longest increasing subsequence of ``slots`` (distinct seqs, input order).

    Among longest ones, prefers entries that sit at their natural rank (the i-th smallest seq
    at the i-th place), so that a swap names the two swapped entries, not a bystander.
    """
    rank = {s: r for r, s in enumerate(sorted(slots))}
    # Patience sorting on (length, natural count) via a Fenwick tree of maxima over seq ranks.
    size = len(rank)
    tree: list[tuple[int, int, int]] = [(0, 0, -1)] * (size + 1)
    best_at: list[tuple[int, int]] = []
    parent: list[int] = []
    for i, slot in enumerate(slots):
        r = rank[slot]
        # best chain ending at a smaller seq: query prefix [0, r)
        best = (0, 0, -1)
        k = r
        while k > 0:
            best = max(best, tree[k])
            k -= k & -k
        natural = 1 if r == i else 0
        value = (best[0] + 1, best[1] + natural, i)
        best_at.append(value[:2])
        parent.append(best[2])
        k = r + 1
        while k <= size:
            tree[k] = max(tree[k], value)
            k += k & -k
    if not slots:
        return set()
    end = max(range(len(slots)), key=lambda i: (best_at[i], -i))
    keep = set()
    while end != -1:
        keep.add(end)
        end = parent[end]
    return keep
