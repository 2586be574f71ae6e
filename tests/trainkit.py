"""Shared pieces of the gradient-method tests: a few invented edits, a config and context for the tiny model."""

from __future__ import annotations

from pathlib import Path

import torch

from chronosweep.core.models import load, resolve
from chronosweep.core.requests import EditRequest
from chronosweep.editing.base import EditContext
from chronosweep.trial.config import load_config

FACTS = [
    ("Italy", "The President of Italy is", "Giorgia Meloni"),
    ("Amazon", "The CEO of Amazon is", "Tim Cook"),
    ("France", "The capital of France is", "Berlin"),
    ("Lionel Messi", "Lionel Messi plays for", "Al Nassr"),
    ("Apple", "The CEO of Apple is", "Andy Jassy"),
    ("Germany", "The capital of Germany is", "Paris"),
]


def tiny_requests(n: int = len(FACTS)) -> list[EditRequest]:
    return [EditRequest(case_id=f"tiny:{i}", subject=s, prompt=p, target_new=o) for i, (s, p, o) in enumerate(FACTS[:n])]


def make_ctx(model_dir: Path, overrides: list[str], run_dir: Path | None = None, dtype=torch.float32):
    """(config, context) for a trial on the tiny model on CPU; overrides are --set style key=value strings."""
    cfg = load_config(None, [f"model={model_dir}", "device=cpu", *overrides])
    info = resolve(str(model_dir))
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=dtype, run_dir=run_dir,
                      cache_dir=Path(model_dir).parent / "cache")
    return cfg, ctx


def load_tiny(ctx: EditContext):
    return load(ctx.info, ctx.device, ctx.dtype)
