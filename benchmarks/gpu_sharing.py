"""Several trials sharing one GPU: each one's peak GPU memory next to the dry run's estimate, and the throughput
against one trial at a time. Runs on a GPU node (not on the CPU-only development machines).

    python benchmarks/gpu_sharing.py --out runs/gpu-sharing [--concurrent 3] [--methods lora freeze memit] [--ray]

Sequential: one `chronosweep edit` process per trial, one after another. Shared: the same trials at once, either as
concurrent `chronosweep edit` processes (default) or, with --ray, as a sweep whose trials hold 1/N of the GPU each
(`resources.gpus: 1/N`; needs Ray on the node). Every trial is methods.yaml's for its method (20 DyKnow edits,
`device: cuda`, bf16). Prints and writes OUT/gpu_sharing.json and a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def trial_file(method: str, out: Path) -> Path:
    base = yaml.safe_load((ROOT / "configs/sweeps/methods.yaml").read_text())["base"]
    cfg = {**base, "method": method, "device": "cuda", "precision": "bf16"}
    path = out / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def gpu_used_mb() -> float | None:
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, check=True).stdout
        return float(text.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


class Sampler(threading.Thread):
    """nvidia-smi's used memory (all processes, CUDA contexts included), sampled while trials run."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, False

    def run(self):
        while not self.stop:
            used = gpu_used_mb()
            if used is not None:
                self.peak = max(self.peak, used)
            time.sleep(0.5)


def edit(config: Path, run_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "chronosweep.cli", "edit", str(config), "--out", str(run_dir), "--force"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(run_dir.with_suffix(".log"), "w"))


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def estimate_mb(config: Path, gpu: str) -> float:
    from chronosweep.core.shapes import find_shape
    from chronosweep.sweep.dryrun import gpu_device, trial_lengths
    from chronosweep.sweep.estimate import estimate_trial
    from chronosweep.trial.config import load_config

    cfg = load_config(config)
    shape = find_shape(cfg.model)
    m = estimate_trial(cfg, shape, trial_lengths(cfg, shape), gpu_device(gpu, 4)).memory
    return (m.total - m.overhead) / 2**20  # peak_gpu_mb is torch's allocated peak: no CUDA context


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-sharing"))
    ap.add_argument("--methods", nargs="+", default=["lora", "freeze", "memit"])
    ap.add_argument("--concurrent", type=int, default=None, help="trials at once (default: one per method)")
    ap.add_argument("--gpu", default="H200", help="the GPU table row to estimate against")
    ap.add_argument("--ray", action="store_true", help="share through a Ray sweep with fractional gpus")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = [trial_file(m, out) for m in args.methods]
    n = args.concurrent or len(configs)

    # Warm-up: the model conversion, the pre-edit evaluation cache and ROME/MEMIT statistics are shared caches.
    edit(configs[0], out / "warmup").wait()

    t0 = time.perf_counter()
    for cfg in configs:
        edit(cfg, out / f"seq-{cfg.stem}").wait()
    sequential = time.perf_counter() - t0

    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    if args.ray:
        sweep = {"base": yaml.safe_load(configs[0].read_text()), "space": {"method": list(args.methods)},
                 "search": "grid", "resources": {"cpus": 2, "gpus": round(1 / n, 4)}, "max_concurrent_trials": n}
        path = out / "sharing-sweep.yaml"
        path.write_text(yaml.safe_dump(sweep, sort_keys=False))
        subprocess.run([sys.executable, "-m", "chronosweep.cli", "sweep", str(path), "--name", "sharing",
                        "--storage", str(out / "sweeps")], check=True)
        shared_dirs = {yaml.safe_load((p / "config.yaml").read_text())["method"]: p
                       for p in (out / "sweeps" / "sharing").glob("trial_*/run")}
    else:
        procs = [(cfg, edit(cfg, out / f"par-{cfg.stem}")) for cfg in configs]
        for _, proc in procs:
            proc.wait()
        shared_dirs = {cfg.stem: out / f"par-{cfg.stem}" for cfg in configs}
    shared = time.perf_counter() - t0
    sampler.stop = True

    rows = []
    for cfg in configs:
        seq, par = metrics(out / f"seq-{cfg.stem}"), metrics(shared_dirs[cfg.stem])
        rows.append({"method": cfg.stem, "estimate_mb": estimate_mb(cfg, args.gpu), "peak_gpu_mb_alone": seq["peak_gpu_mb"],
                     "peak_gpu_mb_shared": par["peak_gpu_mb"], "edit_seconds_alone": seq["edit_seconds"],
                     "edit_seconds_shared": par["edit_seconds"], "reliability_alone": seq["reliability"],
                     "reliability_shared": par["reliability"]})
    result = {"trials": len(configs), "concurrent": n, "via": "ray" if args.ray else "processes",
              "sequential_seconds": sequential, "shared_seconds": shared, "speedup": sequential / shared,
              "gpu_used_peak_mb_shared": sampler.peak, "rows": rows}
    (out / "gpu_sharing.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| method | estimate MB | peak GPU MB alone | peak GPU MB shared | edit s alone | edit s shared |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['estimate_mb']:,.0f} | {r['peak_gpu_mb_alone']:,.0f} | {r['peak_gpu_mb_shared']:,.0f} | "
              f"{r['edit_seconds_alone']:.1f} | {r['edit_seconds_shared']:.1f} |")
    print(f"\n{len(configs)} trials: {sequential:.0f} s one at a time, {shared:.0f} s sharing the GPU "
          f"({sequential / shared:.2f}x); nvidia-smi peak while shared {sampler.peak:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
