"""P-tuning: trainable virtual tokens, produced by peft's prompt encoder, prepended to every input.

The base model stays frozen. A prompt-learning PeftModel (peft 0.21) is wrong to evaluate as it is:
- generate() with the KV cache garbles everything after the first token (the cached steps re-inject
  the virtual tokens);
- even without the cache, batched generation depends on the padding: peft puts the virtual tokens at
  position 0, in front of the left padding, and drops position_ids, so a prompt's distance from its
  virtual tokens grows with the padding its batch needs (on the default model 35 of 40 continuations
  changed between batched and one-at-a-time generation).
So the edited model is handed over as VirtualPromptLM: its generate() puts the virtual tokens right
before each row's first real token and lets the base model generate from the embeddings, which is
exactly what one unpadded prompt sees, with the KV cache. Its forward() is peft's: the logits carry
num_virtual_tokens extra leading positions, so with right padding the input's own positions are the
last input-length ones (logits[:, -input_len:]), placed as in training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, get_peft_model

from chronosweep.editing.base import EditContext, EditOutcome, edited
from chronosweep.editing.methods.ptuning.options import PtuningOptions
from chronosweep.editing.training import train_on_edits


def prompt_encoder_config(options: PtuningOptions) -> PromptEncoderConfig:
    return PromptEncoderConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=options.num_virtual_tokens,
        encoder_hidden_size=options.encoder_hidden_size,
        encoder_reparameterization_type=(PromptEncoderReparameterizationType.MLP if options.encoder_type == "mlp"
                                         else PromptEncoderReparameterizationType.LSTM),
        encoder_num_layers=options.encoder_num_layers,
        encoder_dropout=options.encoder_dropout,
    )


class VirtualPromptLM(torch.nn.Module):
    """A prompt-learning PeftModel whose generate() does not depend on padding or on the KV cache."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    @property
    def config(self):
        return self.peft_model.get_base_model().config

    @property
    def generation_config(self):
        return self.peft_model.get_base_model().generation_config

    @property
    def device(self):
        return self.peft_model.get_base_model().device

    def forward(self, *args, **kwargs):
        return self.peft_model(*args, **kwargs)

    def with_virtual_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(inputs_embeds, attention_mask) with the virtual tokens just before each row's first real token."""
        base = self.peft_model.get_base_model()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = base.get_input_embeddings()(input_ids)
        prompts = self.peft_model.get_prompt(batch_size=input_ids.shape[0]).to(embeds.dtype)
        ones = torch.ones(prompts.shape[1], dtype=attention_mask.dtype, device=attention_mask.device)
        rows, masks = [], []
        for b in range(input_ids.shape[0]):
            real = attention_mask[b].nonzero()
            start = int(real[0]) if len(real) else 0
            rows.append(torch.cat([embeds[b, :start], prompts[b], embeds[b, start:]]))
            masks.append(torch.cat([attention_mask[b, :start], ones, attention_mask[b, start:]]))
        return torch.stack(rows), torch.stack(masks)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """Like model.generate: the input ids followed by the new tokens."""
        embeds, mask = self.with_virtual_tokens(input_ids, attention_mask)
        # With embeddings alone, generate returns only the new tokens; it derives position ids from the mask.
        new = self.peft_model.get_base_model().generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


class Ptuning:
    def edit(self, model, tokenizer, requests, options: PtuningOptions, ctx: EditContext) -> EditOutcome:
        peft_model = get_peft_model(model, prompt_encoder_config(options))
        # The encoder is created in fp32; match the model so DeepSpeed and plain torch see one dtype.
        peft_model.prompt_encoder.to(device=ctx.device, dtype=ctx.dtype)
        names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        trained = train_on_edits(peft_model, tokenizer, requests, options, ctx, desc="ptuning")

        def save(folder: Path) -> None:
            # peft stores the encoder's output (the virtual-token embeddings), which is all inference needs.
            peft_model.save_pretrained(folder / "adapter")

        modules, layers = edited(names, ctx.info)
        return EditOutcome(model=VirtualPromptLM(peft_model), trainable_params=trainable, history=trained.history,
                           save=save, edited_modules=modules, edited_layers=layers, detach=peft_model.get_base_model,
                           training=trained.summary, training_prompts=trained.prompts)

    def resume(self, previous: EditOutcome, tokenizer, requests, options: PtuningOptions,
               ctx: EditContext) -> EditOutcome:
        """Sequential editing: the same prompt encoder trains on the next edits."""
        trained = train_on_edits(previous.model.peft_model, tokenizer, requests, options, ctx, desc="ptuning")
        return dataclasses.replace(previous, history=trained.history, training=trained.summary,
                                   training_prompts=trained.prompts)
