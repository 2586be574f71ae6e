"""Export round trip on real run dirs: the exported directory, loaded by transformers alone, answers every probe of
the run as the run's post-edit model did.

    .venv/bin/python benchmarks/export_roundtrip.py RUN_DIR [RUN_DIR ...] --out runs/bench-export

Each run dir is exported (`chronosweep export`), loaded with AutoModelForCausalLM / AutoTokenizer from the exported
folder, and its greedy continuations of predictions.jsonl's prompts (the run's max_new_tokens and evaluation batch
size) are compared with the run's `post` column. Prints and writes OUT/export_roundtrip.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml


def check(run_dir: Path, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chronosweep.cli.export import export_run
    from chronosweep.evaluation.generation import greedy_continuations

    t0 = time.perf_counter()
    target = export_run(run_dir, out / run_dir.name, force=True, progress=lambda _: None)
    export_seconds = time.perf_counter() - t0
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    evaluation = cfg.get("eval", {})
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(target)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["probe"] != "multihop"]  # a multi-hop row stands for several questions
    again = greedy_continuations(model, tok, [r["prompt"] for r in rows], evaluation.get("max_new_tokens", 12),
                                 evaluation.get("batch_size", 32), torch.device("cpu"))
    same = sum(a == r["post"] for a, r in zip(again, rows))
    return {"run_dir": str(run_dir), "method": cfg["method"], "model": cfg["model"], "probes": len(rows),
            "identical": same, "all_identical": same == len(rows), "export_seconds": export_seconds,
            "export_mb": sum(f.stat().st_size for f in target.iterdir()) / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-export"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [check(run, args.out) for run in args.runs]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_roundtrip.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if all(r["all_identical"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
