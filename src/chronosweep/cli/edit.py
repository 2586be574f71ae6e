"""`chronosweep edit` and `chronosweep model`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    edit = sub.add_parser("edit", help="run one edit trial and write its metrics",
                          description="Run one knowledge-edit trial (defaults: the demo trial, LoRA on the default model "
                                      "with 20 DyKnow edits) and write metrics.json and predictions.jsonl to --out.")
    edit.add_argument("config", nargs="?", help="trial config YAML (omit for the demo trial)")
    edit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, dotted (lora.rank=16, data.limit=50); repeatable")
    edit.add_argument("--out", required=True, type=Path, help="run directory to write")
    edit.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    edit.add_argument("--check", action="store_true", help="validate config and data, print the plan, run nothing")
    edit.set_defaults(func=cmd_edit)

    model = sub.add_parser("model", help="fetch or inspect models")
    msub = model.add_subparsers(dest="model_command", required=True)
    fetch = msub.add_parser("fetch", help="download and convert a built-in model into the cache (smollm2-135m, "
                                          "gemma3-270m: Gemma Terms of Use)")
    fetch.add_argument("name", nargs="?", default="smollm2-135m")
    fetch.set_defaults(func=cmd_model_fetch)
    info = msub.add_parser("info", help="print a model's shape as chronosweep sees it")
    info.add_argument("name", nargs="?", default="smollm2-135m")
    info.set_defaults(func=cmd_model_info)


def cmd_edit(args: argparse.Namespace) -> int:
    from chronosweep.trial.config import load_config
    from chronosweep.trial.run import plan, refuse_finished, run_trial

    cfg = load_config(args.config, args.overrides)
    if args.check:
        from chronosweep.data.hygiene import describe

        _, info, edits = plan(cfg)
        preset = cfg.applied_preset
        print(f"config ok: method {cfg.method} on {info.name} ({info.num_layers} layers), "
              f"{describe(edits)}, {len(edits.locality)} locality probes, "
              f"protocol {cfg.protocol}, preset {preset['name'] + ' (' + preset['file'] + ')' if preset else 'none'}")
        return 0
    refuse_finished(args.out, args.force)  # fail before loading anything if the run exists
    metrics = run_trial(cfg, args.out, force=args.force)
    from chronosweep.evaluation import metrics as registry

    keys = registry.names(shown="cli")
    width = max(len(k) for k in keys)
    preset = metrics.get("preset")
    print(f"\n{cfg.method} on {metrics['n_edits']} edits ({metrics['dataset']}), protocol {metrics['protocol']}, "
          f"preset {preset['name'] if preset else 'none'}:")
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            pre = metrics["pre"].get(k)
            shown = f"{v:.3f}" if isinstance(v, float) else str(v)
            print(f"  {k:<{width}}  {shown}" + (f"   (pre-edit {pre:.3f})" if isinstance(pre, float) else ""))
    out = Path(args.out).resolve()
    if metrics.get("status") == "degenerate":
        # The run finished and its numbers are real, but they measure a model the edit broke.
        print(f"\nstatus: DEGENERATE ({metrics.get('degenerate_reason')}); a sweep or report never ranks it")
    print(f"\nmetrics:     {out / 'metrics.json'}\npredictions: {out / 'predictions.jsonl'}")
    return 0


def cmd_model_fetch(args: argparse.Namespace) -> int:
    from chronosweep.core.errors import UserError
    from chronosweep.core.models import BUILTIN, fetch_builtin

    if args.name not in BUILTIN:
        raise UserError(f"{args.name!r} is not a built-in model (built-in: {', '.join(BUILTIN)}); "
                        "other models are Hugging Face ids or local paths, loaded as given")
    print(fetch_builtin(args.name))
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    import dataclasses

    from chronosweep.core.models import resolve

    print(json.dumps(dataclasses.asdict(resolve(args.name)), indent=2))
    return 0
