"""Measure a model on the probes (scoring compares the measurements: evaluation.scoring), and cache the unedited model's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.generation import greedy_continuations, teacher_forced_top_tokens
from chronosweep.evaluation.probes import Probe


@dataclass
class Measurement:
    """One model's answers: a continuation per generated prompt, top tokens per teacher-forced probe."""

    continuations: dict[str, str]
    top_tokens: list[list[int] | None]
    target_ids: list[list[int] | None]


def _prompts(probes: list[Probe]) -> list[str]:
    seen: dict[str, None] = {}
    for p in probes:
        for q in p.questions or (p.prompt,):
            seen.setdefault(q, None)
    return list(seen)


def measure(model, tokenizer, probes: list[Probe], cfg: EvalConfig, device, desc: str = "eval") -> Measurement:
    prompts = _prompts(probes)
    texts = greedy_continuations(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, device,
                                 desc=f"{desc}: generate")
    tf_index = [i for i, p in enumerate(probes) if p.tf_target is not None]
    tf = teacher_forced_top_tokens(model, tokenizer, [probes[i].prompt for i in tf_index],
                                   [probes[i].tf_target for i in tf_index], cfg.batch_size, device)
    top: list[list[int] | None] = [None] * len(probes)
    ids: list[list[int] | None] = [None] * len(probes)
    for i, (target_ids, predicted) in zip(tf_index, tf):
        ids[i], top[i] = target_ids, predicted
    return Measurement(dict(zip(prompts, texts)), top, ids)


def cache_key(fingerprint: str, probes: list[Probe], cfg: EvalConfig, dtype: str, device_type: str) -> str:
    from chronosweep.evaluation.metrics import SCORING_VERSION

    blob = json.dumps([fingerprint, dtype, device_type, cfg.max_new_tokens, SCORING_VERSION, [asdict(p) for p in probes]],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_cached(path: Path) -> Measurement | None:
    try:
        data = json.loads(path.read_text())
        return Measurement(data["continuations"], data["top_tokens"], data["target_ids"])
    except (OSError, ValueError, KeyError):
        return None


def measure_once(path: Path, compute: Callable[[], Measurement]) -> tuple[Measurement, bool]:
    """(the measurement stored at path, or compute()'s, stored there; whether it was stored already). Trials started
    together wait for the first one's instead of each measuring the unedited model."""
    from chronosweep.core.models import file_lock

    if (m := load_cached(path)) is not None:
        return m, True
    with file_lock(path.with_suffix(".lock")):
        if (m := load_cached(path)) is not None:
            return m, True
        m = compute()
        store_cached(path, m)
        return m, False


def store_cached(path: Path, m: Measurement) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{id(m)}.tmp")
    tmp.write_text(json.dumps(asdict(m)))
    tmp.replace(path)
