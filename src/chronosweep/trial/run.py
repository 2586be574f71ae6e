"""One trial, the only code path: config -> model + edit requests -> method -> edited model -> evaluation -> run dir.

`chronosweep edit` calls run_trial directly; every sweep trial calls it inside a Ray worker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import resource
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import yaml

from chronosweep.core.errors import UserError
from chronosweep.core.typed import ConfigError
from chronosweep.trial import host
from chronosweep.trial.config import TrialConfig
from chronosweep.trial.health import assess_run


class RunDirExists(UserError):
    pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def refuse_finished(run_dir: Path, force: bool) -> None:
    """Fail when run_dir holds a finished run and force is off; creates nothing (a refused run leaves no folder)."""
    if (Path(run_dir) / "metrics.json").exists() and not force:
        raise RunDirExists(f"{run_dir} already holds a finished run (metrics.json); pass --force to overwrite it")


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    refuse_finished(run_dir, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    # metrics.json.tmp: what a run killed while writing its metrics left behind.
    for name in ("metrics.json", "metrics.json.tmp", "error.txt", "predictions.jsonl", "history.jsonl",
                 "training_prompts.json", "stream.jsonl"):
        (run_dir / name).unlink(missing_ok=True)


def plan(cfg: TrialConfig):
    """Everything cheap that can be wrong, checked before any model is loaded: returns (method spec, info, edit set).

    Applies the model's preset to cfg.options (cfg.applied_preset records it) and checks the edit order the
    protocol needs.
    """
    from chronosweep.core.models import resolve
    from chronosweep.data import load_edits
    from chronosweep.editing.registry import get_spec
    from chronosweep.trial.presets import apply_preset
    from chronosweep.trial.protocols import edit_order

    method = get_spec(cfg.method)
    info = resolve(cfg.model, cfg.revision, cfg.trust_remote_code, fetch=False)
    problems: list[str] = []
    cfg.applied_preset = apply_preset(cfg, info, problems)
    if not problems:
        cfg.options.check_model(cfg.method, info, problems)
        cfg.options.check_environment(cfg.method, problems)
    try:
        edits = load_edits(cfg.data)
        if cfg.protocol == "sequential":
            edit_order(edits.requests, sequential_order(cfg),
                       "stream.order" if cfg.stream.wave is not None else "edit_order")
    except UserError as err:
        if not problems:
            raise
        # Report the data problem together with the config's, so one fix-and-retry round is enough.
        raise ConfigError([*problems, *str(err).splitlines()]) from err
    if problems:
        raise ConfigError(problems)
    return method, info, edits


def sequential_order(cfg: TrialConfig) -> str:
    """The edit order of the sequential protocol: a stream's stream.order, else edit_order."""
    if cfg.stream.wave is not None:
        return "time" if cfg.stream.order == "time_start" else "file"
    return cfg.edit_order


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _device_and_dtype(cfg: TrialConfig):
    import torch

    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise UserError("device: cuda was asked for but torch sees no CUDA device")
    from chronosweep.editing.distributed import local_device

    # Under a multi-GPU launch each rank owns cuda:LOCAL_RANK (DeepSpeed moves the model there).
    device = local_device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda) else "cpu")
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return device, dtype


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _versions() -> dict:
    import peft
    import torch
    import transformers

    from chronosweep import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "chronosweep": __version__}


def held_out_prompts(probes) -> tuple[str, ...]:
    """Every evaluation prompt but the edit prompts (rewrite probes), which are what an edit trains on."""
    seen: dict[str, None] = {}
    for p in probes:
        if p.kind != "rewrite":
            for q in (p.prompt, *p.questions):
                seen.setdefault(q, None)
    return tuple(seen)


def held_out_subjects(edits) -> tuple[str, ...]:
    """Subjects of the locality probes (where their source names them) and of the edits with neighbourhood probes:
    a retain text naming one may restate a probe's fact in other words."""
    seen: dict[str, None] = {}
    for loc in edits.locality:
        if loc.subject:
            seen.setdefault(loc.subject, None)
    for r in edits.requests:
        if r.neighborhood and r.subject.strip():
            seen.setdefault(r.subject, None)
        for n in r.neighborhood:
            if n.subject:
                seen.setdefault(n.subject, None)
    return tuple(seen)


def training_overlaps(prompts: dict, held_out: tuple[str, ...],
                      subjects: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(trained text, evaluation prompt or "subject: <name>") pairs that overlap; the bare edit prompts are the edits
    themselves, and the subject retain prompts are about the edited subjects by design."""
    from chronosweep.editing.retain import HeldOut, HeldSubjects, RetainPrompt, overlap

    guard, names = HeldOut(held_out), HeldSubjects(subjects)
    texts = [e["prompt"] for e in prompts.get("examples", []) if e.get("source") != "prompt"]
    out = [(t, hit) for t in texts if (hit := guard.hit(t)) is not None]
    for r in prompts.get("retain", []):
        hit = overlap(RetainPrompt(r["text"], r.get("source", "file"), r.get("positions", "all")), guard, names)
        if hit is not None:
            out.append((r["text"], hit))
    return out


def run_trial(cfg: TrialConfig, run_dir: Path | str, on_epoch: Callable[[int, dict], None] | None = None,
              force: bool = False, progress: Callable[[str], None] = print) -> dict:
    """Run one edit trial and write config.yaml, predictions.jsonl, history.jsonl, metrics.json into run_dir."""
    run_dir = Path(run_dir).resolve()
    started, t_start = _now(), time.perf_counter()
    method, info, edits = plan(cfg)
    prepare_run_dir(run_dir, force)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    try:
        metrics = _execute(cfg, run_dir, method, info, edits, on_epoch, progress)
    except BaseException as err:
        (run_dir / "error.txt").write_text(f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        raise
    # A finished edit can still have broken the model: say so in its status (thresholds in trial/health.py).
    metrics.update(assess_run(metrics, run_dir))
    metrics.update(n_file_edits=edits.total, n_duplicate_edits=edits.duplicates,
                   n_dropped_duplicates=edits.dropped_duplicates)
    metrics.update(started_at=started, finished_at=_now(), total_seconds=time.perf_counter() - t_start)
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(run_dir / "metrics.json")
    return metrics


def _execute(cfg, run_dir, method, info, edits, on_epoch, progress) -> dict:
    import torch

    from chronosweep.core import history
    from chronosweep.core.models import cache_dir, load, resolve
    from chronosweep.data.hygiene import describe
    from chronosweep.editing.base import EditContext
    from chronosweep.evaluation.evaluate import cache_key, measure, measure_once
    from chronosweep.evaluation.metrics import SCORING_VERSION
    from chronosweep.evaluation.probes import build_probes
    from chronosweep.trial import cost, protocols

    activity = cost.NodeActivity.begin(cache_dir(), run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    device, dtype = _device_and_dtype(cfg)
    if info.fingerprint.endswith("-unfetched"):
        info = resolve(cfg.model, cfg.revision, cfg.trust_remote_code, fetch=True)
    preset = cfg.applied_preset
    progress(f"{describe(edits)}, {len(edits.locality)} locality probes; model {info.name} on {device} ({dtype}); "
             f"{cfg.method}, protocol {cfg.protocol}, preset {preset['name'] if preset else 'none'}")
    t0 = time.perf_counter()
    model, tokenizer = load(info, device, dtype, cfg.revision, cfg.trust_remote_code)
    load_seconds = time.perf_counter() - t0
    total_params = sum(p.numel() for p in model.parameters())
    probes = build_probes(edits, cfg.eval)

    # The unedited model's answers depend only on model, probes and decoding: sweeps reuse them.
    t0 = time.perf_counter()
    key = cache_key(info.fingerprint, probes, cfg.eval, str(dtype), device.type)
    pre, pre_cached = measure_once(cache_dir() / "pre_eval" / f"{key}.json",
                                   lambda: measure(model, tokenizer, probes, cfg.eval, device, desc="pre-edit"))
    pre_eval_seconds = time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    held_out, subjects = held_out_prompts(probes), held_out_subjects(edits)
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=device, dtype=dtype,
                      run_dir=run_dir if cfg.save_artifacts else None, cache_dir=cache_dir(), on_epoch=on_epoch,
                      held_out=held_out, held_out_subjects=subjects)
    setting = protocols.Setting(
        model=model, tokenizer=tokenizer, requests=edits.requests, probes=probes, pre=pre,
        implementation=method.load(), options=cfg.options, ctx=ctx,
        measure=lambda m, ps, desc: measure(m, tokenizer, ps, cfg.eval, device, desc=desc),
        reseed=lambda: _seed_everything(cfg.seed), progress=progress,
        on_wave=lambda record: _append(run_dir / "stream.jsonl", record))
    extra_args = {"eval_every": cfg.eval_every, "order": sequential_order(cfg),
                  "wave": cfg.stream.wave} if cfg.protocol == "sequential" else {}
    result = protocols.run(cfg.protocol, setting, **extra_args)
    outcome = result.outcome
    with open(run_dir / "history.jsonl", "w") as fh:
        for record in result.history:
            fh.write(json.dumps(record) + "\n")
    # stream.jsonl was written wave by wave (a long stream can be watched, and a stopped one keeps its waves).
    result.extra.pop("stream", None)
    # Under single the model is back to the unedited one: there is no edited model to save.
    if cfg.save_artifacts and outcome.save is not None and result.edited_model_kept:
        outcome.save(run_dir)
    training = dict(result.training)
    if result.training_prompts:
        # Checked here, by the owner of the probes, not only inside the method.
        overlaps = training_overlaps(result.training_prompts, held_out, subjects)
        if overlaps:
            raise RuntimeError(f"{cfg.method} trained on evaluation probes: {overlaps[:3]}")
        training.update(disjoint_from_eval=True, eval_prompts_checked=len(held_out),
                        eval_subjects_checked=len(subjects))
        (run_dir / "training_prompts.json").write_text(json.dumps(result.training_prompts, indent=1,
                                                                  ensure_ascii=False))

    rows = result.rows
    metrics, pre_metrics = protocols.metrics_of(rows, "post"), protocols.metrics_of(rows, "pre")
    with open(run_dir / "predictions.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    n = len(edits.requests)
    kinds = [r.kind for r in edits.requests]
    mh_cases = {m.case_id for r in edits.requests for m in r.multihop_cases}
    n_gpus = int(os.environ.get("WORLD_SIZE", "1")) if device.type == "cuda" else 0
    edit_seconds, eval_seconds = result.edit_seconds, result.eval_seconds
    return {
        "status": "ok",
        "scoring_version": SCORING_VERSION,
        "method": cfg.method,
        "algorithm": method.algorithm,
        "variant": method.variant,
        "protocol": cfg.protocol,
        "preset": preset,
        "model": cfg.model,
        "dataset": edits.name,
        "n_edits": n,
        "n_modification": kinds.count("modification"),
        "n_injection": kinds.count("injection"),
        **metrics,
        "n_multihop_cases": len(mh_cases),
        "n_hops": sum(1 for p in probes if p.kind == "hop"),
        "n_locality": sum(1 for p in probes if p.kind == "locality"),
        "n_neighborhood": sum(1 for p in probes if p.kind == "neighborhood"),
        "n_history": sum(1 for p in probes if p.kind == "history"),
        "n_temporal": sum(1 for p in probes if p.kind == "temporal"),
        "history_coverage": history.plan(edits.requests, cfg.eval.history_holders).coverage(),
        "pre": pre_metrics,
        **result.extra,
        "edit_seconds": edit_seconds,
        "edit_seconds_per_edit": edit_seconds / n if n else None,
        "eval_seconds": eval_seconds,
        "eval_seconds_per_edit": eval_seconds / n if n else None,
        "pre_eval_seconds": pre_eval_seconds,
        "pre_eval_cached": pre_cached,
        "load_seconds": load_seconds,
        "trainable_params": int(outcome.trainable_params),
        "total_params": int(total_params),
        "trainable_fraction": outcome.trainable_params / total_params if total_params else None,
        "edited_layers": list(result.edited_layers),
        "edited_modules": list(result.edited_modules),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "device": device.type,
        "n_gpus": n_gpus,
        **cost.cost_fields(result.edit_cpu_seconds, result.eval_cpu_seconds, edit_seconds, n, n_gpus,
                            activity.finish()),
        "threads": torch.get_num_threads(),
        "epochs_run": training.get("epochs_run"),
        "training": training,
        "history": result.history,
        "config": cfg.to_dict(),
        "versions": _versions(),
        "host": host.host(device.type),
    }
