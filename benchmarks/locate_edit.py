"""Time ROME/MEMIT on the default model and check issue targets: statistics, per-edit time, reliability.

    .venv/bin/python benchmarks/locate_edit.py --edits 20 --out runs/bench-locate [--threads 2]
        [--cold-stats] [--methods rome memit] [--set key=value ...]

1. Statistics C for ROME's layer and MEMIT's window, through the shared cache (``--cold-stats`` computes
   them in a fresh cache folder to time a first run; the runs below still use the real cache).
2. One `chronosweep edit` trial per method on N DyKnow edits (run_trial, the same path as the CLI).
Prints a JSON summary and writes it to OUT/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {
    "stats_seconds_per_layer": ("<=", 180.0),
    "rome.reliability": (">=", 0.8),
    "rome.edit_seconds_per_edit": ("<=", 15.0),
    "memit.reliability": (">=", 0.8),
    "memit.edit_seconds": ("<=", 60.0),
}


def time_stats(cfg_rome, cfg_memit, cold: bool) -> dict:
    import torch

    from chronosweep.core.archs import arch_for
    from chronosweep.core.models import cache_dir, load, resolve
    from chronosweep.editing.stats import second_moments

    info = resolve(cfg_rome.model)
    model, tok = load(info, torch.device("cpu"), torch.float32)
    arch = arch_for(info.model_type)
    layers = sorted({cfg_rome.options.layer, *cfg_memit.options.layers})
    opts = cfg_rome.options
    folder = Path(tempfile.mkdtemp(prefix="stats-cold-")) if cold else cache_dir()
    t0 = time.perf_counter()
    one = second_moments(model, tok, arch, [cfg_rome.options.layer], corpus=opts.stats_corpus,
                         samples=opts.stats_samples, fingerprint=info.fingerprint, cache_dir=folder, device="cpu")
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    rest = second_moments(model, tok, arch, layers, corpus=opts.stats_corpus, samples=opts.stats_samples,
                          fingerprint=info.fingerprint, cache_dir=folder, device="cpu")
    t_rest = time.perf_counter() - t0
    if cold:  # the trials below read the real cache: fill it too, from the cold folder's files
        real = second_moments(model, tok, arch, layers, corpus=opts.stats_corpus, samples=opts.stats_samples,
                              fingerprint=info.fingerprint, cache_dir=cache_dir(), device="cpu")
        del real
    return {
        "stats_layers": layers,
        "stats_tokens": opts.stats_samples,
        "stats_first_layer_cached": one[cfg_rome.options.layer].cached,
        "stats_seconds_per_layer": t_one,
        "stats_seconds_other_layers": t_rest,
        "stats_other_layers_computed": [layer for layer, s in rest.items() if not s.cached],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-locate"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cold-stats", action="store_true")
    ap.add_argument("--methods", nargs="+", default=["rome", "memit"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import torch

    from chronosweep.trial.config import load_config
    from chronosweep.trial.run import run_trial

    if args.threads:
        torch.set_num_threads(args.threads)
    common = [f"data.limit={args.edits}", *([f"threads={args.threads}"] if args.threads else [])]
    # Every config validates (and ignores) the other method's section, so overrides go to both.
    cfgs = {m: load_config(None, [f"method={m}", *common, *args.overrides]) for m in ("rome", "memit")}
    summary: dict = {"n_edits": args.edits, "threads": torch.get_num_threads()}
    summary.update(time_stats(cfgs["rome"], cfgs["memit"], args.cold_stats))
    for method in args.methods:
        out = args.out / method
        m = run_trial(cfgs[method], out, force=True)
        summary[method] = {k: m.get(k) for k in ("reliability", "generalization", "locality", "rewrite_acc",
                                                 "rephrase_acc", "locality_acc", "edit_seconds",
                                                 "edit_seconds_per_edit", "trainable_params")}
        summary[method]["pre_reliability"] = m["pre"].get("reliability")
        summary[method]["steps_per_edit"] = _mean([h["steps"] for h in m["history"] if "steps" in h])
    flat = {**summary, **{f"{m}.{k}": v for m in args.methods for k, v in summary[m].items()}}
    summary["targets"] = {k: {"target": f"{op} {v}", "value": flat[k],
                              "met": (flat[k] >= v) if op == ">=" else (flat[k] <= v)}
                          for k, (op, v) in TARGETS.items() if flat.get(k) is not None}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


if __name__ == "__main__":
    sys.exit(main())
