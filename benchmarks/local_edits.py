"""Issue #12's benchmark: edits that stay local, generalise and cost little, on the default model.

    .venv/bin/python benchmarks/local_edits.py --out runs/bench-local [--threads 2] [--parts plain local cache scale]
        [--compare rome memit rome:single] [--set key=value ...]

Parts, each one `chronosweep edit` process (run_trial, the CLI's path) on the first 20 DyKnow edits unless said:
- plain:  the study's plain LoRA, configs/trials/lora-mlp.yaml (frozen-prefix cache on, as shipped), beside local;
- local:  configs/trials/lora-local.yaml, batch protocol: the targets below;
- cache:  lora-mlp.yaml with lora.prefix_cache=false: the cached run (plain) against the uncached one, same loss;
- scale:  lora-local.yaml on 50 and on all 111 DyKnow edits;
- --compare rome memit rome:single: those methods' trial configs on the same edits (under their own protocol, or
  the one after the colon), and paired 95% bootstrap intervals of
  (lora-local - method) over the edits (probes for locality) both runs scored: reliability, generalization,
  locality, locality_acc (and leakage, neighborhood where the metric registry has them).
Runs go in pairs that start together (plain beside uncached, local beside a second plain run, the 50- beside the
111-edit run), so that on a machine other jobs share each comparison sees the same load; --sequential runs one at
a time (an idle machine, where a pair would share the cores). Writes OUT/benchmark.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "configs" / "trials" / "lora-local.yaml"
PLAIN = ROOT / "configs" / "trials" / "lora-mlp.yaml"
QUALITY = ("reliability", "generalization", "locality", "rewrite_acc", "rephrase_acc", "locality_acc", "leakage",
           "neighborhood", "locality_answer")
# (metric, op, bound) on the local run; leakage exists once the metric registry has it.
TARGETS = [("reliability", ">=", 0.95), ("generalization", ">=", 0.75), ("rewrite_acc", ">=", 0.98),
           ("rephrase_acc", ">=", 0.90), ("locality_acc", ">=", 0.95), ("leakage", "<=", 0.02),
           ("edit_seconds_per_edit", "<=", 0.9)]
PAIRED = ("reliability", "generalization", "locality", "locality_acc", "leakage", "neighborhood")


def start(name: str, config: Path, out: Path, threads: int, overrides: list[str]):
    run_dir = out / name
    cmd = [sys.executable, "-m", "chronosweep.cli", "edit", str(config), "--out", str(run_dir), "--force",
           "--set", f"threads={threads}", *sum((["--set", o] for o in overrides), [])]
    log = open(out / f"{name}.log", "w")
    return name, run_dir, time.perf_counter(), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def finish(job) -> dict:
    name, run_dir, t0, proc = job
    if proc.wait() != 0:
        raise SystemExit(f"{name} failed: see {run_dir.parent / (name + '.log')}")
    m = json.loads((run_dir / "metrics.json").read_text())
    m["process_seconds"] = time.perf_counter() - t0
    m["run_dir"] = str(run_dir)
    return m


def pair(specs: list[tuple], out: Path, threads: int, sequential: bool) -> list[dict]:
    """Run (name, config, overrides) specs together (or one after another) and return their metrics."""
    if sequential:
        return [finish(start(*spec[:2], out, threads, spec[2])) for spec in specs]
    jobs = [start(*spec[:2], out, threads, spec[2]) for spec in specs]
    return [finish(job) for job in jobs]


def summary(m: dict) -> dict:
    keep = {k: m.get(k) for k in (*QUALITY, "n_edits", "edit_seconds", "edit_seconds_per_edit", "eval_seconds",
                                  "epochs_run", "threads", "process_seconds", "peak_rss_mb", "run_dir") if k in m}
    training = m.get("training") or {}
    keep["stop_reason"] = training.get("stop_reason")
    keep["prefix_cache"] = (training.get("prefix_cache") or {}).get("status")
    # The last row that has a loss (ROME's single protocol ends its history with per-edit rows that may not).
    keep["final_loss"] = next((r["loss"] for r in reversed(m.get("history") or []) if "loss" in r), None)
    return keep


def paired(local_dir: str, other_dir: str, seed: int = 0) -> dict:
    """Paired bootstrap of the per-unit differences (local - other) over the units both runs scored."""
    import numpy as np

    from chronosweep.evaluation.scoring import unit_values
    from chronosweep.report.stats import Bootstrap, bootstrap_intervals

    def units(d: str) -> dict:
        rows = [json.loads(line) for line in (Path(d) / "predictions.jsonl").read_text().splitlines()]
        return unit_values(rows, "post")

    a, b = units(local_dir), units(other_dir)
    out = {}
    for metric in PAIRED:
        if metric not in a or metric not in b:
            out[metric] = "no units: these runs scored no probe of this metric"
            continue
        shared = sorted(set(a[metric]) & set(b[metric]))
        diffs = np.array([a[metric][u] - b[metric][u] for u in shared])
        iv = bootstrap_intervals({metric: diffs}, Bootstrap(n_resamples=2000, seed=seed))[metric]
        out[metric] = {"difference": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "n": iv.n,
                       "verdict": "lora-local better" if iv.low > 0 else "other better" if iv.high < 0 else "no clear difference"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-local"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--parts", nargs="+", default=["plain", "local", "cache", "scale"],
                    choices=["plain", "local", "cache", "scale"])
    ap.add_argument("--compare", nargs="*", default=[], metavar="METHOD[:PROTOCOL]",
                    help="rome, memit, rome:single, ...: that method's trial config, under its own protocol or this one")
    ap.add_argument("--sequential", action="store_true", help="one run at a time (an idle machine)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    limit = [f"data.limit={args.edits}", *args.overrides]
    result: dict = {"threads": args.threads, "edits": args.edits, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "machine": describe(args.threads)}
    runs: dict[str, dict] = {}

    if "cache" in args.parts:
        runs["plain"], runs["uncached"] = pair([("plain", PLAIN, limit),
                                                ("uncached", PLAIN, [*limit, "lora.prefix_cache=false"])],
                                               args.out, args.threads, args.sequential)
        cached, plain = runs["plain"], runs["uncached"]
        losses = [(a["loss"], b["loss"]) for a, b in zip(cached["history"], plain["history"], strict=True)]
        result["cache"] = {"cached_edit_seconds": cached["edit_seconds"], "uncached_edit_seconds": plain["edit_seconds"],
                           "ratio": cached["edit_seconds"] / plain["edit_seconds"],
                           "max_loss_difference": max(abs(a - b) for a, b in losses), "target_ratio": "<= 0.7"}
    if "local" in args.parts or args.compare:
        specs = [("local", LOCAL, limit)]
        if "plain" in args.parts:
            specs.append(("plain-beside-local", PLAIN, limit))
        got = pair(specs, args.out, args.threads, args.sequential)
        runs["local"] = got[0]
        if len(got) > 1:
            runs["plain-beside-local"] = got[1]
    elif "plain" in args.parts and "plain" not in runs:
        runs["plain"] = pair([("plain", PLAIN, limit)], args.out, args.threads, args.sequential)[0]
    if "scale" in args.parts:
        got = pair([("local-50", LOCAL, [*args.overrides, "data.limit=50"]),
                    ("local-all", LOCAL, [*args.overrides, "data.limit=null"])], args.out, args.threads, args.sequential)
        runs["local-50"], runs["local-all"] = got
    for spec in args.compare:
        method, _, protocol = spec.partition(":")
        config = ROOT / "configs" / "trials" / f"{method}.yaml"
        if method not in ("rome", "memit") or protocol not in ("", "batch", "single", "sequential"):
            raise SystemExit(f"--compare {spec}: expected rome or memit, optionally :batch, :single or :sequential")
        name = spec.replace(":", "-")
        extra = [f"protocol={protocol}"] if protocol else []
        runs[name] = pair([(name, config, [*limit, *extra])], args.out, args.threads, True)[0]
        result[f"paired_local_minus_{name}"] = paired(runs["local"]["run_dir"], runs[name]["run_dir"])

    result["runs"] = {name: summary(m) for name, m in runs.items()}
    if "local" in runs:
        local = runs["local"]
        checks = {}
        for metric, op, bound in TARGETS:
            value = local.get(metric)
            checks[metric] = {"target": f"{op} {bound}", "value": value,
                              "met": None if value is None else (value >= bound if op == ">=" else value <= bound)}
        beside = runs.get("plain-beside-local") or runs.get("plain")
        if beside is not None:
            ratio = local["edit_seconds"] / beside["edit_seconds"]
            checks["edit_seconds_vs_plain_lora"] = {"target": "<= 0.5", "value": ratio, "met": ratio <= 0.5,
                                                    "plain_run": beside["run_dir"]}
        result["targets"] = checks
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
