"""Time the README's main job (the small layer-window sweep, then its report) from an empty cache.

    .venv/bin/python benchmarks/main_job.py [--warm-model] [--set base.data.limit=null] [--out runs/bench-main]

Runs `chronosweep sweep configs/sweeps/layers-multihop-small.yaml` and `chronosweep report` as the README does, in
a fresh CHRONOSWEEP_CACHE (so the model is fetched and converted and the unedited model's answers computed, as on
a new machine; --warm-model copies the converted model in first). Prints one JSON object: wall seconds of the sweep
and the report, the load average around them, and per trial the edit / evaluation wall and CPU seconds and how many
trials ran beside it. On a shared machine the wall times say as much about the other users as about chronosweep;
the CPU seconds say what the job needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "configs" / "sweeps" / "layers-multihop-small.yaml"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the sweep and report here (default: a temp folder)")
    parser.add_argument("--warm-model", action="store_true", help="copy the already converted model into the cache")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to chronosweep sweep")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-main-"))
    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if args.warm_model:
        from chronosweep.core.models import cache_dir

        shutil.copytree(cache_dir() / "models", cache / "models", dirs_exist_ok=True)
    env = {**os.environ, "CHRONOSWEEP_CACHE": str(cache)}
    cli = [sys.executable, "-m", "chronosweep.cli"]
    sets = [x for s in args.set for x in ("--set", s)]
    out: dict = {"load_before": _load()}
    t0 = time.perf_counter()
    subprocess.run([*cli, "sweep", str(SWEEP), "--name", "layers-multihop-small", "--storage", str(work / "sweeps"),
                    "--resume-if-exists", *sets], env=env, check=True, cwd=ROOT)
    out["sweep_seconds"] = round(time.perf_counter() - t0, 1)
    out["load_after_sweep"] = _load()
    t1 = time.perf_counter()
    subprocess.run([*cli, "report", str(work / "sweeps" / "layers-multihop-small"), "--out",
                    str(work / "report")], env=env, check=True, cwd=ROOT)
    out["report_seconds"] = round(time.perf_counter() - t1, 1)
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    trials = []
    for path in sorted((work / "sweeps" / "layers-multihop-small").glob("*/run/metrics.json")):
        m = json.loads(path.read_text())
        trials.append({k: m.get(k) for k in ("edited_layers", "n_edits", "n_multihop_cases", "edit_seconds",
                                              "edit_cpu_seconds", "eval_seconds", "eval_cpu_seconds",
                                              "pre_eval_seconds", "load_seconds", "concurrent_trials",
                                              "load_average", "multihop_accuracy", "multihop_specific", "leakage")})
    out["trials"] = trials
    out["work"] = str(work)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
