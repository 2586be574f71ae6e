"""LoRA on attention, MLP or both, restricted to a window of layers (peft)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from peft import LoraConfig, get_peft_model

from chronosweep.core.archs import target_modules
from chronosweep.editing.base import EditContext, EditOutcome, edited
from chronosweep.editing.methods.lora.options import LoraOptions
from chronosweep.editing.training import train_on_edits


class LoRA:
    def edit(self, model, tokenizer, requests, options: LoraOptions, ctx: EditContext) -> EditOutcome:
        peft_config = LoraConfig(
            r=options.rank,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=target_modules(ctx.info.model_type, options.targets),
            layers_to_transform=options.window_layers(),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, peft_config)
        names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        trained = train_on_edits(peft_model, tokenizer, requests, options, ctx, desc="lora",
                                 prefix_cache=options.prefix_cache)

        def save(folder: Path) -> None:
            peft_model.save_pretrained(folder / "adapter")

        modules, layers = edited(names, ctx.info)
        # unload() swaps the LoRA layers back for the modules they wrapped (nothing merged into the weights).
        return EditOutcome(model=peft_model, trainable_params=trainable, history=trained.history, save=save,
                           edited_modules=modules, edited_layers=layers, detach=peft_model.unload,
                           training=trained.summary, training_prompts=trained.prompts)

    def resume(self, previous: EditOutcome, tokenizer, requests, options: LoraOptions, ctx: EditContext) -> EditOutcome:
        """Sequential editing and edit streams: the same adapter trains on the next edits (single_adapter), or the
        adapter so far is merged into the weights and a new one trains on them (adapter_per_wave)."""
        if options.stream_strategy == "adapter_per_wave":
            merged = previous.model.merge_and_unload()
            outcome = self.edit(merged, tokenizer, requests, options, ctx)
            return dataclasses.replace(outcome, trainable_params=previous.trainable_params + outcome.trainable_params)
        trained = train_on_edits(previous.model, tokenizer, requests, options, ctx, desc="lora",
                                 prefix_cache=options.prefix_cache)
        return dataclasses.replace(previous, history=trained.history, training=trained.summary,
                                   training_prompts=trained.prompts)
