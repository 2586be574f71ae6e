"""`chronosweep report`: read every trial of one or more sweeps (or folders of run dirs) and write a report."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    from chronosweep.report import DEFAULT_OBJECTIVE

    parser = sub.add_parser(
        "report", help="summarize sweeps: best configurations, intervals, layer windows, cost, Pareto front",
        description="Read every trial under the EXPERIMENT folders (Ray Tune experiments or any folders holding "
                    "chronosweep run dirs; running sweeps too) and write trials.parquet, summary.md, summary.html "
                    "and plots/ into --out.")
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT", type=Path,
                        help="a Ray Tune experiment folder, or any folder holding run dirs")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--by", nargs="+", action="extend", default=[], metavar="COLUMN",
                        help="group every table by these trial columns too (model, data.name, experiment...)")
    parser.add_argument("--format", dest="formats", nargs="+", action="extend", default=[],
                        choices=("md", "csv", "json"),
                        help="md (summary.md + summary.html) is always written; csv/json also write each table")
    parser.add_argument("--objective", default=None,
                        help="metrics whose mean ranks trials, joined by '+' (default: the sweeps' own objective "
                             f"when they share one, else {DEFAULT_OBJECTIVE})")
    parser.add_argument("--require", action="append", default=None, metavar="METRIC=BOUND",
                        help="a bound the best configuration must meet, in the metric's better direction "
                             "(reliability=0.95, edit_seconds_per_edit=0.9); repeatable; default: the sweeps' own "
                             "constraints when they share them")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.set_defaults(func=cmd_report)


def sweep_objective(experiments: list[Path]):
    """(the Objective the sweeps were run with, "") when they all share one, else (None, why not)."""
    import yaml

    from chronosweep.core.typed import build
    from chronosweep.evaluation.objective import Objective

    found: dict[str, Objective] = {}
    for folder in experiments:
        spec = folder / "sweep.yaml"
        if not spec.is_file():
            return None, f"{folder} is not a sweep (no sweep.yaml)"
        raw = (yaml.safe_load(spec.read_text()) or {}).get("objective") or {"metric": "reliability"}
        problems: list[str] = []
        objective = build(Objective, raw if isinstance(raw, dict) else {}, "objective", problems)
        if problems or not isinstance(raw, dict):
            return None, f"{spec}: objective {raw} is not one the report can compute ({'; '.join(problems)})"
        found[f"{objective.mode}:{sorted(objective.terms().items())}"] = objective
    if len(found) != 1:
        return None, f"the sweeps' objectives differ ({', '.join(o.describe() for o in found.values())})"
    return next(iter(found.values())), ""


def sweep_constraints(experiments: list[Path]) -> tuple[dict, str]:
    """(the constraints the sweeps' files name, "") when they all agree, else ({}, why not)."""
    import yaml

    from chronosweep.evaluation import constraints as bounds

    found = []
    for folder in experiments:
        spec = folder / "sweep.yaml"
        if not spec.is_file():
            return {}, f"{folder} is not a sweep (no sweep.yaml)"
        raw = (yaml.safe_load(spec.read_text()) or {}).get("constraints") or {}
        problems: list[str] = []
        bounds.check("constraints", raw, problems)
        if problems:
            return {}, f"{spec}: {'; '.join(problems)}"
        found.append(raw)
    if any(f != found[0] for f in found):
        return {}, "the sweeps' constraints differ"
    return found[0] if found else {}, ""


def _constraints(args: argparse.Namespace) -> dict:
    from chronosweep.core.errors import UserError
    from chronosweep.evaluation import constraints as bounds

    if args.require is None:
        found, why = sweep_constraints(list(args.experiments))
        if found:
            print(f"constraints: {bounds.describe(found)} (the sweep's own)")
        elif why and "differ" in why:
            print(f"constraints: none ({why}; --require sets them)")
        return found
    out = {}
    for text in args.require:
        try:
            name, bound = bounds.parse_requirement(text)
        except ValueError as err:
            raise UserError(str(err)) from None
        out[name] = bound
    return out


def cmd_report(args: argparse.Namespace) -> int:
    import polars as pl

    from chronosweep.report import DEFAULT_OBJECTIVE
    from chronosweep.report.build import STATUSES, ReportOptions, make_report
    from chronosweep.report.stats import Bootstrap

    objective = args.objective
    if objective is None:
        objective, why = sweep_objective(list(args.experiments))
        if objective is None:
            objective = DEFAULT_OBJECTIVE
            print(f"objective: mean of {objective} ({why}; --objective chooses)")
        else:
            print(f"objective: {objective.describe()} (the sweep's own)")
    options = ReportOptions(by=list(dict.fromkeys(args.by)), formats=args.formats or ["md"], objective=objective,
                            bootstrap=Bootstrap(args.bootstrap, args.seed, args.confidence), plots=not args.no_plots,
                            constraints=_constraints(args))
    result = make_report(args.experiments, args.out, options)
    counts = dict(result.trials.group_by("status").len().iter_rows())
    print(f"{result.trials.height} trials: " + ", ".join(f"{counts.get(s, 0)} {s}"
                                                          for s in STATUSES if s in counts or s != "degenerate"))
    for row in result.tables.methods.iter_rows(named=True):
        where = ", ".join(f"{c}={row[c]}" for c in result.tables.key)
        if str(row.get("basis") or "").startswith("no best"):
            print(f"  {where}: {row['basis']}")
            continue
        verdict = f"; {row['verdict']}" if row.get("verdict") else ""
        print(f"  best {where}: objective {row['objective']:.4f} ({row['trial']}{verdict})".replace("**", ""))
    for line in result.tables.no_best_window:
        print(f"  {line}")
    if options.constraints:
        meeting = result.constrained.filter(pl.col("meets")) if result.constrained.height else result.constrained
        print(f"  best meeting {len(options.constraints)} constraints: "
              + (f"{meeting['trial'][0]} ({meeting['method'][0]})" if meeting.height else "none"))
    for warning in result.tables.warnings:
        print(f"  warning: {warning}")
    print(f"report: {Path(args.out).resolve() / 'summary.md'}")
    return 0
