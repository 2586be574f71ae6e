"""`chronosweep sweep SWEEP.yaml --name NAME`: run a Ray Tune + Optuna sweep of edit trials."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run a Ray Tune sweep of edit trials (Optuna or grid)",
        description="Run every trial of a sweep file with Ray Tune: each trial is what `chronosweep edit` runs, "
                    "its run dir lands at <storage>/<name>/<trial>/run/. See docs/sweeps.md.")
    p.add_argument("sweep", help="sweep file (YAML: base, space, search, objective, resources ...)")
    p.add_argument("--name", help="experiment name: the folder under --storage; never reused unless --resume "
                                   "(required unless --check)")
    p.add_argument("--storage", default="runs/sweeps",
                   help="experiments folder, or a URI Ray supports (s3://, gs://, a shared filesystem) on a cluster "
                        "(default: runs/sweeps)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto inside `ray job submit`, or HOST:PORT); default: start an "
                        "embedded local Ray")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted sweep of the same name: completed trials are kept, the rest run")
    p.add_argument("--resume-if-exists", action="store_true",
                   help="resume the sweep if it exists, else start it (a re-run finishes it or only re-reports)")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run failed trials again")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep-file key, dotted (num_samples=4, base.data.limit=5); repeatable")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    p.add_argument("--check", action="store_true", help="validate the sweep file and print the plan; run nothing")
    p.add_argument("--dry-run", action="store_true",
                   help="size every trial (peak memory, fit, time, GPU-hours, cost) from the model's shape; no Ray, "
                        "no weights, no network")
    p.add_argument("--gpu", default=None, help="with --dry-run: the GPU to size trials for (L4, A10G, A100-40GB, "
                                               "A100-80GB, H100-80GB, H200; default A100-80GB, or the CPU when "
                                               "resources.gpus is 0)")
    p.add_argument("--price-per-gpu-hour", type=float, default=None, help="with --dry-run: price the GPU-hours")
    p.add_argument("--runs", action="append", type=Path, default=[], metavar="DIR",
                   help="with --dry-run: earlier run dirs (or folders of them) whose measured seconds per edit time "
                        "the trials (default: --storage); repeatable")
    p.add_argument("--mfu", type=float, default=None,
                   help="with --dry-run: share of the device's peak FLOP/s assumed without earlier runs (default 0.3)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)  # before the runner's imports (Ray, Polars): it needs neither
    from chronosweep.core.errors import UserError
    from chronosweep.sweep.runner import SweepOptions, check_data, pin_paths, run_sweep
    from chronosweep.sweep.spec import load_sweep

    if not args.name and not args.check:
        raise UserError("--name is required: it names the experiment folder under --storage")
    if args.num_cpus is not None and args.address:
        raise UserError("--num-cpus sizes the embedded local Ray; a cluster joined with --address has its own")
    if args.retry_failed and not (args.resume or args.resume_if_exists):
        raise UserError("--retry-failed only applies with --resume or --resume-if-exists")
    spec = load_sweep(args.sweep, args.overrides)
    if args.check:
        check_data(pin_paths(spec.base_raw))
        keys = ", ".join(spec.space.keys()) or "(none)"
        print(f"sweep ok: {spec.num_trials} trial(s), search {spec.file.search}, objective "
              f"{spec.objective.describe()}, parameters {keys}")
        return 0
    opts = SweepOptions(name=args.name, storage=args.storage, address=args.address, resume=args.resume,
                        allow_resume=args.resume_if_exists,
                        retry_failed=args.retry_failed, num_cpus=args.num_cpus)
    summary = run_sweep(spec, opts)
    return 0 if summary.best_trial is not None else 1


def _dry_run(args: argparse.Namespace) -> int:
    from chronosweep.core.errors import UserError
    from chronosweep.sweep.dryrun import dry_run, load_for_dry_run, render

    if args.mfu is not None and not 0 < args.mfu <= 1:
        raise UserError(f"--mfu: a share of peak in (0, 1], got {args.mfu}")
    if args.price_per_gpu_hour is not None and args.price_per_gpu_hour < 0:
        raise UserError(f"--price-per-gpu-hour: must be >= 0, got {args.price_per_gpu_hour}")
    spec = load_for_dry_run(args.sweep, args.overrides)
    roots = args.runs or [Path(args.storage)]
    print(render(dry_run(spec, gpu=args.gpu, price=args.price_per_gpu_hour, run_roots=roots, mfu=args.mfu)))
    return 0
