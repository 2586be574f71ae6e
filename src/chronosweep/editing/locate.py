"""Shared locate-and-edit machinery of ROME and MEMIT.

Where the fact lives (the subject's last token), what the MLP down-projection reads and writes there
(keys and values), the short context prefixes the keys are averaged over, and reading/writing the
down-projection weight in either layout (nn.Linear is (out, in); GPT-2's Conv1D is (in, out)).
Module names come only from chronosweep.core.archs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal

import torch

from chronosweep.core.archs import Arch, get_path
from chronosweep.core.requests import EditRequest
from chronosweep.core.tokens import target_text

# Opening words of the generated context prefixes, as ROME/EasyEdit seed them.
PREFIX_SEEDS = ("The", "Therefore", "Because", "I", "You")
# The prompt whose next-token distribution the KL term keeps stable ("{subject} is a", as in ROME).
KL_TEMPLATE = "{} is a"


# ---------------------------------------------------------------- modules and weights

def blocks(model, arch: Arch) -> torch.nn.ModuleList:
    return get_path(model, arch.layers)


def down_proj(model, arch: Arch, layer: int) -> torch.nn.Module:
    return get_path(blocks(model, arch)[layer], arch.down_proj)


def down_proj_path(arch: Arch, layer: int) -> str:
    """The rewritten module's path from the top of the causal LM (model.layers.5.mlp.down_proj)."""
    return f"{arch.layers}.{layer}.{arch.down_proj}"


def weight_out_in(module: torch.nn.Module, arch: Arch) -> torch.Tensor:
    """The down-projection weight as (out, in) = (hidden, mlp width), a view of the stored tensor."""
    return module.weight.T if arch.conv1d else module.weight


def add_to_weight(module: torch.nn.Module, arch: Arch, delta_out_in: torch.Tensor) -> None:
    w = module.weight
    delta = delta_out_in.T if arch.conv1d else delta_out_in
    if delta.shape != w.shape:
        raise ValueError(f"update of shape {tuple(delta_out_in.shape)} (out, in) does not fit weight {tuple(w.shape)}")
    with torch.no_grad():
        w.add_(delta.to(device=w.device, dtype=w.dtype))


@contextlib.contextmanager
def frozen(model):
    """No parameter gradients while optimising target values: only the delta vectors need them."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def block_output(output) -> torch.Tensor:
    # Decoder blocks return a tensor (LLaMA, GPT-2 in transformers 5) or a tuple led by it (Falcon).
    return output[0] if isinstance(output, tuple) else output


def replace_block_output(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class StopForward(Exception):
    """Raised from a hook once everything needed is recorded, so later layers and the head never run."""


@dataclass
class Recording:
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # down_proj input
    values: dict[int, torch.Tensor] = field(default_factory=dict)  # down_proj output
    block_in: dict[int, torch.Tensor] = field(default_factory=dict)
    block_out: dict[int, torch.Tensor] = field(default_factory=dict)
    last_hidden: torch.Tensor | None = None


def record(model, arch: Arch, input_ids, attention_mask, *, mlp_layers=(), block_in=(), block_out=(),
           stop: bool = False) -> Recording:
    """One no-grad forward of the base model recording MLP keys/values and block inputs/outputs.

    With stop=True the forward ends right after the deepest recorded module, so neither the later
    layers nor the LM head run; otherwise last_hidden (after the final norm) is recorded too.
    """
    rec = Recording()
    handles = []
    layer_list = blocks(model, arch)
    deepest = max([*mlp_layers, *block_in, *block_out], default=-1)

    def done(layer: int, is_last_site: bool):
        if stop and layer == deepest and is_last_site:
            raise StopForward

    for layer in mlp_layers:
        def hook(module, args, output, layer=layer):
            rec.keys[layer] = args[0].detach()
            rec.values[layer] = output.detach()
            done(layer, layer not in block_out)
        handles.append(down_proj(model, arch, layer).register_forward_hook(hook))
    for layer in block_in:
        def pre(module, args, kwargs, layer=layer):
            rec.block_in[layer] = (args[0] if args else kwargs["hidden_states"]).detach()
            done(layer, layer not in mlp_layers and layer not in block_out)
        handles.append(layer_list[layer].register_forward_pre_hook(pre, with_kwargs=True))
    for layer in block_out:
        def post(module, args, output, layer=layer):
            rec.block_out[layer] = block_output(output).detach()
            done(layer, True)
        handles.append(layer_list[layer].register_forward_hook(post))
    try:
        with torch.no_grad():
            out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        rec.last_hidden = out.last_hidden_state
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return rec


@contextlib.contextmanager
def start_at(model, arch: Arch, start: int, hidden: torch.Tensor):
    """Run the base model from block `start` on, with `hidden` as that block's input.

    The blocks before `start` are left out of the module list for the duration, so a forward pass
    costs only the remaining layers. The embedding still runs (a cheap lookup; its output is replaced).
    start == number of layers is handled by the caller (only the final norm remains).
    """
    parent_path, name = arch.layers.rsplit(".", 1)
    parent = get_path(model, parent_path)
    full = getattr(parent, name)

    def replace_input(module, args, kwargs):
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    handle = full[start].register_forward_pre_hook(replace_input, with_kwargs=True)
    setattr(parent, name, full[start:])
    try:
        yield
    finally:
        setattr(parent, name, full)
        handle.remove()


# ---------------------------------------------------------------- token positions and prompts

def subject_last_token(tokenizer, text: str, char_end: int) -> int:
    """Index of the token that holds character char_end - 1 of text (as encoded with special tokens)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        last = None
        for i, (start, end) in enumerate(enc["offset_mapping"]):
            if end > start and start < char_end:
                last = i
        if last is not None:
            return last
    # Slow tokenizers: ROME's way, the length of the encoded text up to the subject's end.
    return len(tokenizer(text[:char_end], add_special_tokens=True)["input_ids"]) - 1


def find_subject(prompt: str, subject: str) -> tuple[int, int] | None:
    """(start, end) characters of the subject in the prompt: exact match first, then case-insensitive."""
    at = prompt.find(subject)
    if at < 0:
        at = prompt.lower().find(subject.lower())
    return None if at < 0 or not subject else (at, at + len(subject))


def sample_texts(model, tokenizer, seeds: list[str], seed: int, device, *, new_tokens: int | None = None,
                 length: int | None = None) -> list[str]:
    """One text per seed word, sampled by the model itself (top-5, seeded): new_tokens tokens after the seed, or
    length tokens counting the seed's own (ROME's way of counting)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(s, add_special_tokens=True)["input_ids"] for s in seeds]
    width = max(len(e) for e in encoded)
    # Left padding so every row generates from its last real token.
    ids = torch.full((len(seeds), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seeds), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True, top_k=5,
                             max_new_tokens=new_tokens if new_tokens is not None else max(1, length - width),
                             pad_token_id=pad)
    return [" ".join(tokenizer.decode(gen[i, width - len(e):], skip_special_tokens=True).split())
            for i, e in enumerate(encoded)]


def generate_prefixes(model, tokenizer, n: int, length: int, seed: int, device) -> list[str]:
    """n short texts the model samples (seed words in turn, `length` new tokens each): the gradient methods'
    context prefixes and sampled retain texts."""
    if n == 0:
        return []
    return sample_texts(model, tokenizer, [PREFIX_SEEDS[i % len(PREFIX_SEEDS)] for i in range(n)], seed, device,
                        new_tokens=length)


def context_prefixes(model, tokenizer, templates, seed: int, device) -> list[list[str]]:
    """Short texts the model samples itself (top-5, seeded), one list per (length, count) pair of templates.

    ROME's context templates: for each pair, `count` samples from the seed words (each seed count // 5 times, in
    order, as ROME/EasyEdit's generate_fast draws them), `length` tokens long with the seed word's tokens, as ROME
    counts them. The texts are used as '<prefix>. <prompt>' contexts of an edit.
    """
    out = []
    for group, (length, count) in enumerate(templates):
        if count <= 0:
            out.append([])
            continue
        seeds = [s for s in PREFIX_SEEDS for _ in range(count // len(PREFIX_SEEDS))]
        seeds += list(PREFIX_SEEDS[: count % len(PREFIX_SEEDS)])
        # Each group its own stream, so adding a group leaves the others' texts as they were.
        out.append(sample_texts(model, tokenizer, seeds, seed + group, device, length=length))
    return out


@dataclass
class Rows:
    """The right-padded batch a set of edits is located and optimised on.

    Per edit: one row per context (the bare prompt first, then each prefix), each followed by the
    target tokens but the last, and one KL row ("{subject} is a"). Every row has a lookup position
    (the subject's last token) where keys are read and deltas are added.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lookup: torch.Tensor  # (rows,)
    request: torch.Tensor  # (rows,) edit index of each row
    is_kl: torch.Tensor  # (rows,) bool
    # One entry per target token: the row, the position whose logits predict it, and its id.
    tgt_row: torch.Tensor
    tgt_pos: torch.Tensor
    tgt_id: torch.Tensor
    n_target: torch.Tensor  # (edits,) target tokens of each edit
    raw_row: torch.Tensor  # (edits,) row of each edit's bare prompt
    kl_row: torch.Tensor  # (edits,)
    # (edits,) where the KL row's next-token distribution is read: the subject's last token (ROME/MEMIT's code)
    # or the row's last token, after "is a".
    kl_pos: torch.Tensor
    # (rows,) 0 for the bare prompt, g + 1 for a prefix of template group g, -1 for the KL row.
    context_type: torch.Tensor
    subject_found: list[bool]

    @property
    def n_edits(self) -> int:
        return len(self.raw_row)

    def to(self, device) -> Rows:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Rows(**moved)


def _groups(prefixes) -> list[list[str]]:
    """Prefixes as template groups; a flat list of texts is one group."""
    if prefixes and all(isinstance(p, str) for p in prefixes):
        return [list(prefixes)]
    return [list(g) for g in prefixes]


def build_rows(tokenizer, requests: list[EditRequest], prefixes, with_kl: bool = True,
               kl_at: Literal["subject", "end"] = "subject") -> Rows:
    """The rows of requests under every context; prefixes is a list of texts, or of template groups of texts."""
    groups = _groups(prefixes)
    contexts = [("", 0)] + [(text, g + 1) for g, group in enumerate(groups) for text in group]
    seqs: list[list[int]] = []
    lookup, request, is_kl, ctx_type = [], [], [], []
    tgt_row, tgt_pos, tgt_id, n_target, raw_row, kl_row, kl_pos, found = [], [], [], [], [], [], [], []
    for r_idx, req in enumerate(requests):
        target_ids = tokenizer(target_text(req), add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise ValueError(f"edit {req.case_id} ({req.source}): target_new {req.target_new!r} encodes to no tokens")
        span = find_subject(req.prompt, req.subject)
        found.append(span is not None)
        n_target.append(len(target_ids))
        for c_idx, (prefix, kind) in enumerate(contexts):
            head = f"{prefix}. " if prefix else ""
            text = head + req.prompt
            prompt_ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            # Without the subject in the prompt, the last prompt token stands in for it.
            at = subject_last_token(tokenizer, text, len(head) + span[1]) if span else len(prompt_ids) - 1
            row = len(seqs)
            if c_idx == 0:
                raw_row.append(row)
            seqs.append(prompt_ids + target_ids[:-1])
            lookup.append(min(at, len(prompt_ids) - 1))
            request.append(r_idx)
            is_kl.append(False)
            ctx_type.append(kind)
            for j, tok in enumerate(target_ids):
                tgt_row.append(row)
                tgt_pos.append(len(prompt_ids) - 1 + j)
                tgt_id.append(tok)
        if with_kl:
            text = KL_TEMPLATE.format(req.subject)
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            at = min(subject_last_token(tokenizer, text, len(req.subject)), len(ids) - 1)
            kl_row.append(len(seqs))
            kl_pos.append(at if kl_at == "subject" else len(ids) - 1)
            seqs.append(ids)
            lookup.append(at)
            request.append(r_idx)
            is_kl.append(True)
            ctx_type.append(-1)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    t = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return Rows(ids, mask, t(lookup), t(request), torch.tensor(is_kl, dtype=torch.bool), t(tgt_row), t(tgt_pos),
                t(tgt_id), t(n_target), t(raw_row), t(kl_row), t(kl_pos), t(ctx_type), found)


def mean_keys(keys: torch.Tensor, rows: Rows, by_type: bool = False) -> torch.Tensor:
    """(edits, mlp width): each edit's key at the subject's last token, averaged over its contexts.

    by_type: averaged within each template group first, then over the groups and the bare prompt (MEMIT's
    compute_ks, where the bare prompt weighs as much as all prefixes of a group); otherwise over all contexts
    alike (ROME's compute_u).
    """
    dev = keys.device
    picked = keys[torch.arange(len(rows.lookup), device=dev), rows.lookup.to(dev)].float()
    ctx = ~rows.is_kl.to(dev)
    req = rows.request.to(dev)[ctx]
    if not by_type:
        total = torch.zeros(rows.n_edits, picked.shape[-1], device=dev).index_add_(0, req, picked[ctx])
        count = torch.zeros(rows.n_edits, device=dev).index_add_(0, req, torch.ones_like(req, dtype=torch.float))
        return total / count[:, None]
    kind = rows.context_type.to(dev)[ctx]
    n_types = int(kind.max()) + 1
    cell = req * n_types + kind
    total = torch.zeros(rows.n_edits * n_types, picked.shape[-1], device=dev).index_add_(0, cell, picked[ctx])
    count = torch.zeros(rows.n_edits * n_types, device=dev).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float))
    means = (total / count.clamp(min=1)[:, None]).view(rows.n_edits, n_types, -1)
    present = (count > 0).view(rows.n_edits, n_types).float()
    return (means * present[..., None]).sum(1) / present.sum(1, keepdim=True)


def at_raw(tensor: torch.Tensor, rows: Rows) -> torch.Tensor:
    """(edits, dim): a recorded (rows, positions, dim) tensor at each edit's bare-prompt subject token."""
    raw = rows.raw_row.to(tensor.device)
    return tensor[raw, rows.lookup.to(tensor.device)[raw]].float()


def tail_keys(keys: torch.Tensor, rows: Rows, edit: int = 0) -> torch.Tensor:
    """(n, width): keys of an edit's bare-prompt row after its subject (rest of the prompt, target tokens)."""
    row = int(rows.raw_row[edit])
    end = int(rows.attention_mask[row].sum())
    return keys[row, int(rows.lookup[row]) + 1: end].float()
