"""Everything a trial asks the model, before and after the edit, as data."""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core.requests import EditSet
from chronosweep.evaluation.config import EvalConfig


@dataclass(frozen=True)
class Probe:
    kind: str  # rewrite | paraphrase | locality | multihop | hop
    case_id: str
    prompt: str
    # Accepted answers; empty for locality, whose reference is the pre-edit continuation.
    answers: tuple[str, ...] = ()
    # Text scored token by token under teacher forcing (EasyEdit's accuracies); None: not scored that way.
    tf_target: str | None = None
    # For multi-hop: the case's other questions, all asked; the case counts if any is answered.
    questions: tuple[str, ...] = ()


def build_probes(edits: EditSet, eval_cfg: EvalConfig) -> list[Probe]:
    probes: list[Probe] = []
    for r in edits.requests:
        target = " " + r.target_new.strip()
        probes.append(Probe("rewrite", r.case_id, r.prompt, r.answers, target))
        for p in r.paraphrases:
            probes.append(Probe("paraphrase", r.case_id, p, r.answers, target))
    for i, loc in enumerate(edits.locality):
        tf = " " + loc.answer.strip() if loc.answer else None
        probes.append(Probe("locality", f"locality:{i}", loc.prompt, (), tf))
    seen: set[str] = set()
    for r in edits.requests:
        mh = r.multihop
        if mh is None or mh.case_id in seen:
            continue
        seen.add(mh.case_id)
        answers = (mh.answer, *mh.aliases)
        qs = tuple(eval_cfg.question_template.format(question=q) for q in mh.questions)
        probes.append(Probe("multihop", mh.case_id, qs[0] if qs else "", answers, None, qs))
        for hop in mh.hops:
            probes.append(Probe("hop", mh.case_id, hop.cloze, (hop.answer, *hop.aliases), None))
    return probes
