"""`chronosweep sweep SWEEP.yaml --name NAME`: run a Ray Tune + Optuna sweep of edit trials."""

from __future__ import annotations

import argparse


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
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
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
