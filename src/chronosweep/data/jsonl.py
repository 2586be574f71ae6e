"""chronosweep's own format: one edit per JSON line, fields mirroring EditRequest (see docs/data.md).

The same records also load from a .json file holding a list of them. ``write_jsonl`` writes this format, so any
supported dataset converts to it (``chronosweep data NAME --export FILE``) and loads back unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chronosweep.core.requests import EditRequest, Holding, Hop, LocalityProbe, MultiHop
from chronosweep.data.errors import Fields, Problems, type_name
from chronosweep.data.parsed import Parsed

FIELDS = {"case_id", "subject", "prompt", "target_new", "target_new_aliases", "target_true", "paraphrases",
          "train_paraphrases", "relation", "time_start", "time_end", "multihop", "cases", "locality", "neighborhood",
          "history"}
MULTIHOP_FIELDS = {"case_id", "questions", "answer", "aliases", "hops", "cloze"}
HOP_FIELDS = {"cloze", "answer", "aliases", "question", "changed"}
LOCALITY_FIELDS = {"prompt", "answer", "subject"}
HISTORY_FIELDS = {"holder", "start", "end"}
# A year, optionally with month and day (1999, "1999-05", "+1999-05-18T00:00:00Z").
_DATE = re.compile(r"^\s*[+-]?\d{1,9}(?:-\d{1,2}(?:-\d{1,2})?)?(?:T[\d:.]+Z?)?\s*$")


def _time(f: Fields, key: str) -> str | None:
    # Years are often written as bare numbers; keep them as the string they denote.
    value = f.record.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f.text(key, required=False, nullable=True)


def _history(f: Fields) -> tuple[Holding, ...]:
    """The record's `history` list: every holder of the relation with the span it held it (docs/data.md)."""
    out = []
    for h in _objects(f, "history", HISTORY_FIELDS):
        holder = h.text("holder")
        start, end = _time(h, "start"), _time(h, "end")
        for key, value in (("start", start), ("end", end)):
            if value is not None and not _DATE.match(value):
                h.fail(key, f"expected a year or an ISO date (1999, 1999-05-18), got {value!r}")
        if holder is not None:
            out.append(Holding(holder, start, end))
    return tuple(out)


def _objects(f: Fields, key: str, known: set[str]) -> list[Fields]:
    out = []
    for j, item in enumerate(f.items(key, required=False) or []):
        if not isinstance(item, dict):
            f.fail(f"{key}[{j}]", f"expected an object, got {type_name(item)}")
            continue
        sub = f.nested(item, f"{key}[{j}]")
        sub.unknown(known)
        out.append(sub)
    return out


def _flag(f: Fields, key: str) -> bool:
    value = f.record.get(key, False)
    if not isinstance(value, bool):
        f.fail(key, f"expected true or false, got {type_name(value)}")
        return False
    return value


def _case(m: Fields, case_id: str) -> MultiHop | None:
    m.unknown(MULTIHOP_FIELDS)
    hops = []
    for h in _objects(m, "hops", HOP_FIELDS):
        # A hop is asked as its cloze, or (no cloze) as its question.
        question = h.text("question", required=False, nullable=True)
        cloze = h.text("cloze", required=question is None)
        answer, aliases = h.text("answer"), h.texts("aliases") or ()
        if (cloze is not None or question is not None) and answer is not None:
            hops.append(Hop((cloze or "").rstrip(), answer, aliases, question, _flag(h, "changed")))
    questions, answer = m.texts("questions", required=True), m.text("answer")
    aliases = m.texts("aliases") or ()
    mid = m.ident("case_id")
    if questions is None or answer is None:
        return None
    return MultiHop(mid if mid is not None else case_id, questions, answer, aliases, tuple(hops), _flag(m, "cloze"))


def _multihop(f: Fields, case_id: str) -> MultiHop | None:
    if f.record.get("multihop") is None:
        return None
    value = f.obj("multihop")
    if value is None:
        return None
    return _case(f.nested(value, "multihop"), case_id)


def _train_paraphrases(f: Fields, paraphrases: tuple[str, ...]) -> tuple[str, ...]:
    """Phrasings to train on; one that is also an evaluation paraphrase would be a probe trained on."""
    train = tuple(p.rstrip() for p in f.texts("train_paraphrases") or ())
    evaluated = {" ".join(p.lower().split()): j for j, p in enumerate(paraphrases)}
    for j, p in enumerate(train):
        k = evaluated.get(" ".join(p.lower().split()))
        if k is not None:
            f.fail(f"train_paraphrases[{j}]", f"{p!r} is also paraphrases[{k}], an evaluation probe; a probe is "
                                             "never trained on")
    return train


def parse(records: list[tuple[str, object]], path: Path, prefix: str) -> Parsed:
    """records: (where, object) pairs, where is 'line N' (JSONL) or 'record N' (JSON list)."""
    problems = Problems(str(path))
    out = Parsed()
    ids: dict[str, str] = {}
    cases: dict[str, MultiHop] = {}
    for where, rec in records:
        if not isinstance(rec, dict):
            problems.add(where, f"expected an object, got {type_name(rec)}")
            continue
        f = Fields(rec, where, problems)
        cid = f.ident("case_id")
        case_id = cid if cid is not None else f"{prefix}:{where.split()[-1]}"
        f.where = f"{where} (case_id {case_id})"
        f.unknown(FIELDS)
        if case_id in ids:
            f.fail("case_id", f"duplicate of {ids[case_id]}")
        ids.setdefault(case_id, where)
        subject, prompt, new = f.text("subject"), f.text("prompt"), f.text("target_new")
        paraphrases = tuple(p.rstrip() for p in f.texts("paraphrases") or ())
        request = dict(
            target_new_aliases=f.texts("target_new_aliases") or (),
            target_true=f.text("target_true", required=False, nullable=True),
            paraphrases=paraphrases,
            train_paraphrases=_train_paraphrases(f, paraphrases),
            relation=f.text("relation", required=False, nullable=True, empty_ok=True) or "",
            time_start=_time(f, "time_start"),
            time_end=_time(f, "time_end"),
            history=_history(f),
            locality=tuple(
                LocalityProbe(p.rstrip(), loc.text("answer", required=False, nullable=True),
                              loc.text("subject", required=False, nullable=True))
                for loc in _objects(f, "locality", LOCALITY_FIELDS)
                if (p := loc.text("prompt")) is not None
            ),
        )
        multihop = _multihop(f, case_id)
        more = tuple(c for j, m in enumerate(_objects(f, "cases", MULTIHOP_FIELDS))
                     if (c := _case(m, f"{case_id}:case:{j}")) is not None)
        neighbours = tuple(LocalityProbe(p.rstrip(), loc.text("answer", required=False, nullable=True),
                                         loc.text("subject", required=False, nullable=True))
                           for loc in _objects(f, "neighborhood", LOCALITY_FIELDS)
                           if (p := loc.text("prompt")) is not None)
        if multihop is not None:
            # Edits of one multi-hop case repeat its object; they must agree so the case is counted once.
            first = cases.setdefault(multihop.case_id, multihop)
            if first != multihop:
                f.fail("multihop", f"differs from the earlier line with multihop case_id {multihop.case_id!r}")
            multihop = first
        if None in (subject, prompt, new):
            continue
        out.requests.append(EditRequest(case_id=case_id, subject=subject, prompt=prompt.rstrip(), target_new=new,
                                        multihop=multihop, cases=more, neighborhood=neighbours,
                                        source=f"{path.name}:{where.split()[-1]}", **request))
    problems.raise_if_any()
    return out


def to_record(r: EditRequest) -> dict:
    """The JSONL object for one edit; empty optional fields are left out."""
    rec: dict = {"case_id": r.case_id, "subject": r.subject, "prompt": r.prompt, "target_new": r.target_new}
    if r.target_new_aliases:
        rec["target_new_aliases"] = list(r.target_new_aliases)
    if r.target_true is not None:
        rec["target_true"] = r.target_true
    if r.paraphrases:
        rec["paraphrases"] = list(r.paraphrases)
    if r.train_paraphrases:
        rec["train_paraphrases"] = list(r.train_paraphrases)
    if r.relation:
        rec["relation"] = r.relation
    if r.time_start is not None:
        rec["time_start"] = r.time_start
    if r.time_end is not None:
        rec["time_end"] = r.time_end
    if r.history:
        rec["history"] = [{"holder": h.holder, **({"start": h.start} if h.start is not None else {}),
                           **({"end": h.end} if h.end is not None else {})} for h in r.history]
    if r.multihop is not None:
        rec["multihop"] = _case_record(r.multihop)
    if r.cases:
        rec["cases"] = [_case_record(m) for m in r.cases]
    for key in ("locality", "neighborhood"):
        if getattr(r, key):
            rec[key] = [{"prompt": p.prompt, **({"answer": p.answer} if p.answer is not None else {})}
                        for p in getattr(r, key)]
    return rec


def _case_record(m: MultiHop) -> dict:
    hops = [{**({"cloze": h.cloze} if h.cloze else {}), "answer": h.answer, "aliases": list(h.aliases),
             **({"question": h.question} if h.question is not None else {}), **({"changed": True} if h.changed else {})}
            for h in m.hops]
    return {"case_id": m.case_id, "questions": list(m.questions), "answer": m.answer, "aliases": list(m.aliases),
            "hops": hops, **({"cloze": True} if m.cloze else {})}


def write_jsonl(requests: list[EditRequest], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        for r in requests:
            fh.write(json.dumps(to_record(r), ensure_ascii=False) + "\n")
    return path
