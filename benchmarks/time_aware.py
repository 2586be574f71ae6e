"""Issue 13's targets: history-probe coverage on DyKnow, a >= 5-wave LoRA stream over every DyKnow edit, and the
history-preserving option against plain LoRA with paired 95% intervals.

    .venv/bin/python benchmarks/time_aware.py coverage
    .venv/bin/python benchmarks/time_aware.py stream --out runs/bench-stream [--waves 5] [--set key=value ...]
    .venv/bin/python benchmarks/time_aware.py history-option --out runs/bench-history [--edits N] [--set ...]

Each prints a JSON summary (stream and history-option also write OUT/benchmark.json).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path


def coverage(args) -> dict:
    from chronosweep.core import history
    from chronosweep.data import load_edits
    from chronosweep.data.config import DataConfig

    edits = load_edits(DataConfig(name="dyknow", limit=None, locality="none"))
    mods = [r for r in edits.requests if r.kind == "modification"]
    plan = history.plan(mods, args.holders)
    cov = plan.coverage()
    return {"target": "history probes for >= 80% of DyKnow modification edits", "modification_edits": len(mods),
            **cov, "met": cov["share"] >= 0.8}


def _edit(out: Path, overrides: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "chronosweep.cli", "edit", "--out", str(out), "--force",
           *sum((["--set", o] for o in overrides), [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - t0


def _start(out: Path, overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chronosweep.cli", "edit", "--out", str(out), "--force",
                             *sum((["--set", o] for o in overrides), [])])


def stream(args) -> dict:
    from chronosweep.data import load_edits
    from chronosweep.data.config import DataConfig

    n = len(load_edits(DataConfig(name="dyknow", limit=None, locality="none")).requests)
    per_wave = math.ceil(n / args.waves)
    m, wall = _edit(args.out, ["method=lora", "data.name=dyknow", "data.limit=null", "protocol=sequential",
                               f"stream.wave={per_wave}", "stream.order=time_start", "threads=2",
                               "save_artifacts=false", *args.overrides])
    waves = [json.loads(line) for line in (args.out / "stream.jsonl").read_text().splitlines()]
    keys = ("reliability", "retention_first", "retention_earlier", "locality", "leakage", "history_retention")
    return {"target": ">= 5 waves over every DyKnow edit with LoRA in <= 900 s on 2 cores", "edits": m["n_edits"],
            "waves": len(waves), "wall_seconds": wall, "total_seconds": m["total_seconds"],
            "edit_seconds": m["edit_seconds"], "eval_seconds": m["eval_seconds"],
            "pre_eval_seconds": m["pre_eval_seconds"], "load_average": m.get("load_average"),
            "per_wave": [{k: w.get(k) for k in ("wave", "label", "n_applied", *keys)} for w in waves],
            "first_wave_retention": m.get("first_wave_retention"),
            "met": len(waves) >= 5 and m["n_edits"] == n and wall <= 900}


def _units(run_dir: Path) -> dict:
    from chronosweep.evaluation.scoring import unit_values

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return unit_values(rows, "post")


def history_option(args) -> dict:
    from chronosweep.evaluation import metrics as registry
    from chronosweep.report.stats import Bootstrap, paired_comparison

    base = ["method=lora", "data.name=dyknow", f"data.limit={args.edits}", "threads=1", "save_artifacts=false",
            *args.overrides]
    # The two trials run side by side, one thread each (one core each on a 2-core machine).
    t0 = time.perf_counter()
    jobs = [_start(args.out / "plain", base), _start(args.out / "history", [*base, f"lora.history_weight={args.weight}"])]
    for job in jobs:
        if job.wait() != 0:
            raise SystemExit(f"a trial failed: {job.args}")
    wall = time.perf_counter() - t0
    plain, kept = (json.loads((args.out / name / "metrics.json").read_text()) for name in ("plain", "history"))
    ua, ub = _units(args.out / "history"), _units(args.out / "plain")
    boot = Bootstrap(n_resamples=2000, seed=0)
    out = {}
    for metric in ("history_retention", "history_accuracy", "temporal_reliability", "reliability",
                   "generalization", "locality", "locality_answer", "leakage"):
        a, b = ua.get(metric, {}), ub.get(metric, {})
        m = registry.METRICS[metric]
        c = paired_comparison(a, b, boot, exact=m.interval == "wilson")
        out[metric] = {"history_option": kept.get(metric), "plain": plain.get(metric),
                       "difference": None if c is None else c.diff,
                       "ci95": None if c is None else [c.low, c.high], "n": None if c is None else c.n,
                       "method": None if c is None else c.method, "separated": None if c is None else c.separated}
    return {"edits": plain["n_edits"], "history_weight": args.weight, "n_history_known": plain.get("n_history_known"),
            "comparisons (history option minus plain LoRA)": out,
            "edit_seconds": {"plain": plain["edit_seconds"], "history_option": kept["edit_seconds"]},
            "wall_seconds_both": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("coverage")
    c.add_argument("--holders", type=int, default=3)
    s = sub.add_parser("stream")
    s.add_argument("--out", type=Path, default=Path("runs/bench-stream"))
    s.add_argument("--waves", type=int, default=5)
    s.add_argument("--set", dest="overrides", action="append", default=[])
    h = sub.add_parser("history-option")
    h.add_argument("--out", type=Path, default=Path("runs/bench-history"))
    h.add_argument("--edits", default="null", help="data.limit (default: every DyKnow edit)")
    h.add_argument("--weight", type=float, default=0.5)
    h.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    summary = {"coverage": coverage, "stream": stream, "history-option": history_option}[args.what](args)
    text = json.dumps(summary, indent=2)
    print(text)
    if getattr(args, "out", None):
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "benchmark.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
