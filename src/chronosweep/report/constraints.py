"""The report's constraint section: the best finished trial meeting every bound of the sweep's `constraints:`.

Trials that meet them all are ranked as everywhere else in the report (objective, then cost per edit); when none
does, the section says "none" and lists the trials that came closest (most bounds met, then smallest total miss),
with what each one misses.
"""

from __future__ import annotations

import polars as pl

from chronosweep.evaluation import constraints as bounds
from chronosweep.report import render as r
from chronosweep.report.tables import COST, config_summaries

CLOSEST = 3


def constraint_table(df: pl.DataFrame, constraints: dict, config_cols: list[str]) -> pl.DataFrame:
    """Every finished trial with `meets` (bool), `misses` (text) and `bounds_met`, best first."""
    ok = df.filter(pl.col("status") == "ok")
    if not constraints or ok.is_empty():
        return pl.DataFrame()
    ok = ok.join(config_summaries(ok, ["method"], config_cols), on="run_dir", how="left")
    meets, misses, met, gap = [], [], [], []
    for row in ok.iter_rows(named=True):
        short = bounds.shortfalls(row, constraints)
        meets.append(not short)
        met.append(len(constraints) - len(short))
        gap.append(sum(v for v in short.values() if v is not None) + sum(1.0 for v in short.values() if v is None))
        misses.append(", ".join(f"{k} {'not measured' if v is None else f'short by {v:.3g}'}"
                                for k, v in short.items()))
    ok = ok.with_columns(pl.Series("meets", meets), pl.Series("misses", misses), pl.Series("bounds_met", met),
                         pl.Series("_gap", gap, dtype=pl.Float64))
    cost = pl.col(COST) if COST in ok.columns else pl.lit(None)
    ok = ok.sort([pl.col("meets"), pl.col("bounds_met"), pl.col("_gap"), pl.col("objective_score"), cost,
                  pl.col("trial")], descending=[True, True, False, True, False, False], nulls_last=True)
    cols = ["meets", "experiment", "trial", "method", "config", *constraints, "objective", COST, "misses",
            "bounds_met", "run_dir"]
    return ok.select([pl.col(c) if c in ok.columns else pl.lit(None).alias(c) for c in dict.fromkeys(cols)])


def blocks(table: pl.DataFrame, constraints: dict) -> list[r.Block]:
    if not constraints:
        return []
    out: list[r.Block] = [r.Heading(2, "Best configuration meeting the constraints"),
                          r.Para(f"Constraints: {bounds.describe(constraints)}.")]
    if table.is_empty():
        return out + [r.Para("**none**: no finished trial.")]
    meeting = table.filter(pl.col("meets"))
    show = list(dict.fromkeys(["trial", "method", "config", *constraints, "objective", COST]))
    if meeting.height:
        best = meeting.row(0, named=True)
        out.append(r.Para(f"**{best['trial']}** ({best['method']}: {best['config']}) meets all of them, best of "
                          f"{meeting.height} trial{'s' if meeting.height > 1 else ''} that do (of {table.height})."))
        return out + [r.table(meeting.select(show))]
    out.append(r.Para(f"**none**: no finished trial of {table.height} meets all of them. Closest:"))
    return out + [r.table(table.head(CLOSEST).select([*show, "misses"]))]
