"""The shared training loop of the gradient methods (LoRA, P-tuning, full, freeze).

All edits of a trial are trained together (batch editing, as in the study); the loss is the mean
cross-entropy of the new-object tokens. The optimisation step itself belongs to an engine
(plain PyTorch or DeepSpeed, see editing.engine), so every method gets both for free.
"""

from __future__ import annotations

import math
import random
import time

import torch
from tqdm.auto import tqdm

from editing.base import EditContext
from editing.engine import make_engine
from editing.examples import collate, edit_examples


class TrainingDiverged(RuntimeError):
    pass


def train_on_edits(model, tokenizer, requests, *, lr: float, epochs: int, batch_size: int, ctx: EditContext,
                   weight_decay: float = 0.0, desc: str = "train") -> list[dict]:
    """Train model's trainable parameters on the edits; returns one {epoch, loss, seconds} dict per epoch."""
    examples = edit_examples(tokenizer, requests)
    rng = random.Random(ctx.config.seed)
    engine = make_engine(model, lr=lr, weight_decay=weight_decay, ctx=ctx)
    history: list[dict] = []
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            order = list(range(len(examples)))
            rng.shuffle(order)
            total, count = 0.0, 0
            for start in range(0, len(order), batch_size):
                batch = collate([examples[i] for i in order[start:start + batch_size]], tokenizer.pad_token_id)
                batch = {k: v.to(ctx.device) for k, v in batch.items()}
                loss = engine.step(batch)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss} at epoch {epoch}; lower the learning rate")
                n = len(batch["input_ids"])
                total += loss * n
                count += n
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")
            record = {"epoch": epoch, "loss": total / max(count, 1), "seconds": time.perf_counter() - t0}
            history.append(record)
            if ctx.on_epoch is not None:
                ctx.on_epoch(epoch, record)
    finally:
        bar.close()
        engine.close()
        model.eval()
    return history
