"""Optimisation engines behind the shared training loop: plain PyTorch, or DeepSpeed.

Both take one micro-batch per step and return its loss; the loop asks the engine where it stands in
the world (rank, world size, micro-batch per rank) so it can shard the batch under a multi-process launch.
"""

from __future__ import annotations

import torch

from chronosweep.editing.base import EditContext


class TorchEngine:
    rank = 0
    world_size = 1

    def __init__(self, model, lr: float, weight_decay: float, clip: float, batch_size: int, device: torch.device):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the method left no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.clip = clip
        self.micro_batch = batch_size
        self.device = device

    def step(self, batch: dict) -> float:
        return self.step_weighted([(batch, 1.0)])[0]

    def step_weighted(self, parts: list[tuple[dict, float]]) -> list[float]:
        """One optimiser step on the weighted sum of the parts' losses (the edits', the history facts'...);
        returns each part's loss."""
        losses = [self.model(**batch).loss for batch, _ in parts]
        sum(w * loss for loss, (_, w) in zip(losses, parts)).backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return [float(loss.detach()) for loss in losses]

    def all_sum(self, values: list[float]) -> list[float]:
        return list(values)

    def close(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def resolve_engine(ctx: EditContext) -> str:
    if ctx.runtime.engine == "auto":
        return "deepspeed" if ctx.device.type == "cuda" else "torch"
    return ctx.runtime.engine


def make_engine(model, lr: float, weight_decay: float, batch_size: int, ctx: EditContext):
    kind = resolve_engine(ctx)
    if kind == "deepspeed":
        from chronosweep.editing.deepspeed_engine import DeepSpeedEngine

        return DeepSpeedEngine(model, lr=lr, weight_decay=weight_decay, batch_size=batch_size, ctx=ctx)
    return TorchEngine(model, lr=lr, weight_decay=weight_decay, clip=ctx.runtime.grad_clip, batch_size=batch_size,
                       device=ctx.device)
