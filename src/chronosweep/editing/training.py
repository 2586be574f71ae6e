"""The shared training loop of the gradient methods (LoRA, P-tuning, full, freeze).

All edits of a trial are trained together (batch editing, as in the study): each optimiser step takes
batch_size edits with every prompt they train under (the bare prompt, generated context prefixes, training
paraphrases: editing.augment). The loss is the mean cross-entropy of the new-object tokens, plus kl_weight times
the KL between the unedited and the edited model on retain prompts (editing.kl, editing.retain). Training stops
early once every edit's targets have been the argmax for `patience` epochs, or the loss is under `stop_loss`.
Windowed methods may run only the layers that can change (editing.prefix_cache). The optimisation step itself
belongs to an engine (plain PyTorch or DeepSpeed, see editing.engine), so every method gets both for free.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from chronosweep.core.archs import arch_for
from chronosweep.core.tokens import collate, encode_example, target_text
from chronosweep.editing import kl as kl_term
from chronosweep.editing.augment import training_prompts
from chronosweep.editing.base import EditContext
from chronosweep.editing.engine import make_engine, resolve_engine
from chronosweep.editing.history_training import HistoryFacts
from chronosweep.editing.key_penalty import KeyPenalty
from chronosweep.editing.locate import blocks
from chronosweep.editing.options import TrainingOptions
from chronosweep.editing.prefix_cache import PrefixCache, first_trainable_layer
from chronosweep.editing.retain import build_pool
from chronosweep.editing.sampled import sample


class TrainingDiverged(RuntimeError):
    pass


class NoRetainPrompts(ValueError):
    pass


@dataclass
class Trained:
    # One row per epoch run (GRADIENT_HISTORY keys).
    history: list[dict]
    # metrics.json's "training": epochs run, why training stopped, what it trained on.
    summary: dict
    # The run dir's training_prompts.json: every text trained on.
    prompts: dict = field(default_factory=dict)


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


def unwrap(model):
    """The plain causal LM under a peft wrapper (LoRA layers stay inside it), else the model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def edit_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over target tokens, per row: every target token is the argmax).

    logits holds the last k positions of the input (k = logits.shape[1]); labels the whole rows.
    """
    k = logits.shape[1]
    lab = labels[:, labels.shape[1] - k + 1:]
    pred = logits[:, :-1].float()
    valid = lab != -100
    loss = F.cross_entropy(pred[valid], lab[valid])
    hit = (pred.argmax(-1) == lab) | ~valid
    return loss, hit.all(dim=1)


def _takes_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters


def _dropout_below(model, layer: int, info) -> bool:
    """Whether any active dropout sits outside the blocks >= layer (then a cached prefix would differ in training)."""
    above = {id(m) for b in list(blocks(model, arch_for(info.model_type)))[layer:] for m in b.modules()}
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 and id(m) not in above for m in model.modules())


def _cache_layer(model, ctx: EditContext, wanted: bool) -> tuple[int | None, str]:
    if not wanted:
        return None, "off"
    layer = first_trainable_layer(model, ctx.info)
    if layer is None:
        return None, "not applicable: parameters outside the decoder layers train"
    if layer == 0:
        return None, "not applicable: layer 0 trains"
    if resolve_engine(ctx) == "deepspeed" and ctx.runtime.deepspeed.zero_stage == 3:
        return None, "not applicable: ZeRO-3 partitions the skipped layers"
    if _dropout_below(unwrap(model), layer, ctx.info):
        return None, f"not applicable: dropout below layer {layer}"
    return layer, f"layers below {layer} computed once"


def train_on_edits(model, tokenizer, requests, options: TrainingOptions, ctx: EditContext, desc: str = "train",
                   prefix_cache: bool = False) -> Trained:
    """Train model's trainable parameters on the edits.

    options.batch_size is the number of edits per optimiser step; under a multi-process launch each rank takes
    its share of every epoch's shuffled order, in micro-batches of batch_size / world size. prefix_cache: the
    method trains a window of layers and allows caching what lies below it.
    """
    device = ctx.device
    if options.key_weight > 0 and resolve_engine(ctx) == "deepspeed" and ctx.runtime.deepspeed.zero_stage == 3:
        raise ValueError("key_weight: ZeRO-3 partitions the weights the key-statistics penalty reads; use zero_stage "
                         "0-2 or kl_weight")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    summary: dict = {"epochs_max": options.epochs}

    # What every edit trains under, sampled from the unedited model before anything changes.
    prefixes, prefixes_cached = sample("prefix", model, tokenizer, options.n_prefixes, options.prefix_tokens, ctx)
    texts = training_prompts(requests, prefixes, options.train_paraphrases, ctx.held_out)
    examples = [encode_example(tokenizer, p.prompt, target_text(requests[p.edit], ctx.runtime.target_suffix))
                for p in texts.prompts]
    by_edit: list[list[int]] = [[] for _ in requests]
    for i, p in enumerate(texts.prompts):
        by_edit[p.edit].append(i)
    # Time-qualified facts of the edits' histories, trained beside them (history_weight).
    facts = HistoryFacts(tokenizer, requests, options, ctx.runtime.target_suffix) if options.history_weight > 0 else None
    if facts is not None:
        summary["history_facts"] = len(facts.facts)
    summary["examples"] = texts.by_source()
    summary["examples_dropped_as_eval_overlap"] = len(texts.dropped)
    summary["prefixes"] = prefixes
    prompts_record = {
        "examples": [{"case_id": requests[p.edit].case_id, "source": p.source, "prompt": p.prompt} for p in texts.prompts],
        "dropped": [{"case_id": requests[p.edit].case_id, "source": p.source, "prompt": p.prompt, "overlaps": hit}
                    for p, hit in texts.dropped],
    }
    if facts:
        prompts_record["examples"] += [{"case_id": f.case_id, "source": "history", "prompt": f.prompt}
                                       for f in facts.facts]

    rows: list[kl_term.RetainRow] = []
    reference = None
    if options.kl_weight > 0:
        sampled, sampled_cached = sample("retain", model, tokenizer, options.retain_sampled,
                                         options.retain_sampled_tokens, ctx)
        pool = build_pool(requests, options, sampled, ctx.held_out, ctx.held_out_subjects)
        rows = kl_term.retain_rows(tokenizer, pool.prompts)
        if not rows:
            raise NoRetainPrompts(f"kl_weight {options.kl_weight:g}: no retain prompt is left once those overlapping "
                                  f"an evaluation probe or naming a probe's subject are removed "
                                  f"({len(pool.dropped)} removed)")
        by_subject = pool.dropped_for_subjects()
        summary["retain"] = {"prompts": len(pool.prompts), "by_source": pool.by_source(),
                             "dropped_as_overlap": len(pool.dropped) - by_subject, "dropped_as_subject": by_subject,
                             "held_out_checked": len(ctx.held_out),
                             "held_out_subjects_checked": len(ctx.held_out_subjects),
                             "sampled_cached": sampled_cached}
        prompts_record["retain"] = [{"source": p.source, "positions": p.positions, "text": p.text} for p in pool.prompts]
        prompts_record["retain_dropped"] = [{"source": p.source, "text": p.text, "overlaps": hit}
                                            for p, hit in pool.dropped]
    summary["prefixes_cached"] = prefixes_cached if options.n_prefixes else None

    layer, why = _cache_layer(model, ctx, prefix_cache)
    cache = None
    if layer is not None:
        t0 = time.perf_counter()
        history_ids = [e["input_ids"] for e in facts.examples] if facts else []
        cache = PrefixCache(unwrap(model), ctx.info, layer,
                            [e["input_ids"] for e in examples] + [r.ids for r in rows] + history_ids, pad, device)
        why += f" ({time.perf_counter() - t0:.2f} s)"
    summary["prefix_cache"] = {"layer": layer, "status": why}
    if rows:
        # In-place methods read the unedited distributions now, before the engine exists and anything trains.
        reference = kl_term.Reference(model, rows, pad, device, mode=options.kl_reference)
        summary["kl_reference"] = reference.kind

    penalty = None
    if options.key_weight > 0:
        # On the unedited model, before anything trains (full and freeze copy the weights they train here).
        penalty = KeyPenalty(model, tokenizer, corpus=options.key_corpus, samples=options.key_samples,
                             fingerprint=ctx.info.fingerprint, cache_dir=ctx.cache_dir, device=device)
        summary["key_penalty"] = {"modules": len(penalty.terms), "corpus": options.key_corpus,
                                  "samples": options.key_samples}

    keep_logits = _takes_logits_to_keep(model)
    engine = make_engine(model, lr=options.lr, weight_decay=options.weight_decay, batch_size=options.batch_size,
                         ctx=ctx)
    micro = engine.micro_batch
    rng = random.Random(ctx.runtime.seed)
    retain_rng = random.Random(ctx.runtime.seed + 1)
    retain_order: list[int] = []
    history: list[dict] = []
    steps_per_epoch = math.ceil(math.ceil(len(requests) / engine.world_size) / micro)
    stop_reason, streak = None, 0
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=options.epochs * steps_per_epoch, desc=desc, unit="step", leave=False, dynamic_ncols=True,
               disable=engine.rank != 0)

    def next_retain() -> list[int]:
        picked = []
        while len(picked) < min(options.retain_per_step, len(rows)):
            if not retain_order:
                retain_order.extend(range(len(rows)))
                retain_rng.shuffle(retain_order)
            picked.append(retain_order.pop())
        return picked

    def target_loss(forward, chosen: list[dict], cached: list[int]):
        """(mean loss over the examples' target tokens, per example: all targets the argmax, tokens run); cached:
        the examples' places among the prefix cache's texts."""
        batch = {k: v.to(device) for k, v in collate(chosen, pad).items()}
        width = batch["input_ids"].shape[1]
        extra = {}
        if keep_logits:
            extra["logits_to_keep"] = width - min(e["n_prompt"] for e in chosen) + 1
        if cache is not None:
            cache.feed(cached, width)
        logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                         **extra).logits
        loss, hit = edit_loss(logits[:, -extra.get("logits_to_keep", width):], batch["labels"])
        return loss, hit, int(batch["attention_mask"].sum())

    def history_term(forward, hidx: list[int], out: dict):
        """The mean loss of these history facts (their own target tokens), for the same step."""
        term, _, tokens = target_loss(forward, [facts.examples[i] for i in hidx],
                                      [len(examples) + len(rows) + i for i in hidx])
        out["history_loss"] = float(term.detach())
        out["tokens"] += tokens
        return term

    def step_loss(forward, idx: list[int], ridx: list[int], out: dict, hidx: list[int] = ()):
        loss, hit, tokens = target_loss(forward, [examples[i] for i in idx], idx)
        out.update(ce=float(loss.detach()), hit=hit.tolist(), tokens=tokens)
        if ridx:
            # Subject prompts (KL on their last token) and long texts (every position) run as separate batches, so
            # neither is padded to the other's width, and each computes the head only where the KL reads it.
            groups = [g for g in ([j for j in ridx if rows[j].start > 0], [j for j in ridx if rows[j].start == 0]) if g]
            total = 0.0
            for group in groups:
                inputs, read = kl_term.batch([rows[j] for j in group], pad)
                inputs, read = {k: v.to(device) for k, v in inputs.items()}, read.to(device)
                rwidth = inputs["input_ids"].shape[1]
                if keep_logits:
                    inputs["logits_to_keep"] = rwidth - min(rows[j].start for j in group)
                feed = (lambda g=group, w=rwidth: cache.feed([len(examples) + j for j in g], w)) if cache else None
                ref = reference.log_probs(group, inputs, read, before_forward=feed)
                if feed is not None:
                    feed()
                edited = kl_term.log_probs_at(forward(**inputs, use_cache=False).logits, read)
                total = total + kl_term.kl(ref, edited, read) * len(group)
                out["tokens"] += int(inputs["attention_mask"].sum())
            term = total / len(ridx)
            out["kl"] = float(term.detach())
            loss = loss + options.kl_weight * term
        if penalty is not None:
            term = penalty()
            out["key"] = float(term.detach())
            loss = loss + options.key_weight * term
        if hidx:
            # The edits and their history facts in one step, the facts' loss weighted.
            loss = loss + options.history_weight * history_term(forward, list(hidx), out)
        return loss

    context = cache.active() if cache is not None else contextlib.nullcontext()
    try:
        with context:
            for epoch in range(1, options.epochs + 1):
                # Every rank draws the same order from the same seed, so the shards partition it.
                order = list(range(len(requests)))
                rng.shuffle(order)
                mine = shard(order, engine.rank, engine.world_size)
                total, count, tokens, kl_sum, key_sum, steps, past = 0.0, 0, 0, 0.0, 0.0, 0, []
                missed = [0.0] * len(requests)
                for start in range(0, len(mine), micro):
                    edits = mine[start:start + micro]
                    idx = [i for e in edits for i in by_edit[e]]
                    out: dict = {}
                    ridx = next_retain() if rows else []
                    hidx = facts.take([requests[e] for e in edits]) if facts else []
                    loss = engine.step(lambda forward, idx=idx, ridx=ridx, out=out, hidx=hidx:
                                       step_loss(forward, idx, ridx, out, hidx))
                    if "history_loss" in out:
                        past.append(out["history_loss"])
                    if not math.isfinite(loss):
                        raise TrainingDiverged(f"loss became {loss} at epoch {epoch}; lower the learning rate")
                    for i, ok in zip(idx, out["hit"]):
                        if not ok:
                            missed[texts.prompts[i].edit] += 1
                    n = len(idx)
                    tokens += out["tokens"]
                    total += out["ce"] * n
                    count += n
                    kl_sum += out.get("kl", 0.0)
                    key_sum += out.get("key", 0.0)
                    steps += 1
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{out['ce']:.3f}")
                total, count, kl_sum, key_sum, steps, *missed = engine.all_sum([total, float(count), kl_sum, key_sum,
                                                                                float(steps), *missed])
                learned = sum(1 for m in missed if m == 0) / max(len(requests), 1)
                record = {"epoch": epoch, "loss": total / max(count, 1), "kl": kl_sum / steps if rows else None,
                          "key": key_sum / steps if penalty is not None else None, "learned": learned,
                          "tokens": tokens, "seconds": time.perf_counter() - t0}
                if past:
                    record["history_loss"] = sum(past) / len(past)
                history.append(record)
                if ctx.on_epoch is not None:
                    ctx.on_epoch(epoch, record)
                streak = streak + 1 if learned == 1.0 else 0
                if options.patience and streak >= options.patience:
                    stop_reason = f"every edit's targets were the argmax for {options.patience} epoch(s)"
                elif options.stop_loss is not None and record["loss"] < options.stop_loss:
                    stop_reason = f"edit loss {record['loss']:.4g} < stop_loss {options.stop_loss:g}"
                if stop_reason is not None:
                    break
    finally:
        bar.close()
        engine.close()
        model.eval()
    summary.update(epochs_run=len(history), stopped_early=stop_reason is not None and len(history) < options.epochs,
                   stop_reason=stop_reason)
    return Trained(history, summary, prompts_record)

