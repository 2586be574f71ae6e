"""Unit functions of the metrics the generic rule cannot express: (prediction rows, "post" | "pre") -> {unit: value}.

They read only predictions.jsonl rows (docs/run-dir.md), so the report recomputes exactly what the trial did.
Rows written before a field existed (an older scoring version) simply give no units.
"""

from __future__ import annotations

from statistics import fmean

from chronosweep.evaluation.matching import (
    answer_span,
    contains_answer,
    contains_normalized,
    normalize,
    starts_normalized,
)


def _text(row: dict, side: str) -> str:
    return row.get(side) or ""


def _new_objects(rows: list[dict]) -> dict[str, tuple[str, ...]]:
    """edit case_id -> its accepted new objects, from the rewrite rows."""
    return {str(r["case_id"]): tuple(r.get("expected") or ()) for r in rows if r.get("probe") == "rewrite"}


def _overlap(a, b) -> bool:
    return bool({normalize(x) for x in a} & {normalize(x) for x in b})


def confusion(rows: list[dict], side: str) -> dict[str, float]:
    """Per edit: share of its prompt and paraphrase probes answered with another edit's new object.

    Edits whose new objects coincide (two heads of state who are the same person) are not each other's confusion.
    """
    objects = _new_objects(rows)
    if len(objects) < 2:
        return {}
    groups: dict[str, list[float]] = {}
    keys = {cid: frozenset(normalize(x) for x in a) for cid, a in objects.items()}
    rivals: dict[str, list[tuple[str, ...]]] = {}
    for r in rows:
        if r.get("probe") not in ("rewrite", "paraphrase"):
            continue
        cid = str(r["case_id"])
        if cid not in rivals:
            own = keys.get(cid, frozenset())
            rivals[cid] = [a for other, a in objects.items() if other != cid and not keys[other] & own]
        text = normalize(_text(r, side))
        groups.setdefault(cid, []).append(float(any(starts_normalized(text, a) for a in rivals[cid])))
    return {u: fmean(v) for u, v in groups.items()}


def _leak_rows(rows: list[dict]):
    """Rows whose answers the trial must leave alone, with each one's unit id: locality, neighborhood, unchanged hops."""
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        kind = r.get("probe")
        if kind not in ("locality", "neighborhood", "hop"):
            continue
        cid = str(r.get("case_id"))
        n = seen.get((kind, cid), 0)
        seen[(kind, cid)] = n + 1
        if kind == "hop" and r.get("changed") is not False:
            continue  # the edited hop's answer is meant to change; rows without the flag cannot tell
        yield f"{kind}/{cid}#{n}", r


def leakage(rows: list[dict], side: str) -> dict[str, float]:
    """Per probe: 1 if the post-edit continuation contains a new object of the trial that the pre-edit one did not.

    A new object that is the probe's own expected answer (an unchanged hop whose answer another edit also names)
    is not a leak.
    """
    if side != "post":
        return {}
    objects = list(dict.fromkeys(_new_objects(rows).values()))
    if not objects:
        return {}
    out: dict[str, float] = {}
    for unit, r in _leak_rows(rows):
        expected = r.get("expected") or () if r.get("probe") == "hop" else ()
        pre = f" {normalize(_text(r, 'pre'))} "
        # A locality probe scored after each edit (protocol single) leaks in the share of those evaluations.
        posts = r.get("post_all") if r.get("probe") == "locality" and r.get("post_all") else [_text(r, "post")]
        leaks = [any(contains_normalized(f" {normalize(post or '')} ", a) and not contains_normalized(pre, a)
                     for a in objects if not (expected and _overlap(a, expected))) for post in posts]
        out[unit] = fmean(float(x) for x in leaks)
    return out


def _cases(rows: list[dict]) -> dict[str, tuple[dict, list[dict]]]:
    """case_id -> (its multihop row, its unchanged hop rows)."""
    heads = {str(r["case_id"]): r for r in rows if r.get("probe") == "multihop"}
    hops: dict[str, list[dict]] = {c: [] for c in heads}
    for r in rows:
        if r.get("probe") == "hop" and r.get("changed") is False and str(r.get("case_id")) in hops:
            hops[str(r["case_id"])].append(r)
    return {c: (heads[c], hops[c]) for c in heads}


def multihop_specific(rows: list[dict], side: str) -> dict[str, float]:
    """Per case with unchanged hops: 1 if a multi-hop question is answered with the new answer while none of the
    case's unchanged single-hop probes is (whose own answers differ from it): propagation, not the answer leaking
    into every prompt."""
    key = "correct" if side == "post" else "pre_correct"
    out: dict[str, float] = {}
    for cid, (head, hops) in _cases(rows).items():
        answers = head.get("expected") or ()
        checked = [h for h in hops if not _overlap(h.get("expected") or (), answers)]
        if not checked or head.get(key) is None:
            continue
        leaked = any(contains_answer(answer_span(_text(h, side)), answers) for h in checked)
        out[cid] = float(bool(head[key]) and not leaked)
    return out


def multihop_known(rows: list[dict], side: str) -> dict[str, float]:
    """Multi-hop accuracy over the cases whose unchanged hops the unedited model answers correctly (all of them)."""
    key = "correct" if side == "post" else "pre_correct"
    out: dict[str, float] = {}
    for cid, (head, hops) in _cases(rows).items():
        if hops and all(h.get("pre_correct") for h in hops) and head.get(key) is not None:
            out[cid] = float(bool(head[key]))
    return out


def history_retention(rows: list[dict], side: str) -> dict[str, float]:
    """Per history probe the unedited model answered with that year's holder: 1 if the edited model still does.

    Probes the unedited model got wrong are left out, so a small model's missing knowledge is not forgetting.
    """
    if side != "post":
        return {}
    out: dict[str, float] = {}
    seen: dict[str, int] = {}
    for r in rows:
        if r.get("probe") != "history":
            continue
        cid = str(r.get("case_id"))
        n = seen.get(cid, 0)
        seen[cid] = n + 1
        if r.get("pre_correct") and r.get("correct") is not None:
            out[f"{cid}#{n}"] = float(bool(r["correct"]))
    return out


def first_wave_retention(rows: list[dict], side: str) -> dict[str, float]:
    """Per edit of an edit stream's first wave (rows tagged wave 0): its edit prompt answered with the new object
    at the end of the stream."""
    if side != "post":
        return {}
    return {str(r["case_id"]): float(bool(r.get("correct"))) for r in rows
            if r.get("probe") == "rewrite" and r.get("wave") == 0 and r.get("correct") is not None}
