"""ROME and MEMIT, published and chronosweep's variants, on the default model and the first N DyKnow edits.

    .venv/bin/python benchmarks/locate_edit.py --out runs/bench-locate [--edits 20] [--threads 2]
        [--runs rome:single rome-preserve:single rome:sequential ...] [--cold-stats] [--set key=value ...]

Each run is one `chronosweep edit` trial (run_trial, the path of the CLI and of every sweep trial) with the
model's preset, under the protocol named after the colon (sequential runs score every --eval-every edits).
Key statistics come from the shared cache (computed there once if missing); --cold-stats first times computing
them in an empty cache folder. Prints a JSON summary, writes it to OUT/benchmark.json, and checks issue 11's
targets where a run measures them (the reference: EasyEdit's ROME on the same model and edits, 0.98 / 0.78 / 0.93
on the first 10 edits one at a time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

DEFAULT_RUNS = ["rome:single", "rome-preserve:single", "rome:sequential", "rome-preserve:sequential",
                "memit:batch", "memit-preserve:batch"]
KEYS = ("rewrite_acc", "rephrase_acc", "locality_acc", "reliability", "generalization", "locality", "edit_seconds",
        "edit_seconds_per_edit", "eval_seconds", "total_seconds", "trainable_params")
# (run, metric, op, value): issue 11's targets.
TARGETS = [
    ("rome:single", "edit_seconds_per_edit", "<=", 9.0),
    ("rome:single", "rewrite_acc", ">=", 0.98 - 0.03),
    ("rome:single", "rephrase_acc", ">=", 0.78 - 0.03),
    ("rome:single", "locality_acc", ">=", 0.93 - 0.03),
    ("rome-preserve:single", "rewrite_acc", ">=", 1.00),
    ("rome-preserve:single", "rephrase_acc", ">=", 0.81),
    ("rome-preserve:single", "locality_acc", ">=", 0.95),
    ("memit:batch", "edit_seconds", "<=", 60.0),
    ("memit:batch", "rewrite_acc", ">=", 0.90),
    ("memit:batch", "locality_acc", ">=", 0.90),
]


def time_stats(threads: int | None) -> dict:
    """Key statistics of ROME's layer in an empty cache: sampling the corpus, then accumulating C."""
    import torch

    from chronosweep.core.archs import arch_for
    from chronosweep.core.models import load, resolve
    from chronosweep.editing.stats import second_moments

    if threads:
        torch.set_num_threads(threads)
    info = resolve("smollm2-135m")
    model, tok = load(info, torch.device("cpu"), torch.float32)
    folder = Path(tempfile.mkdtemp(prefix="stats-cold-"))
    t0 = time.perf_counter()
    second_moments(model, tok, arch_for(info.model_type), [5], corpus="model", samples=20000,
                   fingerprint=info.fingerprint, cache_dir=folder, device="cpu")
    return {"stats_seconds_first_layer": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-locate"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    ap.add_argument("--cold-stats", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from chronosweep.trial.config import load_config
    from chronosweep.trial.run import run_trial

    summary: dict = {"n_edits": args.edits, "threads": args.threads, "machine": describe(args.threads), "runs": {}}
    if args.cold_stats:
        summary.update(time_stats(args.threads))
    for run in args.runs:
        method, _, protocol = run.partition(":")
        overrides = [f"method={method}", f"protocol={protocol or 'batch'}", f"data.limit={args.edits}",
                     f"threads={args.threads}", "save_artifacts=false", f"eval_every={args.eval_every}",
                     *args.overrides]
        m = run_trial(load_config(None, overrides), args.out / run.replace(":", "-"), force=True)
        row = {k: m.get(k) for k in KEYS}
        row.update(preset=(m.get("preset") or {}).get("name"), pre_rewrite_acc=m["pre"].get("rewrite_acc"),
                   pre_rephrase_acc=m["pre"].get("rephrase_acc"))
        # CPU seconds of the edits (all threads): on a shared machine they say what the edit costs, wall time does not.
        cpu = [h["cpu_seconds"] for h in m["history"] if "cpu_seconds" in h]
        row["edit_cpu_seconds_per_edit"] = sum(cpu) / m["n_edits"] if cpu else None
        steps = [h["steps"] for h in m["history"] if "steps" in h]
        row["mean_v_steps"] = sum(steps) / len(steps) if steps else None
        row["tail_modes"] = sorted({h["tail_mode"] for h in m["history"] if "tail_mode" in h})
        if "immediate" in m:
            row["immediate"] = {k: m["immediate"].get(k) for k in ("rewrite_acc", "rephrase_acc", "locality_acc")}
            row["checkpoints"] = [{k: c.get(k) for k in ("n_applied", "rewrite_acc", "rephrase_acc", "locality_acc")}
                                  for c in m["checkpoints"]]
        summary["runs"][run] = row
        print(json.dumps({run: row}), flush=True)
    checks = []
    for run, key, op, value in TARGETS:
        got = summary["runs"].get(run, {}).get(key)
        if got is not None:
            checks.append({"run": run, "metric": key, "target": f"{op} {value:g}", "value": got,
                           "met": got <= value if op == "<=" else got >= value})
    summary["targets"] = checks
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
