"""Is a finished edit degenerate? A trial can end without an error and still have broken the model.

An edit is degenerate when its training diverged without going non-finite (the last epoch's loss is above the
first's) or when it collapsed the model's outputs (the post-edit continuations are empty, or one and the same
string, for most probes, where the unedited model's were not). Its metrics are real measurements, but they
measure a broken model: the trial's status is ``degenerate`` (metrics.json, trials.csv, the report) with the
reason, and no table names it best. The thresholds live here and nowhere else.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

# The last epoch's mean training loss above the first epoch's by more than this factor: the edit diverged.
LOSS_RISE = 1.0
# Share of probes whose post-edit output is empty or the single most common output: the outputs collapsed.
COLLAPSED_SHARE = 0.9
# Identical outputs count only when they answer this many different questions (edits, cases, locality prompts):
# every paraphrase of one successful edit may rightly give the same answer.
MIN_QUESTIONS = 2


def loss_verdict(history: list[dict]) -> tuple[dict, str | None]:
    """(first and last epoch loss, reason or None) from a gradient method's per-epoch history.

    Under the single and sequential protocols each edit (protocol_step) trains on its own: each step's first and
    last epoch are compared, since one edit's loss says nothing about another's.
    """
    steps: dict[object, list[float]] = {}
    for r in history:
        if isinstance(r, dict) and "epoch" in r and isinstance(r.get("loss"), (int, float)):
            steps.setdefault(r.get("protocol_step"), []).append(float(r["loss"]))
    facts: dict = {}
    for step, losses in steps.items():
        if len(losses) < 2:
            continue
        first, last = losses[0], losses[-1]
        if not facts:
            facts = {"loss_first": first, "loss_last": last}
        if last > first * LOSS_RISE:
            where = "" if step is None else f" in protocol step {step}"
            return ({"loss_first": first, "loss_last": last, **({} if step is None else {"protocol_step": step})},
                    f"training loss rose from {first:.4g} (first epoch) to {last:.4g} (last epoch){where}")
    return facts, None


def _outputs(rows: list[dict], side: str) -> list[tuple[str, str]]:
    """(question, output) per probe: multi-hop rows contribute every question's output."""
    out = []
    for r in rows:
        question = r.get("prompt") if r.get("probe") == "locality" else r.get("case_id")
        texts = r.get(f"{side}_all") if r.get("probe") == "multihop" and r.get(f"{side}_all") else [r.get(side)]
        out += [(str(question), t if isinstance(t, str) else "") for t in texts]
    return out


def collapsed_share(rows: list[dict], side: str) -> float | None:
    """Share of outputs that are empty or the one output given to at least MIN_QUESTIONS different questions."""
    outputs = _outputs(rows, side)
    if not outputs:
        return None
    empty = sum(1 for _, t in outputs if not t.strip())
    counts = Counter(t for _, t in outputs if t.strip())
    same = 0
    if counts:
        text, n = counts.most_common(1)[0]
        if len({q for q, t in outputs if t == text}) >= MIN_QUESTIONS:
            same = n
    return (empty + same) / len(outputs)


def output_verdict(rows: list[dict]) -> tuple[dict, str | None]:
    post, pre = collapsed_share(rows, "post"), collapsed_share(rows, "pre")
    facts = {"collapsed_share": post, "pre_collapsed_share": pre}
    if post is None or post < COLLAPSED_SHARE:
        return facts, None
    if pre is not None and pre >= COLLAPSED_SHARE:
        # The unedited model already answers (nearly) everything the same way: the edit did not do it.
        return facts, None
    return facts, (f"{post:.0%} of post-edit outputs are empty or one identical string "
                   f"(before the edit: {pre:.0%})" if pre is not None else
                   f"{post:.0%} of post-edit outputs are empty or one identical string")


def assess(history: list[dict], rows: list[dict]) -> dict:
    """The fields run_trial adds to metrics.json: status, degenerate_reason (None when ok) and health."""
    loss_facts, loss_reason = loss_verdict(history)
    output_facts, output_reason = output_verdict(rows)
    reasons = [r for r in (loss_reason, output_reason) if r]
    return {"status": "degenerate" if reasons else "ok", "degenerate_reason": "; ".join(reasons) or None,
            "health": {**loss_facts, **output_facts}}


def assess_run(metrics: dict, run_dir: Path) -> dict:
    """assess() over a run dir's history (in metrics) and predictions.jsonl."""
    path = Path(run_dir) / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return assess(metrics.get("history") or [], rows)
