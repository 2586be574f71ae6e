"""CounterFact and zsRE in the layouts EasyEdit reads (its CounterFactDataset and ZsreDataset), each record
one edit carrying one paraphrase and one locality probe of its own. A CounterFact record's locality prompt (and
ROME's ``neighborhood_prompts`` where the file has them) are also its neighborhood probes.

zsRE's ``loc`` keeps its ``nq question: `` prefix and ``answers[0]`` is the old object, as in EasyEdit; records
with an empty ``alt`` are skipped, as EasyEdit skips them.
"""

from __future__ import annotations

from pathlib import Path

from chronosweep.core.requests import EditRequest, LocalityProbe
from chronosweep.data.errors import DataError, Fields, Problems, type_name
from chronosweep.data.parsed import Parsed


def _records(data, path: Path, what: str):
    if not isinstance(data, list):
        raise DataError(f"{path}: a {what} file is a list of records, got {type_name(data)}")
    problems = Problems(str(path))
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            problems.add(f"record {i}", f"expected an object, got {type_name(rec)}")
        else:
            yield i, Fields(rec, f"record {i}", problems)
    # Runs when the caller's loop ends, so the problems its field reads added are raised too.
    problems.raise_if_any()


def _check_ids(out: Parsed, path: Path) -> None:
    ids: dict[str, str] = {}
    problems = Problems(str(path))
    for r in out.requests:
        if r.case_id in ids:
            problems.add(f"record {r.source.rsplit(':', 1)[1]}, field 'case_id'",
                         f"duplicate of record {ids[r.case_id].rsplit(':', 1)[1]} ({r.case_id})")
        ids.setdefault(r.case_id, r.source)
    problems.raise_if_any()


def parse_counterfact(data, path: Path, prefix: str) -> Parsed:
    out = Parsed()
    for i, f in _records(data, path, "CounterFact"):
        cid = f.ident("case_id")
        if cid is not None:
            f.where = f"record {i} (case_id {cid})"
        prompt, subject = f.text("prompt"), f.text("subject")
        new, true = f.text("target_new"), f.text("ground_truth", required=False, nullable=True)
        rephrase = f.texts("rephrase_prompt", allow_str=True) or ()
        loc_prompt = f.text("locality_prompt", required=False)
        loc_answer = f.text("locality_ground_truth", required=False)
        # ROME's neighborhood prompts (other subjects with the edit's relation and old object); EasyEdit's
        # locality_prompt is one of them.
        neighbours = [p.rstrip() for p in f.texts("neighborhood_prompts", allow_str=True) or ()]
        if loc_prompt:
            neighbours.insert(0, loc_prompt.rstrip())
        if None in (prompt, subject, new):
            continue
        out.requests.append(EditRequest(
            case_id=f"{prefix}:{cid if cid is not None else i}",
            subject=subject,
            prompt=prompt.rstrip(),
            target_new=new,
            target_true=true,
            paraphrases=tuple(p.rstrip() for p in rephrase),
            locality=(LocalityProbe(loc_prompt.rstrip(), loc_answer),) if loc_prompt else (),
            neighborhood=tuple(LocalityProbe(p, true if loc_answer is None else loc_answer)
                               for p in dict.fromkeys(neighbours)),
            source=f"{path.name}:{i}",
        ))
    _check_ids(out, path)
    return out


def parse_zsre(data, path: Path, prefix: str) -> Parsed:
    out = Parsed()
    for i, f in _records(data, path, "zsRE"):
        prompt, subject = f.text("src"), f.text("subject")
        new = f.text("alt", empty_ok=True)
        answers = f.texts("answers", required=True)
        rephrase = f.texts("rephrase", allow_str=True) or ()
        loc_prompt = f.text("loc", required=False)
        loc_answer = f.text("loc_ans", required=False)
        if answers is not None and not answers:
            f.fail("answers", "must hold at least one answer")
        if None in (prompt, subject, new) or not answers:
            continue
        if not new.strip():
            out.skipped["empty alt"] += 1
            continue
        out.requests.append(EditRequest(
            case_id=f"{prefix}:{i}",
            subject=subject,
            prompt=prompt.rstrip(),
            target_new=new,
            target_true=answers[0],
            paraphrases=tuple(p.rstrip() for p in rephrase),
            locality=(LocalityProbe(loc_prompt.rstrip(), loc_answer),) if loc_prompt else (),
            source=f"{path.name}:{i}",
        ))
    return out
