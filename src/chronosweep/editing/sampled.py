"""Texts the unedited model writes once per trial: context prefixes and unrelated retain texts.

Both come from editing.locate.generate_prefixes (seeded top-k sampling, ROME's way), with different seeds so a
retain text is never a training prefix. They depend only on the weights, the seed and the decoding, so they are
cached on disk beside the other per-model caches: a sweep samples them once, not once per trial.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator

import torch

from chronosweep.editing.base import EditContext
from chronosweep.editing.locate import generate_prefixes

# Seed offsets per kind, so prefixes and retain texts of one trial differ.
_SEED_OFFSET = {"prefix": 0, "retain": 7919}


@contextlib.contextmanager
def unedited(model) -> Iterator[torch.nn.Module]:
    """The plain causal LM as it was before the edit: a peft model's base with its adapter off, else the model itself.

    A prompt-learning model's base sees no virtual tokens; a LoRA model's base holds the LoRA layers, so they are
    switched off for the duration (peft's disable_adapter: no second copy of the weights). An in-place method's
    model is unedited only before its training starts.
    """
    get_base = getattr(model, "get_base_model", None)
    if get_base is None:
        yield model
        return
    if model.peft_config[model.active_adapter].is_prompt_learning:
        yield get_base()
        return
    with model.disable_adapter():
        yield get_base()


def sample(kind: str, model, tokenizer, n: int, tokens: int, ctx: EditContext) -> tuple[list[str], bool]:
    """(n texts of about `tokens` tokens, whether they came from the cache)."""
    if n == 0:
        return [], False
    seed = ctx.runtime.seed + _SEED_OFFSET[kind]
    blob = json.dumps([ctx.info.fingerprint, str(ctx.dtype), ctx.device.type, kind, n, tokens, seed])
    path = ctx.cache_dir / "samples" / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"
    try:
        texts = json.loads(path.read_text())
        if isinstance(texts, list) and len(texts) == n and all(isinstance(t, str) for t in texts):
            return texts, True
    except (OSError, ValueError):
        pass
    was_training = model.training
    model.eval()
    try:
        with unedited(model) as base:
            texts = generate_prefixes(base, tokenizer, n, tokens, seed, ctx.device)
    finally:
        model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{id(texts)}.tmp")
    tmp.write_text(json.dumps(texts))
    tmp.replace(path)
    return texts, False
