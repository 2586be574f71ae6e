"""Time the demo trial (LoRA on the default model) on N DyKnow edits and check issue #2's targets.

    .venv/bin/python benchmarks/edit_trial.py --edits 50 --out runs/bench-edit [--set key=value ...]

Prints a JSON summary (and writes it to OUT/benchmark.json): edit and eval seconds per edit, training and
generation tokens per second, peak RSS, model load time, and whether each target was met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from transformers import AutoTokenizer

TARGETS = {"reliability": (">=", 0.9), "edit_seconds_per_edit": ("<=", 1.5), "eval_seconds_per_edit": ("<=", 0.5),
           "peak_rss_mb": ("<=", 2500.0), "load_seconds": ("<=", 2.0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-edit"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "chronosweep.cli", "edit", "--out", str(args.out), "--force",
           "--set", f"data.limit={args.edits}", *sum((["--set", o] for o in args.overrides), [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    m = json.loads((args.out / "metrics.json").read_text())
    tok = AutoTokenizer.from_pretrained(_model_path(m["config"]["model"]))
    rows = [json.loads(line) for line in (args.out / "predictions.jsonl").read_text().splitlines()]
    generated = sum(len(tok(r["post"], add_special_tokens=False)["input_ids"]) for r in rows)
    train_tokens = sum(h.get("tokens", 0) for h in m["history"])
    summary = {
        "method": m["method"], "n_edits": m["n_edits"], "threads": m["threads"],
        "reliability": m["reliability"], "generalization": m["generalization"], "locality": m["locality"],
        "edit_seconds": m["edit_seconds"], "edit_seconds_per_edit": m["edit_seconds_per_edit"],
        "eval_seconds": m["eval_seconds"], "eval_seconds_per_edit": m["eval_seconds_per_edit"],
        "pre_eval_seconds": m["pre_eval_seconds"], "load_seconds": m["load_seconds"],
        "train_tokens_per_second": train_tokens / m["edit_seconds"] if m["edit_seconds"] else None,
        "generated_tokens_per_second": generated / m["eval_seconds"] if m["eval_seconds"] else None,
        "peak_rss_mb": m["peak_rss_mb"], "trainable_params": m["trainable_params"], "process_wall_seconds": wall,
    }
    summary["targets"] = {k: {"target": f"{op} {v}", "met": (summary[k] >= v) if op == ">=" else (summary[k] <= v)}
                          for k, (op, v) in TARGETS.items()}
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def _model_path(name: str) -> str:
    from chronosweep.core.models import resolve

    return resolve(name).path


if __name__ == "__main__":
    sys.exit(main())
