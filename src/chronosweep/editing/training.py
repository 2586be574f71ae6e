"""The shared training loop of the gradient methods (LoRA, P-tuning, full, freeze).

All edits of a trial are trained together (batch editing, as in the study); the loss is the mean
cross-entropy of the new-object tokens. The optimisation step itself belongs to an engine
(plain PyTorch or DeepSpeed, see editing.engine), so every method gets both for free.
"""

from __future__ import annotations

import math
import random
import time

from tqdm.auto import tqdm

from chronosweep.core.tokens import collate, edit_examples
from chronosweep.editing.base import EditContext
from chronosweep.editing.engine import make_engine
from chronosweep.editing.history_training import HistoryFacts
from chronosweep.editing.options import TrainingOptions


class TrainingDiverged(RuntimeError):
    pass


def shard(order: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of the shuffled order, as torch's DistributedSampler splits it.

    The order is padded by wrapping around so every rank runs the same number of steps (a rank with
    one step fewer would leave the others waiting in a collective forever).
    """
    if world_size == 1:
        return list(order)
    total = math.ceil(len(order) / world_size) * world_size
    padded = list(order)
    while len(padded) < total:
        padded += order[: total - len(padded)]
    return padded[rank:total:world_size]


def train_on_edits(model, tokenizer, requests, options: TrainingOptions, ctx: EditContext,
                   desc: str = "train") -> list[dict]:
    """Train model's trainable parameters on the edits; returns one {epoch, loss, seconds} dict per epoch.

    options.batch_size is the number of edits per optimiser step; under a multi-process launch each rank takes
    its share of every epoch's shuffled order, in micro-batches of batch_size / world size.
    """
    epochs = options.epochs
    examples = edit_examples(tokenizer, requests, ctx.runtime.target_suffix)
    facts = HistoryFacts(tokenizer, requests, options, ctx.runtime.target_suffix) if options.history_weight > 0 else None
    rng = random.Random(ctx.runtime.seed)
    engine = make_engine(model, lr=options.lr, weight_decay=options.weight_decay, batch_size=options.batch_size,
                         ctx=ctx)
    micro = engine.micro_batch
    history: list[dict] = []
    steps_per_epoch = math.ceil(math.ceil(len(examples) / engine.world_size) / micro)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", leave=False, dynamic_ncols=True,
               disable=engine.rank != 0)
    try:
        for epoch in range(1, epochs + 1):
            # Every rank draws the same order from the same seed, so the shards partition it.
            order = list(range(len(examples)))
            rng.shuffle(order)
            mine = shard(order, engine.rank, engine.world_size)
            total, count, tokens, past = 0.0, 0, 0, []
            for start in range(0, len(mine), micro):
                batch = collate([examples[i] for i in mine[start:start + micro]], tokenizer.pad_token_id)
                batch = {k: v.to(engine.device) for k, v in batch.items()}
                extra = facts.take([requests[i] for i in mine[start:start + micro]]) if facts else []
                if extra:
                    # The edits and their history facts in one step, the facts' loss weighted.
                    known = collate(extra, tokenizer.pad_token_id)
                    loss, past_loss = engine.step_weighted([(batch, 1.0), ({k: v.to(engine.device) for k, v in
                                                                            known.items()}, options.history_weight)])
                    past.append(past_loss)
                else:
                    loss = engine.step(batch)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss} at epoch {epoch}; lower the learning rate")
                n = len(batch["input_ids"])
                tokens += int(batch["attention_mask"].sum())
                total += loss * n
                count += n
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")
            total, count = engine.all_sum([total, float(count)])
            record = {"epoch": epoch, "loss": total / max(count, 1), "tokens": tokens,
                      "seconds": time.perf_counter() - t0}
            if past:
                record["history_loss"] = sum(past) / len(past)
            history.append(record)
            if ctx.on_epoch is not None:
                ctx.on_epoch(epoch, record)
    finally:
        bar.close()
        engine.close()
        model.eval()
    return history
