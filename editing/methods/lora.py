"""LoRA on attention, MLP or both, restricted to a window of layers (peft)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from peft import LoraConfig, get_peft_model

from chronosweep.archs import target_modules
from chronosweep.models import ModelInfo
from editing.base import EditContext, EditOutcome
from editing.training import train_on_edits
from editing.window import check_window, window_layers


@dataclass
class LoraOptions:
    targets: Literal["mlp", "attn", "both"] = "mlp"
    rank: int = 32
    alpha: float = 64.0
    dropout: float = 0.0
    # First layer of the window and its width; layer_start null means the whole model.
    layer_start: int | None = 12
    layer_width: int = 6
    lr: float = 2e-3
    epochs: int = 25
    batch_size: int = 8
    weight_decay: float = 0.0

    def check(self, where: str, problems: list[str]) -> None:
        for name in ("rank", "epochs", "batch_size", "layer_width"):
            if getattr(self, name) < 1:
                problems.append(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"{where}.dropout: must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            problems.append(f"{where}.lr: must be > 0, got {self.lr}")


class LoRA:
    name = "lora"
    Options = LoraOptions

    def check(self, options: LoraOptions, info: ModelInfo, problems: list[str]) -> None:
        check_window(self.name, options.layer_start, options.layer_width, info, problems)

    def edit(self, model, tokenizer, requests, options: LoraOptions, ctx: EditContext) -> EditOutcome:
        layers = window_layers(options.layer_start, options.layer_width, ctx.info)
        peft_config = LoraConfig(
            r=options.rank,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=target_modules(ctx.info.model_type, options.targets),
            layers_to_transform=layers,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, peft_config)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        history = train_on_edits(peft_model, tokenizer, requests, lr=options.lr, epochs=options.epochs,
                                 batch_size=options.batch_size, weight_decay=options.weight_decay, ctx=ctx,
                                 desc="lora")

        def save(folder: Path) -> None:
            peft_model.save_pretrained(folder / "adapter")

        return EditOutcome(model=peft_model, trainable_params=trainable, history=history, save=save)
