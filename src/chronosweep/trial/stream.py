"""Edit streams: the sequential protocol with edits arriving in waves (by year of time_start, or N at a time), and
what is recorded after each wave (stream.jsonl, docs/run-dir.md).

A wave's retention is always computed on that wave's own edit prompts, measured on the model after the later
waves: reliability of wave j at checkpoint k >= j.
"""

from __future__ import annotations

from statistics import fmean

from chronosweep.core.requests import EditRequest

# The probes of the applied edits a checkpoint between waves asks (paraphrases only at the end of the stream:
# nothing recorded per wave reads them).
CHECKPOINT_KINDS = ("rewrite", "neighborhood", "history", "temporal")

# stream.jsonl's metric fields, taken from the checkpoint's metrics over the edits applied so far.
RECORDED = ("locality", "locality_answer", "leakage", "neighborhood", "history_accuracy", "history_retention",
            "n_history_known", "temporal_reliability", "confusion")


def _year(value: str | None) -> int | None:
    from chronosweep.trial.protocols import time_key

    key = time_key(value)
    return key[0] if key is not None else None


def waves(requests: list[EditRequest], order: list[int], wave: int | str) -> list[tuple[str, list[int]]]:
    """(label, request indices) per wave, in the given order: consecutive edits of one time_start year, or N edits."""
    out: list[tuple[str, list[int]]] = []
    if wave == "year":
        for i in order:
            label = str(_year(requests[i].time_start))
            if out and out[-1][0] == label:
                out[-1][1].append(i)
            else:
                out.append((label, [i]))
        return out
    n = int(wave)
    for start in range(0, len(order), n):
        chunk = order[start:start + n]
        out.append((f"edits {start + 1}-{start + len(chunk)}", list(chunk)))
    return out


def reliability_of(rows: list[dict], case_ids: set[str]) -> float | None:
    """Mean reliability (edit prompt answered with the new object) over these edits' rewrite rows."""
    values = [float(bool(r["correct"])) for r in rows
              if r.get("probe") == "rewrite" and r.get("case_id") in case_ids and r.get("correct") is not None]
    return fmean(values) if values else None


def record(k: int, plan: list[tuple[str, list[int]]], requests: list[EditRequest], rows: list[dict], metrics: dict,
           seconds: dict) -> dict:
    """stream.jsonl's line for the checkpoint after wave k."""
    ids = [{requests[i].case_id for i in idx} for _, idx in plan[:k + 1]]
    retention = [reliability_of(rows, ids[j]) for j in range(k)]
    earlier = set().union(*ids[:k]) if k else set()
    return {
        "wave": k,
        "label": plan[k][0],
        "n_edits": len(plan[k][1]),
        "n_applied": sum(len(idx) for _, idx in plan[:k + 1]),
        "reliability": reliability_of(rows, ids[k]),
        "retention": retention,
        "retention_first": reliability_of(rows, ids[0]),
        "retention_earlier": reliability_of(rows, earlier) if k else None,
        "reliability_applied": reliability_of(rows, set().union(*ids)),
        **{name: metrics.get(name) for name in RECORDED},
        **seconds,
    }


def tag_waves(rows: list[dict], plan: list[tuple[str, list[int]]], requests: list[EditRequest]) -> list[dict]:
    """predictions.jsonl rows of the stream's edits carry their wave (first_wave_retention reads wave 0)."""
    wave_of = {requests[i].case_id: k for k, (_, idx) in enumerate(plan) for i in idx}
    return [{**r, "wave": wave_of[r["case_id"]]} if r.get("case_id") in wave_of else r for r in rows]
