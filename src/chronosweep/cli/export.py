"""`chronosweep export RUN_DIR --out DIR`: the edited model of a finished run as a plain Hugging Face directory.

The directory holds safetensors weights with the edit in them, config.json, generation_config.json and the
tokenizer, and loads with ``AutoModelForCausalLM.from_pretrained(DIR)`` without chronosweep. LoRA adapters are
merged into the weights (peft's merge_and_unload); full/freeze tuning, ROME and MEMIT write the tensors they
changed (``trained_params.safetensors``) over the base model. ``--adapter-only`` writes just the peft adapter of
an adapter method (LoRA, P-tuning), to load over the base model with ``PeftModel.from_pretrained``. P-tuning's
edit is virtual tokens, not weights, so it exports only that way.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from chronosweep.core.errors import UserError
from chronosweep.editing.registry import algorithm_of

# Algorithms whose edit is a peft adapter (variants such as lora-local count as their algorithm).
ADAPTER_ALGORITHMS = ("lora", "ptuning")
EXPORT_RECORD = "chronosweep_export.json"
# Files that travel with a model's weights (licence terms, notices) and are copied from the base model's directory.
_KEEP = ("LICENSE", "LICENCE", "NOTICE", "GEMMA_TERMS", "USE_POLICY")


class ExportError(UserError):
    pass


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run's edited model as a plain Hugging Face model directory",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_dir", type=Path, help="a finished run dir (chronosweep edit --out, or a sweep's trial_*/run)")
    p.add_argument("--out", required=True, type=Path, help="directory to write (must be empty or absent)")
    p.add_argument("--adapter-only", action="store_true", help="write only the peft adapter (LoRA, P-tuning)")
    p.add_argument("--dtype", choices=["run", "fp32", "bf16", "fp16"], default="run",
                   help="weights' precision (default: the precision the run edited in)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_export)


def read_run(run_dir: Path):
    """(TrialConfig, metrics) of a finished run, or an ExportError saying why it cannot be exported."""
    from chronosweep.core.typed import ConfigError
    from chronosweep.trial.config import config_from_dict, read_yaml

    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run dir")
    metrics_path, config_path = run_dir / "metrics.json", run_dir / "config.yaml"
    if not metrics_path.exists():
        why = "it failed (see error.txt)" if (run_dir / "error.txt").exists() else "it has no metrics.json"
        raise ExportError(f"{run_dir}: not a finished run ({why}); only finished runs can be exported")
    if not config_path.exists():
        raise ExportError(f"{run_dir}: config.yaml is missing")
    try:
        cfg = config_from_dict(read_yaml(config_path), str(config_path))
    except ConfigError as err:
        raise ExportError(f"{config_path}: this version of chronosweep cannot read it:\n{err}") from err
    metrics = json.loads(metrics_path.read_text())
    if not cfg.save_artifacts:
        raise ExportError(f"{run_dir}: the trial ran with save_artifacts: false, so it kept no edited weights and cannot "
                          f"be exported; run it again with save_artifacts: true "
                          f"(chronosweep edit {config_path} --set save_artifacts=true --out DIR)")
    return cfg, metrics


def artifact(run_dir: Path, method: str) -> Path:
    path = run_dir / ("adapter" if algorithm_of(method) in ADAPTER_ALGORITHMS else "trained_params.safetensors")
    if not path.exists():
        raise ExportError(f"{run_dir}: {path.name} is missing; the {method} run saved no edited weights to export")
    return path


def run_precision(cfg, metrics: dict) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    # Auto is bf16 on CUDA where supported (every GPU the runs use), fp32 on the CPU.
    return "bf16" if metrics.get("device") == "cuda" else "fp32"


def export_run(run_dir: Path, out: Path, adapter_only: bool = False, dtype: str = "run", force: bool = False,
               progress=print) -> Path:
    """Write the run's edited model (or adapter) to out; returns out."""
    run_dir, out = Path(run_dir), Path(out)
    cfg, metrics = read_run(run_dir)
    source = artifact(run_dir, cfg.method)
    algorithm = algorithm_of(cfg.method)
    if adapter_only and algorithm not in ADAPTER_ALGORITHMS:
        raise ExportError(f"--adapter-only: {cfg.method} has no adapter, its edit is in the weights "
                          f"({source.name}); export without --adapter-only")
    if algorithm == "ptuning" and not adapter_only:
        raise ExportError("P-tuning's edit is a set of virtual tokens put in front of every input, not a change of "
                          "weights: export it with --adapter-only (a peft prompt-encoder adapter for "
                          "PeftModel.from_pretrained over the base model)")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ExportError(f"--out {out}: not empty; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    if adapter_only:
        shutil.copytree(source, out, dirs_exist_ok=True)
        _record(out, run_dir, cfg, metrics, "adapter", None)
        progress(f"adapter of {cfg.method} written to {out} (base model: {cfg.model})")
        return out

    import torch

    from chronosweep.core.models import load, resolve

    precision = run_precision(cfg, metrics) if dtype == "run" else dtype
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    info = resolve(cfg.model, cfg.revision, cfg.trust_remote_code, fetch=True)
    progress(f"loading {cfg.model} ({precision}) ...")
    model, _ = load(info, torch.device("cpu"), torch_dtype, cfg.revision, cfg.trust_remote_code)
    if algorithm == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source)).merge_and_unload()
    else:
        _load_trained(model, source)
    from transformers import AutoTokenizer

    # The base model's tokenizer as it is (load() sets left padding for chronosweep's batched generation).
    tokenizer = AutoTokenizer.from_pretrained(info.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    base = Path(info.path)
    if base.is_dir():
        for item in base.iterdir():
            if item.is_file() and item.name.upper().startswith(_KEEP):
                shutil.copy2(item, out / item.name)
    _record(out, run_dir, cfg, metrics, "model", precision)
    progress(f"{cfg.method} edit of {cfg.model} written to {out} ({precision}); load it with "
             f"AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return out


def _load_trained(model, path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = [name for name in tensors if name not in params]
    if unknown:
        raise ExportError(f"{path}: tensors {', '.join(unknown[:5])} are not parameters of the base model; "
                          "was the run made on another model?")
    for name, value in tensors.items():
        if params[name].shape != value.shape:
            raise ExportError(f"{path}: {name} has shape {tuple(value.shape)}, the base model's {tuple(params[name].shape)}")
    import torch

    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].dtype))


def _record(out: Path, run_dir: Path, cfg, metrics: dict, kind: str, precision: str | None) -> None:
    from chronosweep import __version__

    keep = ("method", "model", "dataset", "n_edits", "reliability", "generalization", "locality", "edited_layers",
            "edited_modules")
    record = {"kind": kind, "run_dir": str(run_dir.resolve()), "precision": precision, "chronosweep": __version__,
              "run": {k: metrics.get(k) for k in keep}, "config": cfg.to_dict()}
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2, default=str))


def cmd_export(args: argparse.Namespace) -> int:
    export_run(args.run_dir, args.out, adapter_only=args.adapter_only, dtype=args.dtype, force=args.force)
    return 0
