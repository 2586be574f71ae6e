"""How much of a local sweep's wall time goes into the trials' own work (edit + evaluation)?

Runs an 8-trial grid (LoRA rank x target modules) on the default model with an embedded Ray, then compares
the trials' edit and evaluation seconds (from their metrics.json) with the sweep's wall time:

    in-trial share = sum(edit_seconds + eval_seconds) / concurrency / wall

The rest is Ray start-up, scheduling, worker start-up and imports, model loading and reporting. Also reports
model loading per trial (load_seconds), which after the first trial should be a page-cache read.

    .venv/bin/python benchmarks/sweep_overhead.py [--limit 20] [--epochs 25] [--concurrency 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sweep_file(args) -> dict:
    return {
        "description": "sweep overhead benchmark",
        "base": {
            "model": args.model,
            "method": "lora",
            "data": {"name": "dyknow", "limit": args.limit, "locality_limit": args.locality},
            "lora": {"layer_start": 12, "layer_width": 6, "epochs": args.epochs, "lr": 2.0e-3},
        },
        "space": {"lora.rank": [4, 8, 16, 32], "lora.targets": ["mlp", "attn"]},
        "search": "grid",
        "resources": {"cpus": args.cpus_per_trial},
        "max_concurrent_trials": args.concurrency,
        "objective": {"weights": {"reliability": 1.0, "generalization": 1.0, "locality": 1.0}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=20, help="edits per trial")
    parser.add_argument("--locality", type=int, default=50, help="locality probes per trial")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--storage", default=None, help="experiments folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    import polars as pl
    import yaml

    from chronosweep.sweep.runner import SweepOptions, run_sweep
    from chronosweep.sweep.spec import load_sweep

    storage = args.storage or tempfile.mkdtemp(prefix="sweep-overhead-")
    path = Path(storage) / "sweep_overhead.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sweep_file(args), sort_keys=False))
    name = f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = load_sweep(path)
    cpus = int(args.concurrency * args.cpus_per_trial + 0.999)

    t0 = time.perf_counter()
    summary = run_sweep(spec, SweepOptions(name=name, storage=storage, num_cpus=cpus))
    wall = time.perf_counter() - t0

    ok = summary.frame.filter(pl.col("status") == "ok").sort("started_at")
    work = (ok["edit_seconds"] + ok["eval_seconds"]).sum()
    work_pre = (ok["edit_seconds"] + ok["eval_seconds"] + ok["pre_eval_seconds"]).sum()
    loads = ok["load_seconds"].to_list()
    figures = {
        "trials": summary.frame.height,
        "ok": ok.height,
        "concurrency": args.concurrency,
        "cpus_per_trial": args.cpus_per_trial,
        "wall_seconds": round(wall, 1),
        "edit_plus_eval_seconds": round(work, 1),
        "in_trial_share": round(work / args.concurrency / wall, 3),
        "in_trial_share_with_pre_eval": round(work_pre / args.concurrency / wall, 3),
        "mean_trial_seconds": round(statistics.mean(ok["total_seconds"].to_list()), 1) if ok.height else None,
        "load_seconds_first": round(loads[0], 2) if loads else None,
        "load_seconds_after_first_max": round(max(loads[1:]), 2) if len(loads) > 1 else None,
        "load_seconds_after_first_mean": round(statistics.mean(loads[1:]), 2) if len(loads) > 1 else None,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "experiment": str(Path(storage) / name),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok.height == summary.frame.height else 1


if __name__ == "__main__":
    sys.exit(main())
