"""MQuAKE schema (princeton-nlp/MQuAKE; MQuAKE-T, MQuAKE-CF, MQuAKE-hard): each requested rewrite is an edit,
and the case's multi-hop questions and new single hops are one MultiHop shared by all of the case's edits.

The rewrite's ``question`` is a question, not a cloze the object can follow, so it is not used as a paraphrase.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from chronosweep.core.requests import EditRequest, Hop, MultiHop
from chronosweep.data.errors import DataError, Fields, Problems, type_name
from chronosweep.data.parsed import Parsed


def _hops(f: Fields, key: str) -> list[tuple[Hop, Fields]]:
    hops = []
    for j, item in enumerate(f.items(key) or []):
        where = f"{f.where}, {key}[{j}]"
        if not isinstance(item, dict):
            f.problems.add(where, f"expected an object, got {type_name(item)}")
            continue
        h = Fields(item, where, f.problems)
        cloze, answer = h.text("cloze"), h.text("answer")
        aliases = h.texts("answer_alias") or ()
        question = h.text("question", required=False)
        if cloze is not None and answer is not None:
            hops.append(Hop(cloze=cloze.rstrip(), answer=answer, aliases=aliases, question=question))
    return hops


def _target(rw: Fields, key: str, required: bool = True) -> str | None:
    if not required and rw.record.get(key) is None:
        return None  # no old object: an injection edit
    value = rw.obj(key)
    return rw.nested(value, key).text("str") if value is not None else None


def parse(data, path: Path, prefix: str) -> Parsed:
    if not isinstance(data, list):
        raise DataError(f"{path}: an MQuAKE file is a list of cases, got {type_name(data)}")
    problems = Problems(str(path))
    out = Parsed()
    seen: set[str] = set()
    for i, case in enumerate(data):
        if not isinstance(case, dict):
            problems.add(f"record {i}", f"expected an object, got {type_name(case)}")
            continue
        f = Fields(case, f"record {i}", problems)
        cid = f.ident("case_id", required=True)
        if cid is not None:
            f.where = f"record {i} (case_id {cid})"
            if cid in seen:
                f.fail("case_id", "duplicate")
            seen.add(cid)
        questions = f.texts("questions", required=True)
        answer = f.text("new_answer")
        aliases = f.texts("new_answer_alias") or ()
        hops = _hops(f, "new_single_hops") if "new_single_hops" in case else []
        rewrites = f.items("requested_rewrite")
        if rewrites is not None and not rewrites:
            f.fail("requested_rewrite", "must hold at least one rewrite")
        edits = []
        for j, rw in enumerate(rewrites or []):
            where = f"{f.where}, requested_rewrite[{j}]"
            if not isinstance(rw, dict):
                problems.add(where, f"expected an object, got {type_name(rw)}")
                continue
            r = Fields(rw, where, problems)
            template, subject = r.text("prompt"), r.text("subject")
            new, true = _target(r, "target_new"), _target(r, "target_true", required=False)
            relation = r.text("relation_id", required=False) or ""
            if template is not None and template.count("{}") != 1:
                r.fail("prompt", f"must contain exactly one {{}} for the subject, got {template!r}")
                template = None
            if None in (template, subject, new):
                continue
            prompt = template.replace("{}", subject).rstrip()
            # The case's single hop for this rewrite carries the new object's aliases.
            same = [h for h in hops if h.cloze == prompt and h.answer == new]
            edits.append((j, prompt, subject, new, true, relation, same[0].aliases if same else ()))
        if cid is None or questions is None or answer is None:
            continue
        # A hop is the edited one when it is a rewrite's cloze with that rewrite's new object.
        rewritten = {(prompt, new) for _, prompt, _, new, *_ in edits}
        hops = [replace(h, changed=(h.cloze, h.answer) in rewritten) for h in hops]
        multihop = MultiHop(case_id=f"{prefix}:{cid}", questions=questions, answer=answer, aliases=aliases,
                            hops=tuple(hops))
        for j, prompt, subject, new, true, relation, new_aliases in edits:
            out.requests.append(EditRequest(
                case_id=f"{prefix}:{cid}:{j}",
                subject=subject,
                prompt=prompt,
                target_new=new,
                target_new_aliases=new_aliases,
                target_true=true,
                relation=relation,
                multihop=multihop,
                source=f"{path.name}:{i}",
            ))
    problems.raise_if_any()
    return out
