"""Measure a model on the probes, then score pre- against post-edit measurements."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean

from rouge_score import rouge_scorer

from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.generation import greedy_continuations, teacher_forced_top_tokens
from chronosweep.evaluation.matching import contains_answer, starts_with_answer
from chronosweep.evaluation.probes import Probe


@dataclass
class Measurement:
    """One model's answers: a continuation per generated prompt, top tokens per teacher-forced probe."""

    continuations: dict[str, str]
    top_tokens: list[list[int] | None]
    target_ids: list[list[int] | None]


def _prompts(probes: list[Probe]) -> list[str]:
    seen: dict[str, None] = {}
    for p in probes:
        for q in p.questions or (p.prompt,):
            seen.setdefault(q, None)
    return list(seen)


def measure(model, tokenizer, probes: list[Probe], cfg: EvalConfig, device, desc: str = "eval") -> Measurement:
    prompts = _prompts(probes)
    texts = greedy_continuations(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, device,
                                 desc=f"{desc}: generate")
    tf_index = [i for i, p in enumerate(probes) if p.tf_target is not None]
    tf = teacher_forced_top_tokens(model, tokenizer, [probes[i].prompt for i in tf_index],
                                   [probes[i].tf_target for i in tf_index], cfg.batch_size, device)
    top: list[list[int] | None] = [None] * len(probes)
    ids: list[list[int] | None] = [None] * len(probes)
    for i, (target_ids, predicted) in zip(tf_index, tf):
        ids[i], top[i] = target_ids, predicted
    return Measurement(dict(zip(prompts, texts)), top, ids)


def cache_key(fingerprint: str, probes: list[Probe], cfg: EvalConfig, dtype: str, device_type: str) -> str:
    from chronosweep.evaluation.metrics import SCORING_VERSION

    blob = json.dumps([fingerprint, dtype, device_type, cfg.max_new_tokens, SCORING_VERSION, [asdict(p) for p in probes]],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_cached(path: Path) -> Measurement | None:
    try:
        data = json.loads(path.read_text())
        return Measurement(data["continuations"], data["top_tokens"], data["target_ids"])
    except (OSError, ValueError, KeyError):
        return None


def store_cached(path: Path, m: Measurement) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{id(m)}.tmp")
    tmp.write_text(json.dumps(asdict(m)))
    tmp.replace(path)


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def _token_acc(ids, top) -> float | None:
    if not ids:
        return None
    return sum(int(a == b) for a, b in zip(ids, top)) / len(ids)


def score(probes: list[Probe], pre: Measurement, post: Measurement) -> tuple[dict, dict, list[dict]]:
    """(post-edit metrics, pre-edit metrics, one prediction row per probe)."""
    rouge = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    rows: list[dict] = []
    for i, p in enumerate(probes):
        row = {"probe": p.kind, "case_id": p.case_id, "prompt": p.prompt, "expected": list(p.answers)}
        if p.kind == "locality":
            ref, hyp = pre.continuations[p.prompt], post.continuations[p.prompt]
            f1 = rouge.score(ref, hyp)["rouge1"].fmeasure if ref.strip() or hyp.strip() else 1.0
            agree = None
            if pre.top_tokens[i] is not None:
                # EasyEdit's locality accuracy: post-edit top tokens agreeing with the pre-edit ones.
                agree = _token_acc(pre.top_tokens[i], post.top_tokens[i])
            row.update(expected=[ref], pre=ref, post=hyp, correct=None, pre_correct=None, score=f1, token_acc=agree)
        elif p.kind == "multihop":
            outs = [post.continuations[q] for q in p.questions]
            pres = [pre.continuations[q] for q in p.questions]
            hits = [contains_answer(o, p.answers) for o in outs]
            k = hits.index(True) if any(hits) else 0
            row.update(prompt=p.questions[k], pre=pres[k], post=outs[k], correct=any(hits),
                       pre_correct=any(contains_answer(o, p.answers) for o in pres), score=float(any(hits)),
                       token_acc=None, questions=list(p.questions), pre_all=pres, post_all=outs)
        else:
            before, after = pre.continuations[p.prompt], post.continuations[p.prompt]
            ok = starts_with_answer(after, p.answers)
            row.update(pre=before, post=after, correct=ok, pre_correct=starts_with_answer(before, p.answers),
                       score=float(ok), token_acc=_token_acc(post.target_ids[i], post.top_tokens[i]))
            row["pre_token_acc"] = _token_acc(pre.target_ids[i], pre.top_tokens[i])
        rows.append(row)
    return _aggregate(rows, "post"), _aggregate(rows, "pre"), rows


def _aggregate(rows: list[dict], side: str) -> dict:
    def of(kind: str, key: str) -> list[float]:
        return [r[key] for r in rows if r["probe"] == kind and r.get(key) is not None]

    def hit(kind: str) -> list[float]:
        return [float(r["correct" if side == "post" else "pre_correct"]) for r in rows if r["probe"] == kind]

    acc_key = "token_acc" if side == "post" else "pre_token_acc"
    out = {
        "reliability": _mean(hit("rewrite")),
        "generalization": _mean(_per_case(rows, "paraphrase", side)),
        "rewrite_acc": _mean(of("rewrite", acc_key)),
        "rephrase_acc": _mean(of("paraphrase", acc_key)),
        "multihop_accuracy": _mean(hit("multihop")),
        "hop_accuracy": _mean(hit("hop")),
    }
    if side == "post":
        out["locality"] = _mean(of("locality", "score"))
        out["locality_acc"] = _mean(of("locality", "token_acc"))
    return out


def _per_case(rows: list[dict], kind: str, side: str) -> list[float]:
    """Generalization averages paraphrases within an edit first, so every edit weighs the same."""
    by_case: dict[str, list[float]] = {}
    key = "correct" if side == "post" else "pre_correct"
    for r in rows:
        if r["probe"] == kind:
            by_case.setdefault(r["case_id"], []).append(float(r[key]))
    return [fmean(v) for v in by_case.values()]
