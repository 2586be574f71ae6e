"""The locality term: KL(unedited || edited) between next-token distributions on retain prompts.

The unedited distributions come from the same model, never a second copy of it: for an adapter method (LoRA,
P-tuning) with the adapter off (peft's disable_adapter; a prompt-learning model's base sees no virtual tokens),
either in every step without gradients ("live") or once before training ("once"); for in-place methods (full,
freeze) always once, before the first step changes the weights. "once" keeps float32 log-probabilities of just
the positions the KL reads (positions x vocabulary x 4 bytes) and saves a forward pass per step. The KL of
one position is sum_v p(v) (log p(v) - log q(v)), p unedited, q edited; the term averages it over each retain
row's positions ("last": the token after a subject prompt, ROME's; "all": every position of a text), then over
the step's retain rows, so a one-position subject prompt weighs as much as a long text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chronosweep.editing.prefix_cache import right_pad
from chronosweep.editing.retain import RetainPrompt
from chronosweep.editing.sampled import unedited


@dataclass
class RetainRow:
    ids: list[int]
    # First position whose next-token distribution the KL reads (len(ids) - 1 for "last", 0 for "all").
    start: int


def retain_rows(tokenizer, prompts: list[RetainPrompt]) -> list[RetainRow]:
    rows = []
    for p in prompts:
        ids = tokenizer(p.text, add_special_tokens=True)["input_ids"]
        if ids:
            rows.append(RetainRow(ids, len(ids) - 1 if p.positions == "last" else 0))
    return rows


def batch(rows: list[RetainRow], pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(model inputs, (rows, width) bool mask of the positions the KL reads)."""
    ids, mask = right_pad([r.ids for r in rows], pad_id)
    read = torch.zeros_like(mask, dtype=torch.bool)
    for i, r in enumerate(rows):
        read[i, r.start:len(r.ids)] = True
    return {"input_ids": ids, "attention_mask": mask}, read


def log_probs_at(logits: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    """(positions read, vocab) float32 log-probabilities at the read positions.

    logits covers the last k positions of the rows: all of them and more (a prompt-learning model's virtual tokens
    lead), or fewer (logits_to_keep), as long as every position read lies among them.
    """
    k = min(logits.shape[1], read.shape[1])
    return F.log_softmax(logits[:, -k:][read[:, read.shape[1] - k:]].float(), dim=-1)


def kl(reference: torch.Tensor, edited: torch.Tensor, read: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p || q) from log-probabilities of shape (positions, vocab): averaged within each row first (read: the
    (rows, width) mask the positions came from), so a one-position subject prompt weighs as much as a long text."""
    per_position = F.kl_div(edited, reference, log_target=True, reduction="none").sum(-1)
    if read is None:
        return per_position.mean()
    counts = read.sum(1)
    counts = counts[counts > 0]
    rows = torch.repeat_interleave(torch.arange(len(counts), device=per_position.device), counts.to(per_position.device))
    per_row = torch.zeros(len(counts), dtype=per_position.dtype, device=per_position.device).index_add_(0, rows,
                                                                                                      per_position)
    return (per_row / counts.to(per_row.dtype)).mean()


def is_adapter(model) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "disable_adapter")


class Reference:
    """The unedited model's log-probabilities on retain rows: live with the adapter off, or computed once."""

    def __init__(self, model, rows: list[RetainRow], pad_id: int, device: torch.device, batch_size: int = 16,
                 mode: str = "auto"):
        """mode: "live" (adapters only), "once", or "auto" (live for adapters, once otherwise)."""
        self.model, self.rows, self.pad_id, self.device = model, rows, pad_id, device
        if mode == "live" and not is_adapter(model):
            raise ValueError("kl_reference: live needs an adapter to switch off; an in-place method changes the very "
                             "weights, so its reference is read once")
        self.live = is_adapter(model) if mode == "auto" else mode == "live"
        self.stored: list[torch.Tensor] = []
        if not self.live:
            # Read before the first step: in-place methods change the very weights.
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad(), unedited(model) as base:
                    for start in range(0, len(rows), batch_size):
                        chunk = rows[start:start + batch_size]
                        inputs, read = batch(chunk, pad_id)
                        logits = base(**{k: v.to(device) for k, v in inputs.items()}, use_cache=False).logits
                        lp = log_probs_at(logits, read.to(device))
                        counts = read.sum(1).tolist()
                        self.stored += list(torch.split(lp, counts))
            finally:
                model.train(was_training)

    @property
    def kind(self) -> str:
        if self.live:
            return "adapter disabled, every step"
        return "adapter disabled, once" if is_adapter(self.model) else "precomputed before training"

    def log_probs(self, indices: list[int], inputs: dict, read: torch.Tensor, before_forward=None) -> torch.Tensor:
        """(positions read, vocab) for these rows, in the row-major order of read; before_forward runs right before
        the live forward (the prefix cache feeds it)."""
        if not self.live:
            return torch.cat([self.stored[i] for i in indices]).to(read.device)
        with torch.no_grad(), unedited(self.model) as base:
            if before_forward is not None:
                before_forward()
            logits = base(**inputs, use_cache=False).logits
        return log_probs_at(logits, read)
