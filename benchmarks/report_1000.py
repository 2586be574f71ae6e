"""Benchmark: `chronosweep report` over 1,000 synthetic trials with 100 predictions each.

    .venv/bin/python benchmarks/report_1000.py [--trials 1000] [--keep DIR]

Writes a Ray Tune-like experiment (trial folders with params.json, result.json and run/ holding metrics.json,
predictions.jsonl, config.yaml; 1% failed, 1% still running) into a temporary folder, then times the CLI end to
end in this process (imports included) and prints the figure. The limit in the issue is 10 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("lora", "ft", "rome", "memit", "ptuning")


def _config(method: str, i: int, rng) -> dict:
    cfg = {"model": "smollm2-135m", "seed": int(i % 3), "method": method, "device": "auto", "threads": 2,
           "data": {"name": "dyknow", "limit": 20, "offset": 0, "locality": "known_1000", "locality_limit": 20},
           "eval": {"max_new_tokens": 12, "batch_size": 32}}
    if method in ("lora", "ft"):
        cfg[method] = {"layer_start": int(rng.integers(0, 25)), "layer_width": int(rng.choice([1, 2, 4, 6])),
                       "lr": float(rng.choice([1e-3, 2e-3])), "epochs": 25, "rank": 32}
    elif method == "rome":
        cfg[method] = {"layer": int(rng.integers(0, 30)), "v_lr": 0.5}
    elif method == "memit":
        start = int(rng.integers(0, 24))
        cfg[method] = {"layers": list(range(start, start + int(rng.choice([3, 5])))), "mom2_weight": 2093.0}
    else:
        cfg[method] = {"num_virtual_tokens": 20, "lr": 1e-3}
    return cfg


def _layers(options: dict) -> list[int]:
    if "layers" in options:
        return list(options["layers"])
    if "layer" in options:
        return [options["layer"]]
    if "layer_start" in options:
        return list(range(options["layer_start"], options["layer_start"] + options["layer_width"]))
    return []


def _predictions(rng, p: dict) -> tuple[list[dict], dict]:
    rows, rel, gen, loc, mh = [], [], [], [], []
    for e in range(20):
        ok = bool(rng.random() < p["rel"])
        rows.append({"probe": "rewrite", "case_id": f"e{e}", "prompt": f"The president of country {e} is",
                     "expected": [f"Person {e}"], "pre": "someone else", "post": f"Person {e}" if ok else "nobody",
                     "correct": ok, "pre_correct": False, "score": float(ok), "token_acc": float(ok)})
        rel.append(float(ok))
        para = []
        for k in range(2):
            ok = bool(rng.random() < p["gen"])
            rows.append({"probe": "paraphrase", "case_id": f"e{e}", "prompt": f"Who leads country {e}? ({k})",
                         "expected": [f"Person {e}"], "pre": "x", "post": "y", "correct": ok, "pre_correct": False,
                         "score": float(ok), "token_acc": None})
            para.append(float(ok))
        gen.append(sum(para) / 2)
        f1 = float(np.clip(rng.normal(p["loc"], 0.1), 0, 1))
        rows.append({"probe": "locality", "case_id": f"locality:{e}", "prompt": f"Unrelated fact {e} is",
                     "expected": ["pre continuation"], "pre": "pre continuation", "post": "post continuation",
                     "correct": None, "pre_correct": None, "score": f1, "token_acc": f1})
        loc.append(f1)
        ok = bool(rng.random() < p["mh"])
        rows.append({"probe": "multihop", "case_id": f"mh{e}", "prompt": f"Q: Who is the spouse of leader {e}?",
                     "expected": [f"Spouse {e}"], "pre": "x", "post": "y", "correct": ok, "pre_correct": False,
                     "score": float(ok), "token_acc": None})
        mh.append(float(ok))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return rows, {"reliability": mean(rel), "generalization": mean(gen), "locality": mean(loc),
                  "multihop_accuracy": mean(mh)}


def make_experiment(root: Path, n_trials: int, seed: int = 0) -> Path:
    """A Tune-like experiment folder with n_trials trials; returns its path."""
    rng = np.random.default_rng(seed)
    exp = root / "bench_sweep"
    for i in range(n_trials):
        method = METHODS[i % len(METHODS)]
        trial = exp / f"trainable_{i:05d}_{i}_method={method}"
        run = trial / "run"
        run.mkdir(parents=True)
        cfg = _config(method, i, rng)
        (trial / "params.json").write_text(json.dumps(cfg))
        (trial / "result.json").write_text(json.dumps({"trial_id": f"t{i:05d}", "training_iteration": 25}) + "\n")
        (run / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
        if i % 100 == 7:
            (run / "error.txt").write_text("RuntimeError: CUDA out of memory\n\nTraceback (most recent call last):\n")
            continue
        if i % 100 == 9:
            continue  # still running
        p = {"rel": rng.uniform(0.3, 1), "gen": rng.uniform(0.2, 0.9), "loc": rng.uniform(0.4, 0.95),
             "mh": rng.uniform(0.0, 0.6)}
        rows, quality = _predictions(rng, p)
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        edit_seconds = float(rng.uniform(5, 600))
        metrics = {"status": "ok", "method": method, "model": "smollm2-135m", "dataset": "dyknow", "n_edits": 20,
                   **quality, "rewrite_acc": quality["reliability"], "hop_accuracy": 0.5, "n_multihop_cases": 20,
                   "pre": {"reliability": 0.05, "generalization": 0.04, "multihop_accuracy": 0.01},
                   "edit_seconds": edit_seconds, "edit_seconds_per_edit": edit_seconds / 20, "eval_seconds": 30.0,
                   "load_seconds": 1.0, "total_seconds": edit_seconds + 35, "trainable_params": 1013760,
                   "total_params": 134515008, "trainable_fraction": 1013760 / 134515008, "peak_rss_mb": 1200.0,
                   "peak_gpu_mb": None, "device": "cpu", "n_gpus": 0, "threads": 2,
                   "history": [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(25)], "config": cfg,
                   "versions": {"torch": "2.13.0"}, "scoring_version": 2, "edited_layers": _layers(cfg[method])}
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return exp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="write the experiment and report here instead of a temp folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        exp = make_experiment(root, args.trials)
        print(f"generated {args.trials} trials in {time.perf_counter() - t0:.1f} s under {exp}")
        t0 = time.perf_counter()
        from chronosweep.cli import main as cli

        rc = cli(["report", str(exp), "--out", str(root / "report"), "--format", "csv", "json"])
        seconds = time.perf_counter() - t0
        print(f"chronosweep report: {args.trials} trials x 100 predictions in {seconds:.2f} s (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
