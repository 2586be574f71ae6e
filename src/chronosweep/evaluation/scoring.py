"""Score pre- against post-edit measurements: one prediction row per probe, then per-unit values per metric.

The rows are what predictions.jsonl holds; the unit values (units.jsonl) are what every interval and paired
comparison resamples; a metric's value is the mean of its units. Which rows, field and unit a metric uses is
declared in evaluation.metrics, nowhere else.
"""

from __future__ import annotations

from statistics import fmean

from rouge_score import rouge_scorer

from chronosweep.evaluation import metrics as registry
from chronosweep.evaluation.matching import answer_span, contains_answer, normalize, starts_with_answer


def _token_acc(ids, top) -> float | None:
    if not ids:
        return None
    return sum(int(a == b) for a, b in zip(ids, top)) / len(ids)


def _compare(rouge, ref: str, hyp: str) -> dict:
    """Locality-style fields: pre- vs post-edit continuation, whole and cut at the answer's end."""
    def f1(a: str, b: str) -> float:
        return rouge.score(a, b)["rouge1"].fmeasure if a.strip() or b.strip() else 1.0

    ref_span, hyp_span = answer_span(ref), answer_span(hyp)
    return {"score": f1(ref, hyp), "pre_answer": ref_span, "post_answer": hyp_span,
            "answer_score": f1(ref_span, hyp_span), "same_answer": normalize(ref_span) == normalize(hyp_span)}


def score_rows(probes, pre, post) -> list[dict]:
    """One prediction row per probe (docs/run-dir.md, predictions.jsonl)."""
    rouge = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    rows: list[dict] = []
    for i, p in enumerate(probes):
        row = {"probe": p.kind, "case_id": p.case_id, "prompt": p.prompt, "expected": list(p.answers)}
        if p.kind in ("locality", "neighborhood"):
            ref, hyp = pre.continuations[p.prompt], post.continuations[p.prompt]
            agree = None
            if pre.top_tokens[i] is not None:
                # EasyEdit's locality accuracy: post-edit top tokens agreeing with the pre-edit ones.
                agree = _token_acc(pre.top_tokens[i], post.top_tokens[i])
            row.update(expected=[ref], pre=ref, post=hyp, correct=None, pre_correct=None, token_acc=agree,
                       **_compare(rouge, ref, hyp))
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
            if p.match == "contains":
                # A question's answer comes in a sentence of its own words: the answer span must contain it.
                ok = contains_answer(answer_span(after), p.answers)
                was = contains_answer(answer_span(before), p.answers)
            else:
                ok, was = starts_with_answer(after, p.answers), starts_with_answer(before, p.answers)
            row.update(pre=before, post=after, correct=ok, pre_correct=was,
                       score=float(ok), token_acc=_token_acc(post.target_ids[i], post.top_tokens[i]))
            row["pre_token_acc"] = _token_acc(pre.target_ids[i], pre.top_tokens[i])
            if p.kind == "hop":
                row.update(changed=p.changed, match=p.match)
            if p.kind in ("history", "temporal"):
                row["year"] = p.year
        rows.append(row)
    return rows


def generic_units(metric: registry.Metric, rows: list[dict], side: str) -> dict[str, float]:
    """Rows of the metric's probe kind, its field (pre_field for the unedited model), averaged within each unit.

    Unit ids are stable across trials on the same data, so two trials can be compared unit by unit: an edit or a
    case is its case_id, a probe is '<case_id>#<n>' (its position among the rows of that probe kind and case).
    """
    key = metric.field if side == "post" else metric.pre_field
    if key is None:
        return {}
    groups: dict[str, list[float]] = {}
    seen: dict[str, int] = {}
    for r in rows:
        if r.get("probe") != metric.probe:
            continue
        if any(r.get(k) != v for k, v in metric.where):
            continue
        cid = str(r.get("case_id"))
        n = seen.get(cid, 0)
        seen[cid] = n + 1
        value = r.get(key)
        if value is None:
            continue
        unit = cid if metric.unit in ("edit", "case") else f"{cid}#{n}"
        groups.setdefault(unit, []).append(float(value))
    return {u: fmean(v) for u, v in groups.items()}


def unit_values(rows: list[dict], side: str = "post") -> dict[str, dict[str, float]]:
    """metric -> {unit id: value} for every registered quality metric the rows can measure."""
    out: dict[str, dict[str, float]] = {}
    by_probe: dict[str, list[dict]] = {}
    for r in rows:
        by_probe.setdefault(r.get("probe"), []).append(r)
    for m in registry.METRICS.values():
        if not m.has_units:
            continue
        units = m.units(rows, side) if m.units is not None else generic_units(m, by_probe.get(m.probe, []), side)
        if units:
            out[m.name] = units
    return out


def aggregate(units: dict[str, dict[str, float]], side: str = "post") -> dict:
    """Each quality metric's value: the mean of its units; None where the data has no probes for it.

    The post-edit side also carries the counts that number a metric's units (n_multihop_known).
    """
    out = {}
    for m in registry.METRICS.values():
        if m.units_of is not None and side == "post":
            out[m.name] = len(units.get(m.units_of, {}))
        if not m.has_units or (side == "pre" and not m.has_pre):
            continue
        values = units.get(m.name)
        out[m.name] = fmean(values.values()) if values else None
    return out


def score(probes, pre, post) -> tuple[dict, dict, list[dict], dict[str, dict[str, float]]]:
    """(post-edit metrics, pre-edit metrics, prediction rows, post-edit unit values)."""
    rows = score_rows(probes, pre, post)
    units = unit_values(rows, "post")
    return aggregate(units, "post"), aggregate(unit_values(rows, "pre"), "pre"), rows, units
