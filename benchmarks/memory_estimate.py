"""The dry-run's memory estimate against measured peaks: every method on the default model.

    .venv/bin/python benchmarks/memory_estimate.py --out runs/bench-memory            # measure, then compare
    .venv/bin/python benchmarks/memory_estimate.py --out runs/bench-memory --compare  # compare stored measurements

CPU: each method runs `run_trial` in a fresh process (methods.yaml's settings, 1 torch thread). Right before the
edit (after the model loaded and the unedited model was evaluated, where the H200 runs reset their CUDA peak) the
process (its weights touched after loading, so all are resident) records its RSS and resets the kernel's
high-water mark (`/proc/self/clear_refs`, 5); at the end it reads
VmHWM. "Above the loaded model" = VmHWM - RSS at that point, compared with the estimate less its weights.
H200: the peak GPU memory of each trial in docs/benchmarks.md ("The GPU path"), compared with the whole estimate
of the same trial (bf16, the engine and ZeRO stage of that table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["lora", "freeze", "full", "ptuning", "memit", "rome"]
# ROME's memory does not grow with the number of edits (one edit at a time); fewer edits keep the run short.
LIMITS = {"rome": 4}
# Neither epochs nor optimisation steps change a peak once the optimizer holds its state (from the second step on):
# fewer keep the runs short on a shared machine. Batches, lengths and layers are methods.yaml's.
SHORT = {"lora": ["lora.epochs=2"], "freeze": ["freeze.epochs=2"], "full": ["full.epochs=2"],
         "ptuning": ["ptuning.epochs=2"], "rome": ["rome.v_num_grad_steps=5"], "memit": ["memit.v_num_grad_steps=5"]}
# glibc keeps freed blocks below its (dynamically raised) mmap threshold in the heap, so RSS would report the heap's
# high-water mark rather than what tensors held at once; a fixed threshold returns every large block when freed.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
# Peak GPU MB per trial as measured on the H200 (docs/benchmarks.md, "The GPU path"), with the settings of each row.
H200 = [
    ("lora", ["precision=fp32", "engine=torch"], 822),
    ("lora", ["precision=bf16", "engine=torch"], 478),
    ("lora", ["precision=bf16", "engine=deepspeed"], 461),
    ("lora", ["precision=bf16", "engine=deepspeed", "deepspeed.zero_stage=2", "lora.batch_size=32",
              "data.limit=null"], 1371),
    ("ptuning", ["precision=bf16", "engine=deepspeed"], 652),
    ("full", ["precision=bf16", "engine=deepspeed", "deepspeed.zero_stage=2"], 3073),
    ("freeze", ["precision=bf16", "engine=deepspeed"], 655),
    ("rome", ["precision=bf16"], 481),
    ("memit", ["precision=bf16"], 917),
]


# Edit and evaluation seconds of the same trials as measured (docs/benchmarks.md): the six-method CPU table
# (2 threads, idle machine) and the H200 table, to compare with the dry run's estimate without earlier runs.
TIMES = [
    ("cpu", "lora", [], 29.4, 11.0), ("cpu", "ptuning", [], 73.1, 17.5), ("cpu", "full", [], 22.1, 11.0),
    ("cpu", "freeze", [], 12.9, 11.0), ("cpu", "rome", ["data.limit=20"], 275.5, 11.0),
    ("cpu", "memit", [], 45.9, 11.0),
    ("h200", "lora", ["precision=fp32", "engine=torch"], 5.5, 2.3),
    ("h200", "lora", ["precision=bf16", "engine=deepspeed"], 9.0, 3.2),
    ("h200", "ptuning", ["precision=bf16", "engine=deepspeed"], 13.9, 3.7),
    ("h200", "full", ["precision=bf16", "engine=deepspeed", "deepspeed.zero_stage=2"], 7.3, 3.0),
    ("h200", "freeze", ["precision=bf16", "engine=deepspeed"], 7.6, 4.0),
    ("h200", "rome", ["precision=bf16"], 74.4, 2.7), ("h200", "memit", ["precision=bf16"], 8.5, 3.0),
]


def time_rows() -> list[dict]:
    from chronosweep.core.shapes import find_shape
    from chronosweep.sweep.dryrun import gpu_device, trial_lengths
    from chronosweep.sweep.estimate import Device, estimate_trial
    from chronosweep.trial.config import config_from_dict

    rows = []
    for where, method, extra, edit_s, eval_s in TIMES:
        cfg = config_from_dict(base_raw(method, ["data.limit=20", *extra]))
        shape = find_shape(cfg.model)
        device = gpu_device("H200", 16) if where == "h200" else Device(kind="cpu", cpus=2)
        est = estimate_trial(cfg, shape, trial_lengths(cfg, shape), device, stats_cached=True)
        rows.append({"where": where, "method": method, "settings": extra, "measured_s": edit_s + eval_s,
                     "estimate_s": est.seconds["edit"] + est.seconds["eval"]})
    return rows


def base_raw(method: str, extra: list[str] | None = None) -> dict:
    from chronosweep.trial.config import apply_overrides

    sweep = yaml.safe_load((ROOT / "configs/sweeps/methods.yaml").read_text())
    raw = {**sweep["base"], "method": method, "threads": 1}
    raw["data"] = {**raw["data"], "limit": LIMITS.get(method, raw["data"]["limit"])}
    return apply_overrides(raw, extra or [], [])


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def measure_one(method: str, out: Path) -> dict:
    """Runs inside the child process."""
    import chronosweep.core.models as models
    import chronosweep.editing.base as edit_base
    from chronosweep.trial.config import config_from_dict
    from chronosweep.trial.run import run_trial

    seen: dict = {}
    original, original_load = edit_base.EditContext, models.load

    def load(*args, **kwargs):
        # The weights are mmapped from safetensors: touch them so the RSS at the reset includes all of them.
        model, tokenizer = original_load(*args, **kwargs)
        for p in model.parameters():
            float(p.detach().float().sum())
        return model, tokenizer

    def context(*args, **kwargs):
        seen["rss_at_edit_mb"] = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        return original(*args, **kwargs)

    import chronosweep.evaluation.evaluate as evaluate

    original_measure = evaluate.measure

    def measure(*args, **kwargs):
        # The post-edit evaluation: note the edit's own peak, then the evaluation's.
        if "rss_at_edit_mb" in seen and kwargs.get("desc") == "post-edit":
            seen["edit_peak_mb"] = _status("VmHWM")
            seen["rss_at_eval_mb"] = _status("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
        return original_measure(*args, **kwargs)

    edit_base.EditContext, models.load, evaluate.measure = context, load, measure
    # Import the method's libraries (peft ...) before the reset: code is not what the estimate sizes.
    from chronosweep.editing.registry import get_spec

    get_spec(method).load()
    metrics = run_trial(config_from_dict(base_raw(method, SHORT[method])), out / method, force=True,
                        progress=lambda s: None)
    eval_peak = _status("VmHWM")
    peak = max(seen["edit_peak_mb"], eval_peak)
    return {"method": method, "n_edits": metrics["n_edits"], "rss_at_edit_mb": seen["rss_at_edit_mb"],
            "peak_since_mb": peak, "above_loaded_mb": peak - seen["rss_at_edit_mb"],
            "edit_above_loaded_mb": seen["edit_peak_mb"] - seen["rss_at_edit_mb"],
            "eval_above_loaded_mb": eval_peak - seen["rss_at_edit_mb"],
            "peak_rss_mb": metrics["peak_rss_mb"], "edit_seconds": metrics["edit_seconds"],
            "stats_cached": all(h.get("stats_cached", True) is not False for h in metrics["history"])}


def estimate(raw: dict, device: str, stats_cached: bool = True) -> dict:
    from chronosweep.core.shapes import find_shape
    from chronosweep.sweep.dryrun import gpu_device, trial_lengths
    from chronosweep.sweep.estimate import Device, estimate_trial
    from chronosweep.trial.config import config_from_dict

    cfg = config_from_dict(raw)
    shape = find_shape(cfg.model)
    target = gpu_device("H200", 16) if device == "cuda" else Device(kind="cpu", cpus=1)
    est = estimate_trial(cfg, shape, trial_lengths(cfg, shape), target, stats_cached=stats_cached)
    m = est.memory
    # A CUDA context is not in torch.cuda.max_memory_allocated (what the H200 table reports).
    allocated = m.total - m.overhead
    return {"total_mb": allocated / 2**20, "above_weights_mb": (allocated - m.weights) / 2**20, "phase": m.peak_phase,
            "parts_mb": {k: round(v / 2**20, 1) for k, v in m.parts().items()}}


def compare(measured: list[dict]) -> dict:
    rows = []
    for m in measured:
        est = estimate(base_raw(m["method"], SHORT[m["method"]]), "cpu", m.get("stats_cached", True))
        rows.append({"where": "cpu", "method": m["method"], "measured_mb": m["above_loaded_mb"],
                     "estimate_mb": est["above_weights_mb"], "phase": est["phase"], "parts_mb": est["parts_mb"]})
    for method, extra, peak in H200:
        # The H200 ROME/MEMIT runs read cached statistics (docs/benchmarks.md).
        est = estimate(base_raw(method, ["data.limit=20", *extra]), "cuda", stats_cached=True)
        rows.append({"where": "h200", "method": method, "settings": extra, "measured_mb": peak,
                     "estimate_mb": est["total_mb"], "phase": est["phase"], "parts_mb": est["parts_mb"]})
    for r in rows:
        r["error"] = r["estimate_mb"] / r["measured_mb"] - 1
        r["within_15pct"] = abs(r["error"]) <= 0.15
    return {"rows": rows, "all_within_15pct": all(r["within_15pct"] for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-memory"))
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--compare", action="store_true", help="only compare the measurements already in --out")
    ap.add_argument("--verbose", action="store_true", help="print each estimate's parts")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, args.out)))
        return 0
    store = args.out / "measured.json"
    measured = json.loads(store.read_text()) if store.exists() else []
    if not args.compare:
        args.out.mkdir(parents=True, exist_ok=True)
        for method in args.methods:
            run = subprocess.run([sys.executable, __file__, "--one", method, "--out", str(args.out)],
                                 capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode != 0 or not lines:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            result = json.loads(lines[-1][len("RESULT "):])
            measured = [m for m in measured if m["method"] != method] + [result]
            store.write_text(json.dumps(measured, indent=2))
            print(json.dumps(result))
    report = compare(measured)
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2))
    for r in report["rows"]:
        print(f"{r['where']:5} {r['method']:8} {' '.join(r.get('settings', [])):70} measured {r['measured_mb']:8.0f} MB"
              f"  estimate {r['estimate_mb']:8.0f} MB  {100 * r['error']:+6.1f}%  ({r['phase']})")
        if args.verbose:
            print("      ", r["parts_mb"])
    print("all within 15%:", report["all_within_15pct"])
    times = time_rows()
    report["time_rows"] = times
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2))
    print("\nedit + evaluation seconds without earlier runs (FLOPs at 30%, weight reads, per-layer launch cost):")
    for r in times:
        print(f"{r['where']:5} {r['method']:8} {' '.join(r['settings']):55} measured {r['measured_s']:7.1f} s"
              f"  estimate {r['estimate_s']:7.1f} s  x{r['estimate_s'] / r['measured_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
