"""Everything a trial asks the model, before and after the edit, as data."""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core import history
from chronosweep.core.requests import EditSet
from chronosweep.evaluation.config import EvalConfig

# history: a past holder at a year it alone held the relation; temporal: the current holder, "as of"/"currently".
KINDS = ("rewrite", "paraphrase", "locality", "neighborhood", "multihop", "hop", "history", "temporal")


@dataclass(frozen=True)
class Probe:
    kind: str  # one of KINDS
    case_id: str
    prompt: str
    # Accepted answers; empty for locality and neighborhood, whose reference is the pre-edit continuation.
    answers: tuple[str, ...] = ()
    # Text scored token by token under teacher forcing (EasyEdit's accuracies); None: not scored that way.
    tf_target: str | None = None
    # For multi-hop: the case's other questions, all asked; the case counts if any is answered.
    questions: tuple[str, ...] = ()
    # For hops: the hop the edit rewrites (True) or one whose answer must stay (False).
    changed: bool = False
    # How a hop's continuation counts: a cloze must start with the answer; a question's answer span must contain it.
    match: str = "starts_with"
    # For history and temporal probes: the year the prompt names (None: "currently").
    year: int | None = None


def build_probes(edits: EditSet, eval_cfg: EvalConfig) -> list[Probe]:
    def ask(question: str) -> str:
        return eval_cfg.question_template.format(question=question)

    probes: list[Probe] = []
    for r in edits.requests:
        target = " " + r.target_new.strip()
        probes.append(Probe("rewrite", r.case_id, r.prompt, r.answers, target))
        for p in r.paraphrases:
            probes.append(Probe("paraphrase", r.case_id, p, r.answers, target))
    accepted = {r.case_id: r.answers for r in edits.requests}
    for f in history.plan(edits.requests, eval_cfg.history_holders).evaluation:
        # The current holder's aliases are the edit's; a past holder is known by its name alone.
        answers = accepted[f.case_id] if f.kind == "temporal" else (f.holder,)
        probes.append(Probe(f.kind, f.case_id, f.prompt, answers, year=f.year))
    for i, loc in enumerate(edits.locality):
        tf = " " + loc.answer.strip() if loc.answer else None
        probes.append(Probe("locality", f"locality:{i}", loc.prompt, (), tf))
    for r in edits.requests:
        for n in r.neighborhood:
            probes.append(Probe("neighborhood", r.case_id, n.prompt))
    seen: set[str] = set()
    for r in edits.requests:
        for mh in r.multihop_cases:
            if mh.case_id in seen:
                continue
            seen.add(mh.case_id)
            answers = (mh.answer, *mh.aliases)
            qs = tuple(q if mh.cloze else ask(q) for q in mh.questions)
            probes.append(Probe("multihop", mh.case_id, qs[0] if qs else "", answers, None, qs))
            for hop in mh.hops:
                prompt, match = (hop.cloze, "starts_with") if hop.cloze else (ask(hop.question or ""), "contains")
                probes.append(Probe("hop", mh.case_id, prompt, (hop.answer, *hop.aliases), None, (),
                                    hop.changed, match))
    return probes
