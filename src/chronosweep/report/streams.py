"""The report's edit-stream section: each trial's stream.jsonl as lines against the wave, one per method and
strategy, and the first wave's retention at the end of the stream with its interval."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

# What the stream plot draws against the wave, in panel order.
PLOTTED = ("reliability", "retention_first", "retention_earlier", "locality", "leakage", "history_retention")
LABELS = {"reliability": "reliability of the wave", "retention_first": "first wave's retention",
          "retention_earlier": "earlier waves' retention", "locality": "locality", "leakage": "leakage",
          "history_retention": "history retention"}
# The end-of-stream columns of the table (metrics.json's, with the report's intervals).
AT_END = ("first_wave_retention", "reliability", "history_retention", "temporal_reliability", "locality", "leakage")


def line_label(row: dict) -> str:
    """method, and the stream strategy where the method has one (lora.stream_strategy)."""
    method = row.get("method") or "?"
    strategy = row.get(f"{method}.stream_strategy")
    return f"{method} / {strategy}" if strategy else method


def read_stream(run_dir: str) -> list[dict]:
    path = Path(run_dir) / "stream.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                return []
    return out


def best_per_line(df: pl.DataFrame) -> list[tuple[str, dict, list[dict]]]:
    """(line label, trial row, its stream records): per method/strategy the trial with the best objective."""
    chosen: dict[str, tuple[dict, list[dict]]] = {}
    ok = df.filter(pl.col("status") == "ok") if "status" in df.columns else df
    for row in ok.iter_rows(named=True):
        records = read_stream(row["run_dir"])
        if not records:
            continue
        label = line_label(row)
        score = row.get("objective_score")
        held = chosen.get(label)
        if held is None or (score is not None and (held[0].get("objective_score") is None
                                                   or score > held[0]["objective_score"])):
            chosen[label] = (row, records)
    return [(label, *chosen[label]) for label in sorted(chosen)]


def stream_frame(lines: list[tuple[str, dict, list[dict]]]) -> pl.DataFrame:
    """Long format: one row per line and wave (wave numbered from 1)."""
    rows = []
    for label, trial, records in lines:
        for rec in records:
            rows.append({"line": label, "run_dir": trial["run_dir"], "wave": int(rec["wave"]) + 1,
                         "wave_label": str(rec.get("label")), "n_applied": rec.get("n_applied"),
                         **{m: rec.get(m) for m in PLOTTED}})
    schema = {"line": pl.String, "run_dir": pl.String, "wave": pl.Int64, "wave_label": pl.String,
              "n_applied": pl.Int64, **{m: pl.Float64 for m in PLOTTED}}
    return pl.from_dicts(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def stream_table(lines: list[tuple[str, dict, list[dict]]]) -> pl.DataFrame:
    """Per line: waves, edits, the first wave's reliability right after it and its retention at the end (with the
    report's interval columns), and the end-of-stream quality."""
    rows = []
    for label, trial, records in lines:
        row = {"line": label, "trial": trial.get("trial"), "waves": len(records),
               "edits": records[-1].get("n_applied"), "wave_by": str(trial.get("stream.wave")),
               "first_wave_at_start": records[0].get("reliability")}
        for m in AT_END:
            row[m] = trial.get(m)
            for suffix in ("_ci_low", "_ci_high", "_n"):
                if f"{m}{suffix}" in trial:
                    row[f"{m}{suffix}"] = trial.get(f"{m}{suffix}")
        row["edit_seconds"] = trial.get("edit_seconds")
        row["total_seconds"] = trial.get("total_seconds")
        rows.append(row)
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()
