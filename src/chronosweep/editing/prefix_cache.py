"""Frozen-prefix caching: when nothing below decoder layer L trains, the hidden states entering L never change.

They are computed once per training text; during training the blocks below L are swapped for pass-throughs and
a pre-hook hands layer L the cached states of the current batch, so every step runs only layers L.. and the head.
The module list keeps its length, so models that look up a per-layer setting by index (Gemma's sliding-window
layers) stay aligned; the embedding lookup still runs (its output is discarded). Texts are right-padded, so a
text's real positions never attend to padding and its cached states equal those of any batch it trains in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from chronosweep.core.archs import arch_for
from chronosweep.core.models import ModelInfo
from chronosweep.editing.base import layer_of, module_path
from chronosweep.editing.locate import block_output, blocks, record, replace_block_output


def first_trainable_layer(model, info: ModelInfo) -> int | None:
    """The lowest decoder layer holding a trainable parameter, or None when one lies outside the decoder layers
    (embeddings, a prompt encoder, the final norm) or nothing trains."""
    layers = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_of(module_path(name), info)
        if layer is None:
            return None
        layers.append(layer)
    return min(layers) if layers else None


class _PassThrough(torch.nn.Module):
    """Stands in for a skipped block: returns its input, shaped like the block's own output."""

    def __init__(self, template):
        super().__init__()
        self.template = template

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return replace_block_output(self.template, hidden)


class PrefixCache:
    def __init__(self, model, info: ModelInfo, layer: int, sequences: list[list[int]], pad_id: int,
                 device: torch.device, batch_size: int = 32):
        """model: the plain causal LM (a peft model's base); sequences: every training text's token ids."""
        self.model, self.layer, self.device = model, layer, device
        self.arch = arch_for(info.model_type)
        self.hidden: list[torch.Tensor] = []
        self._template = None
        self._current: torch.Tensor | None = None
        prev = blocks(model, self.arch)[layer - 1]
        handle = prev.register_forward_hook(self._keep_template)
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start:start + batch_size]
                ids, mask = right_pad(chunk, pad_id)
                rec = record(model, self.arch, ids.to(device), mask.to(device), block_in=(layer,), stop=True)
                states = rec.block_in[layer]
                self.hidden += [states[i, :len(s)].clone() for i, s in enumerate(chunk)]
        finally:
            handle.remove()
            model.train(was_training)

    def _keep_template(self, module, args, output):
        if self._template is None:
            # Only the structure matters (a tensor, or a tuple led by one); the rest is None without a KV cache.
            out = block_output(output)
            self._template = replace_block_output(output, out[:0]) if isinstance(output, tuple) else out[:0]

    def feed(self, indices: list[int], width: int) -> None:
        """Hand the next forward the cached states of these texts, right-padded with zeros to width."""
        first = self.hidden[indices[0]]
        out = torch.zeros(len(indices), width, first.shape[-1], dtype=first.dtype, device=first.device)
        for row, i in enumerate(indices):
            h = self.hidden[i]
            out[row, :len(h)] = h
        self._current = out

    def _inject(self, module, args, kwargs):
        if self._current is None:
            raise RuntimeError("prefix cache: a forward ran without feed() naming its texts")
        hidden, self._current = self._current, None
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Blocks below the layer are pass-throughs and the layer reads the fed states, for the duration."""
        layer_list = blocks(self.model, self.arch)
        skipped = [layer_list[i] for i in range(self.layer)]
        for i in range(self.layer):
            layer_list[i] = _PassThrough(self._template)
        handle = layer_list[self.layer].register_forward_pre_hook(self._inject, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            for i, block in enumerate(skipped):
                layer_list[i] = block
            self._current = None


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask
