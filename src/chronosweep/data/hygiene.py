"""What a selection of edits hides: duplicate edits, and how much of the file data.offset/data.limit kept.

A duplicate is an edit whose prompt and new target (case-insensitive, spaces collapsed) match an earlier edit of
the file: trained twice, it counts twice in a batch edit's loss and twice in every score. Duplicates are counted
and reported on every run; ``data.dedupe: true`` drops them before offset and limit apply. In multi-hop data
(MQuAKE) one edit is often shared by several cases on purpose: a duplicate that is the only edit of its case is
kept, since its case's questions are asked only through the edits that carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core.requests import EditRequest, EditSet


def _key(r: EditRequest) -> tuple[str, str]:
    return " ".join(r.prompt.split()).casefold(), " ".join(r.target_new.split()).casefold()


def duplicates(requests: list[EditRequest]) -> list[int]:
    """Positions of the edits that repeat an earlier edit's prompt and target."""
    seen: set[tuple[str, str]] = set()
    out = []
    for i, r in enumerate(requests):
        key = _key(r)
        if key in seen:
            out.append(i)
        seen.add(key)
    return out


@dataclass(frozen=True)
class Deduped:
    requests: list[EditRequest]
    dropped: int
    # Duplicates kept because each is the only edit of its multi-hop case.
    kept_for_cases: int


def dedupe(requests: list[EditRequest]) -> Deduped:
    repeat = set(duplicates(requests))
    edits_per_case: dict[str, int] = {}
    for i, r in enumerate(requests):
        if i not in repeat:
            for m in r.multihop_cases:
                edits_per_case[m.case_id] = edits_per_case.get(m.case_id, 0) + 1
    kept, kept_for_cases = [], 0
    for i, r in enumerate(requests):
        if i in repeat:
            # A duplicate goes unless some case of it would be left without any edit.
            orphaned = [m.case_id for m in r.multihop_cases if not edits_per_case.get(m.case_id)]
            if not orphaned:
                continue
            for case in orphaned:
                edits_per_case[case] = 1
            kept_for_cases += 1
        kept.append(r)
    return Deduped(kept, len(requests) - len(kept), kept_for_cases)


def describe(edits: EditSet) -> str:
    """'20 of 111 edits from dyknow (data.limit 20; 0 skipped records)', plus the duplicates, for every run."""
    n = len(edits.requests)
    total = edits.total if edits.total is not None else n
    why = []
    if n < total - edits.dropped_duplicates:
        why.append(", ".join(f"data.{k} {v}" for k, v in (("offset", edits.offset), ("limit", edits.limit))
                             if v not in (0, None)))
    if edits.dropped_duplicates:
        why.append(f"data.dedupe dropped {edits.dropped_duplicates} duplicate edit(s)")
    skipped = sum(edits.skipped.values())
    why.append(f"{skipped} skipped record{'s' if skipped != 1 else ''}")
    head = f"{n} of {total} edits" if n < total else f"{n} edits"
    text = f"{head} from {edits.name} ({'; '.join(why)})"
    if edits.duplicates:
        if edits.dedupe:
            text += f", {edits.duplicates} duplicate edit(s) kept as the only edit of their multi-hop case"
        else:
            text += (f", {edits.duplicates} duplicate edit(s) (same prompt and target as an earlier one; "
                     "data.dedupe: true drops them)")
    return text
