"""The GPU path on one CUDA device: every method in bf16, LoRA on the plain and the DeepSpeed engine, bigger batches.

    python benchmarks/gpu_trials.py --out runs/gpu [--only NAME ...] [--timeout 150]

Each trial is `chronosweep edit` in its own process (the same path as on a CPU), on DyKnow edits with the default
model. After every trial the summary (OUT/gpu_metrics.json, OUT/gpu_table.md) is rewritten, so a run cut short
still leaves what finished; each trial's output goes to OUT/<name>.log.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CUDA = ["device=cuda", "precision=bf16"]
# name -> overrides. The first six are the CPU methods table's settings (docs/benchmarks.md) on CUDA in bf16.
TRIALS: dict[str, list[str]] = {
    "lora-torch": [*CUDA, "method=lora", "engine=torch", "data.limit=20"],
    "lora-deepspeed-z0": [*CUDA, "method=lora", "engine=deepspeed", "deepspeed.zero_stage=0", "data.limit=20"],
    # Every DyKnow edit at once, batch 32, ZeRO-2: the "bigger batches" case.
    "lora-deepspeed-z2-all": [*CUDA, "method=lora", "engine=deepspeed", "deepspeed.zero_stage=2",
                              "lora.batch_size=32", "data.limit=200"],
    "ptuning": [*CUDA, "method=ptuning", "engine=deepspeed", "data.limit=20"],
    "full": [*CUDA, "method=full", "engine=deepspeed", "deepspeed.zero_stage=2", "data.limit=20"],
    "freeze": [*CUDA, "method=freeze", "engine=deepspeed", "data.limit=20"],
    "rome": [*CUDA, "method=rome", "data.limit=20"],
    "memit": [*CUDA, "method=memit", "data.limit=20"],
    # fp32 on the GPU, for the bf16 comparison.
    "lora-torch-fp32": ["device=cuda", "precision=fp32", "method=lora", "engine=torch", "data.limit=20"],
}
KEYS = ("method", "engine", "precision", "n_edits", "reliability", "generalization", "locality", "rewrite_acc",
        "rephrase_acc", "locality_acc", "edit_seconds", "edit_seconds_per_edit", "eval_seconds", "load_seconds",
        "trainable_params", "peak_gpu_mb", "peak_rss_mb")


def summarize(out: Path, results: dict) -> None:
    (out / "gpu_metrics.json").write_text(json.dumps(results, indent=2))
    cols = ["trial", "status", "reliability", "generalization", "locality", "edit_seconds", "eval_seconds",
            "trainable_params", "peak_gpu_mb", "wall_seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in results.items():
        cells = [name] + [r.get(c) for c in cols[1:]]
        lines.append("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    (out / "gpu_table.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gpu"))
    ap.add_argument("--only", nargs="+", choices=list(TRIALS))
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per trial")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for name in args.only or TRIALS:
        run_dir = args.out / "runs" / name
        cmd = [sys.executable, "-m", "chronosweep.cli", "edit", "--out", str(run_dir), "--force",
               *sum((["--set", o] for o in TRIALS[name]), [])]
        t0 = time.perf_counter()
        with open(args.out / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        wall = time.perf_counter() - t0
        metrics = run_dir / "metrics.json"
        if rc == 0 and metrics.is_file():
            m = json.loads(metrics.read_text())
            cfg = m.get("config", {})
            results[name] = {"status": "ok", "wall_seconds": wall, **{k: m.get(k) for k in KEYS},
                             "engine": cfg.get("engine"), "precision": cfg.get("precision")}
        else:
            results[name] = {"status": f"failed ({rc})", "wall_seconds": wall,
                             "log_tail": (args.out / f"{name}.log").read_text()[-3000:]}
        print(f"{name}: {results[name]['status']} in {wall:.1f} s", flush=True)
        summarize(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
