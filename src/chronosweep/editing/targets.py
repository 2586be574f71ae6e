"""Target values for locate-and-edit: the vector that makes the model say the new object.

A delta is added at the subject's last token of every row of an edit (ROME: to the down-projection
output of the edited layer; MEMIT: to the residual stream after the window's last layer) and
optimised with Adam so the new object's tokens become likely after every context, with a KL term on
"{subject} is a", a weight decay and a norm clamp (ROME's compute_v / MEMIT's compute_z).

Several edits are optimised in one batch: each edit's loss only reaches its own delta and Adam works
element-wise, so this is exactly the edits optimised one by one. An edit whose loss is low enough
leaves the batch.

Most of each step's work never changes: the layers before the delta, and (the model being causal) every
position before the subject's last token. So the rows are laid out with their subject tokens in one
column, the attention keys and values of everything before it are computed once, and every step runs
only the positions from the subject on through the layers from the delta on, each row only as far as the
last position its loss reads (rows grouped by that width), and the LM head only at those positions
(_CachedTail). On the first step the result is compared with a plain full
pass; an architecture where it differs falls back to running all positions of the later layers, then to
full passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from chronosweep.core.archs import Arch, get_path
from chronosweep.editing.locate import (
    Rows,
    add_to_weight,
    block_output,
    blocks,
    down_proj,
    frozen,
    record,
    replace_block_output,
    start_at,
)
from chronosweep.editing.locate_options import LocateOptions


@dataclass(frozen=True)
class Site:
    # "mlp": the down-projection output of `layer` (ROME); "block": the output of block `layer` (MEMIT).
    kind: Literal["mlp", "block"]
    layer: int

    @property
    def start(self) -> int:
        """First block whose computation the delta changes."""
        return self.layer if self.kind == "mlp" else self.layer + 1


@dataclass
class Targets:
    init: torch.Tensor  # (edits, hidden) value before the edit, at the bare prompt
    target: torch.Tensor  # (edits, hidden) init + optimised delta
    history: list[dict]  # one per edit: loss parts, steps taken
    # How the steps ran: "cached" (later positions of later layers), "truncated" (all positions of the later
    # layers) or "full" (whole passes, where the shortcuts did not reproduce a full pass).
    mode: str
    seconds: float

    @property
    def truncated(self) -> bool:
        return self.mode != "full"


def _add_rows(hidden: torch.Tensor, row_idx: torch.Tensor, pos: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    add = torch.zeros_like(hidden)
    add = add.index_put((row_idx, pos), vec.to(hidden.dtype))
    return hidden + add


class _Tail:
    """Runs the model from the edit site to the final hidden states at the loss positions, for a subset of rows."""

    def __init__(self, model, arch: Arch, rows: Rows, site: Site, hidden_in: torch.Tensor | None):
        self.model, self.arch, self.rows, self.site = model, arch, rows, site
        self.hidden_in = hidden_in  # input of block site.start for every row (None: run the full model)
        self.n_layers = len(blocks(model, arch))

    # Rows run in this many length groups, each cut to its own longest row: bare prompts and KL rows
    # are half as long as prefixed ones, and padding them to one width wasted about a third of a step.
    BUCKETS = 3

    def hidden(self, sel: torch.Tensor, delta_rows: torch.Tensor, pos_rows: torch.Tensor, pos: torch.Tensor):
        """Final hidden states at (pos_rows, pos) of the rows sel, with delta_rows[i] added at row sel[i]'s lookup."""
        lengths = self.rows.attention_mask[sel].sum(1)
        groups = torch.argsort(lengths, stable=True).tensor_split(min(self.BUCKETS, len(sel)))
        parts, which = [], []
        for group in groups:
            local = torch.full((len(sel),), -1, dtype=torch.long, device=sel.device)
            local[group] = torch.arange(len(group), device=sel.device)
            mine = torch.nonzero(local[pos_rows] >= 0).squeeze(1)
            if len(mine) == 0:
                continue
            parts.append(self._run(sel[group], delta_rows[group], local[pos_rows[mine]], pos[mine]))
            which.append(mine)
        # Back to the caller's order of positions (hidden states: the vocabulary-wide tensors come later, once).
        return torch.cat(parts)[torch.argsort(torch.cat(which))]

    def _run(self, sel: torch.Tensor, delta_rows: torch.Tensor, pos_rows: torch.Tensor, pos: torch.Tensor):
        rows, model, arch, site = self.rows, self.model, self.arch, self.site
        # Right padding: everything past the group's longest row is padding.
        width = int(rows.attention_mask[sel].sum(1).max())
        ids, mask, lookup = rows.input_ids[sel, :width], rows.attention_mask[sel, :width], rows.lookup[sel]
        local = torch.arange(len(sel), device=ids.device)
        handles = []
        if site.kind == "mlp":
            def add_value(module, args, output):
                return _add_rows(output, local, lookup, delta_rows)
            handles.append(down_proj(model, arch, site.layer).register_forward_hook(add_value))
        try:
            if self.hidden_in is None:
                if site.kind == "block":
                    def add_hidden(module, args, output):
                        return replace_block_output(output, _add_rows(block_output(output), local, lookup, delta_rows))
                    handles.append(blocks(model, arch)[site.layer].register_forward_hook(add_hidden))
                hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            else:
                h0 = self.hidden_in[sel, :width]
                if site.kind == "block":
                    h0 = _add_rows(h0, local, lookup, delta_rows)
                if site.start >= self.n_layers:
                    hidden = get_path(model, arch.final_norm)(h0)
                else:
                    with start_at(model, arch, site.start, h0):
                        hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        finally:
            for h in handles:
                h.remove()
        return hidden[pos_rows, pos]


class _CachedTail:
    """Steps over the positions from each row's subject token on, in the layers from the edit site on.

    Row i is laid out as [padding, its tokens before the subject's last token, the rest, padding], so every
    row's subject token sits in column `head`. One no-grad pass records the attention keys and values of the
    columns before it and the input of the first block the delta changes; a step then runs that block and the
    later ones on the columns from `head` on only, attending to the recorded keys and values.
    """

    def __init__(self, model, arch: Arch, rows: Rows, site: Site):
        from transformers import DynamicCache

        self.model, self.arch, self.rows, self.site = model, arch, rows, site
        self.n_layers = len(blocks(model, arch))
        lengths = rows.attention_mask.sum(1)
        lookup = rows.lookup
        self.head = head = int(lookup.max())
        tail = int((lengths - lookup).max())
        n, dev = len(lookup), rows.input_ids.device
        pad = int(rows.input_ids[0, -1]) if rows.attention_mask[0, -1] == 0 else 0
        ids = torch.full((n, head + tail), pad, dtype=torch.long, device=dev)
        mask = torch.zeros((n, head + tail), dtype=torch.long, device=dev)
        for i in range(n):
            at, length = int(lookup[i]), int(lengths[i])
            ids[i, head - at: head - at + length] = rows.input_ids[i, :length]
            mask[i, head - at: head - at + length] = 1
        self.ids, self.mask = ids, mask
        self.pos = (mask.cumsum(1) - 1).clamp(min=0)
        captured: dict[str, torch.Tensor] = {}
        handles = []
        if site.start < self.n_layers:
            def grab(module, args, kwargs):
                captured["h"] = (args[0] if args else kwargs["hidden_states"]).detach()
            handles.append(blocks(model, arch)[site.start].register_forward_pre_hook(grab, with_kwargs=True))
        else:
            def grab_out(module, args, output):
                captured["h"] = block_output(output).detach()
            handles.append(blocks(model, arch)[site.layer].register_forward_hook(grab_out))
        cache = DynamicCache()
        try:
            with torch.no_grad():
                model.base_model(input_ids=ids, attention_mask=mask, position_ids=self.pos, cache=cache, use_cache=True)
        finally:
            for h in handles:
                h.remove()
        # Keys and values of the columns before the subject, every layer (the mask sizes are read from layer 0).
        self.kv = [(layer.keys[..., :head, :], layer.values[..., :head, :]) for layer in cache.layers]
        self.h_tail = captured["h"][:, head:]

    def hidden(self, sel: torch.Tensor, delta_rows: torch.Tensor, pos_rows: torch.Tensor, pos: torch.Tensor):
        """Final hidden states at (pos_rows, pos) of the rows sel, with delta_rows[i] added at row sel[i]'s subject
        token."""
        cols = pos - self.rows.lookup[sel[pos_rows]]
        # Columns each row needs: up to the last position the loss reads in it (a KL row read at the subject needs
        # one). Rows run in groups cut to their own widest need, so short tails are not padded to the longest.
        need = torch.ones(len(sel), dtype=torch.long, device=sel.device).scatter_reduce(0, pos_rows, cols + 1, "amax")
        parts, which = [], []
        for group, width in width_groups(need):
            local = torch.full((len(sel),), -1, dtype=torch.long, device=sel.device)
            local[group] = torch.arange(len(group), device=sel.device)
            mine = torch.nonzero(local[pos_rows] >= 0).squeeze(1)
            if len(mine) == 0:
                continue
            parts.append(self._run(sel[group], delta_rows[group], width, local[pos_rows[mine]], cols[mine]))
            which.append(mine)
        return torch.cat(parts)[torch.argsort(torch.cat(which))]

    def _run(self, sel: torch.Tensor, delta_rows: torch.Tensor, width: int, pos_rows: torch.Tensor,
             cols: torch.Tensor):
        from transformers import DynamicCache

        model, arch, site = self.model, self.arch, self.site
        local = torch.arange(len(sel), device=sel.device)
        first = torch.zeros_like(local)
        h0 = self.h_tail[sel, :width]
        handles = []
        if site.kind == "mlp":
            def add_value(module, args, output):
                return _add_rows(output, local, first, delta_rows)
            handles.append(down_proj(model, arch, site.layer).register_forward_hook(add_value))
        else:
            h0 = _add_rows(h0, local, first, delta_rows)
        end = self.head + width
        try:
            if site.start >= self.n_layers:
                hidden = get_path(model, arch.final_norm)(h0)
            else:
                cache = DynamicCache(ddp_cache_data=[(k[sel], v[sel]) for k, v in self.kv])
                with start_at(model, arch, site.start, h0):
                    hidden = model.base_model(input_ids=self.ids[sel, self.head:end],
                                              attention_mask=self.mask[sel, :end],
                                              position_ids=self.pos[sel, self.head:end], cache=cache,
                                              use_cache=True).last_hidden_state
        finally:
            for h in handles:
                h.remove()
        return hidden[pos_rows, cols]


# A group costs about this many rows' worth of tokens on its own (one more pass through the later layers'
# kernels); fewer, wider groups win below it.
_GROUP_COST = 16


def width_groups(need: torch.Tensor, max_groups: int = 4) -> list[tuple[torch.Tensor, int]]:
    """Rows grouped by the columns they need, each group with its width: the split of the sorted widths into at
    most max_groups runs that runs the fewest padded tokens (plus _GROUP_COST per group)."""
    widths = sorted(set(need.tolist()))
    counts = [int((need == w).sum()) for w in widths]
    k = len(widths)
    # best[g][j]: least cost of the first j widths in g groups; cut[g][j]: where its last group starts.
    inf = float("inf")
    best = [[inf] * (k + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (k + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0.0
    for g in range(1, max_groups + 1):
        for j in range(1, k + 1):
            for i in range(j):
                c = best[g - 1][i] + sum(counts[i:j]) * widths[j - 1] + _GROUP_COST
                if c < best[g][j]:
                    best[g][j], cut[g][j] = c, i
    g = min(range(1, max_groups + 1), key=lambda n: best[n][k])
    bounds, j = [], k
    while g > 0:
        i = cut[g][j]
        bounds.append((i, j))
        j, g = i, g - 1
    groups = []
    for i, j in reversed(bounds):
        rows = torch.nonzero((need >= widths[i]) & (need <= widths[j - 1])).squeeze(1)
        groups.append((rows, widths[j - 1]))
    return groups


class _TargetLogProbs(torch.autograd.Function):
    """log_softmax(h W^T + b)[ids], row by row, in one reused (rows, vocabulary) buffer.

    The plain way (log_softmax, then gather) makes several vocabulary-wide tensors a step, forward and backward
    (75 MB each with MEMIT's 380 target positions); in a profile of ROME's steps, filling, indexing and copying them
    cost more than the output head's matrix products. Here the buffer holds the logits, then exp(logit - max)
    in place, and the backward turns that into the gradient in place; the next step writes it again. So the graph
    can be run backward once only (no retain_graph), and before the next call.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, ids, buffer):
        buf = buffer[: len(h)]
        torch.mm(h, weight.T, out=buf)
        if bias is not None:
            buf.add_(bias)
        picked = buf.gather(1, ids[:, None]).squeeze(1)
        top = buf.amax(-1, keepdim=True)
        total = buf.sub_(top).exp_().sum(-1)
        ctx.save_for_backward(h, weight, ids, total)
        ctx.buf, ctx.has_bias = buf, bias is not None
        return picked - top.squeeze(-1) - total.log()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        h, weight, ids, total = ctx.saved_tensors
        # d out_i / d logit_ij = [j = ids_i] - softmax_ij, and the buffer holds softmax_ij * total_i.
        g = ctx.buf.mul_((-grad / total)[:, None])
        g[torch.arange(len(ids), device=ids.device), ids] += grad
        grad_h = g @ weight if ctx.needs_input_grad[0] else None
        grad_w = g.T @ h if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None, None


class TargetLogProbs:
    """The log-probability of token ids[i] after final hidden state hidden[i] (output head, log_softmax), for a
    loop of steps: fp32 Linear heads reuse one buffer of the largest size seen (_TargetLogProbs), others take the
    plain path."""

    def __init__(self, head: torch.nn.Module):
        self.head = head
        self.buffer: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        head = self.head
        if type(head) is not torch.nn.Linear or hidden.dtype != torch.float32 or head.weight.dtype != torch.float32:
            return torch.log_softmax(head(hidden).float(), dim=-1).gather(1, ids[:, None]).squeeze(1)
        if self.buffer is None or len(self.buffer) < len(hidden):
            self.buffer = torch.empty(len(hidden), head.weight.shape[0], device=hidden.device)
        return _TargetLogProbs.apply(hidden, head.weight, head.bias, ids, self.buffer)


def optimize_targets(model, arch: Arch, rows: Rows, site: Site, opts: LocateOptions, desc: str = "target") -> Targets:
    """Optimise one target vector per edit of rows; the model is not changed."""
    device = rows.input_ids.device
    n_layers = len(blocks(model, arch))
    n = rows.n_edits
    mlp_layers = (site.layer,) if site.kind == "mlp" else ()
    block_in = (site.start,) if site.start < n_layers else ()
    block_out = (site.layer,) if site.kind == "block" else ()
    # A plain full pass over each edit's bare prompt and KL row only: the value the delta starts from, the KL term's
    # reference distribution, and what the first step's shortcut must reproduce.
    ref = torch.cat([rows.raw_row, rows.kl_row]).to(device)
    width = int(rows.attention_mask[ref].sum(1).max())
    rec = record(model, arch, rows.input_ids[ref, :width], rows.attention_mask[ref, :width], mlp_layers=mlp_layers,
                 block_out=block_out)
    value = rec.values[site.layer] if site.kind == "mlp" else rec.block_out[site.layer]
    raw_local, kl_local = torch.arange(n, device=device), torch.arange(n, 2 * n, device=device)
    init = value[raw_local, rows.lookup[rows.raw_row]].float()
    head = model.get_output_embeddings()
    target_logp = TargetLogProbs(head)
    ref_of = torch.full((len(rows.lookup),), -1, dtype=torch.long, device=device)
    ref_of[rows.raw_row] = raw_local
    checked = torch.nonzero(ref_of[rows.tgt_row] >= 0).squeeze(1)  # target entries on bare-prompt rows
    with torch.no_grad():
        kl_init = torch.log_softmax(head(rec.last_hidden[kl_local, rows.kl_pos]).float(), dim=-1)
        tgt_check = torch.log_softmax(head(rec.last_hidden[ref_of[rows.tgt_row[checked]], rows.tgt_pos[checked]]).float(),
                                      dim=-1)
    del rec, value

    def hidden_in() -> torch.Tensor:
        """Input of the first changed block for every row (the fallback without the cached keys and values)."""
        full = record(model, arch, rows.input_ids, rows.attention_mask, block_in=block_in, block_out=block_out,
                      stop=True)
        return full.block_in[site.start] if block_in else full.block_out[site.layer]

    delta = torch.zeros(n, init.shape[-1], device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=opts.v_lr)
    max_norm = opts.clamp_norm_factor * init.norm(dim=-1)
    init_sq = init.norm(dim=-1) ** 2
    active = torch.ones(n, dtype=torch.bool, device=device)
    stats = [{"steps": 0} for _ in range(n)]
    tail, mode = None, ""
    n_ctx = torch.zeros(n, device=device).index_add_(0, rows.request[~rows.is_kl],
                                                     torch.ones(int((~rows.is_kl).sum()), device=device))
    t0 = time.perf_counter()
    bar = tqdm(total=opts.v_num_grad_steps, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    try:
        with frozen(model):
            for step in range(opts.v_num_grad_steps):
                sel = torch.nonzero(active[rows.request]).squeeze(1)
                # Positions the loss reads, renumbered to rows of the selection.
                local_of = torch.full((len(rows.lookup),), -1, dtype=torch.long, device=device)
                local_of[sel] = torch.arange(len(sel), device=device)
                t_keep = active[rows.request[rows.tgt_row]]
                t_rows, t_pos, t_ids = rows.tgt_row[t_keep], rows.tgt_pos[t_keep], rows.tgt_id[t_keep]
                t_req = rows.request[t_rows]
                edits = torch.nonzero(active).squeeze(1)
                pos_rows = torch.cat([local_of[t_rows], local_of[rows.kl_row[edits]]])
                pos = torch.cat([t_pos, rows.kl_pos[edits]])
                n_t = len(t_rows)
                if tail is None:
                    # The shortcuts must reproduce the full pass (delta is 0 here); the first that does is used.
                    for mode, make in _tails(model, arch, rows, site, hidden_in):
                        try:
                            tail = make()
                            hid = tail.hidden(sel, delta[rows.request[sel]], pos_rows, pos)
                        except (TypeError, ValueError, RuntimeError, KeyError, AttributeError, IndexError):
                            if mode == "full":
                                raise
                            continue
                        kl_logp = torch.log_softmax(head(hid[n_t:]).float(), dim=-1)
                        with torch.no_grad():
                            got = torch.log_softmax(head(hid[:n_t][checked]).float(), dim=-1)
                        err = max((got - tgt_check).abs().max().item(), (kl_logp.detach() - kl_init).abs().max().item())
                        if err < _tolerance(model) or mode == "full":
                            break
                else:
                    hid = tail.hidden(sel, delta[rows.request[sel]], pos_rows, pos)
                    kl_logp = torch.log_softmax(head(hid[n_t:]).float(), dim=-1)
                tok_logp = target_logp(hid[:n_t], t_ids)
                # ROME's nll: per context, the summed target log-prob over the target length; mean over contexts.
                nll = torch.zeros(n, device=device).index_add(0, t_req, -tok_logp)
                nll = nll / (rows.n_target.to(device) * n_ctx)
                kl = torch.zeros(n, device=device)
                kl[edits] = F.kl_div(kl_init[edits], kl_logp, log_target=True, reduction="none").sum(-1)
                decay = opts.v_weight_decay * delta.norm(dim=-1) / init_sq
                loss = nll + opts.kl_factor * kl + decay
                with torch.no_grad():
                    for i in edits.tolist():
                        stats[i].update(loss=float(loss[i]), nll=float(nll[i]), kl=float(kl[i]),
                                        prob=float(torch.exp(-nll[i])))
                    done = active & (loss.detach() < opts.v_stop_loss)
                    active &= ~done
                bar.update(1)
                bar.set_postfix(active=int(active.sum()), loss=f"{float(loss.detach()[edits].mean()):.3f}")
                if not active.any() or step == opts.v_num_grad_steps - 1:
                    break
                before = delta.detach().clone()
                opt.zero_grad(set_to_none=True)
                loss[active].sum().backward()
                opt.step()
                with torch.no_grad():
                    # Adam's momentum would keep moving finished edits: put them back.
                    delta[~active] = before[~active]
                    norms = delta.norm(dim=-1)
                    over = norms > max_norm
                    delta[over] *= (max_norm[over] / norms[over])[:, None]
                for i in torch.nonzero(active).squeeze(1).tolist():
                    stats[i]["steps"] += 1
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    delta = delta.detach()
    for i in range(n):
        stats[i].update(delta_norm=float(delta[i].norm()), init_norm=float(init[i].norm()))
    return Targets(init=init, target=init + delta, history=stats, mode=mode, seconds=seconds)


def _tails(model, arch: Arch, rows: Rows, site: Site, hidden_in):
    """(mode, constructor) from the cheapest way to run a step to the always-correct one."""
    yield "cached", lambda: _CachedTail(model, arch, rows, site)
    yield "truncated", lambda: _Tail(model, arch, rows, site, hidden_in())
    yield "full", lambda: _Tail(model, arch, rows, site, None)


def _tolerance(model) -> float:
    dtype = next(model.parameters()).dtype
    return 1e-3 if dtype == torch.float32 else 5e-2


def rank_one_update(model, arch: Arch, layer: int, key: torch.Tensor, left: torch.Tensor, value_now: torch.Tensor,
                    value_target: torch.Tensor) -> torch.Tensor:
    """ROME's update W += right left^T with right chosen so the key maps onto the target value; returns it."""
    right = (value_target - value_now) / torch.dot(key, left)
    delta = torch.outer(right, left)
    add_to_weight(down_proj(model, arch, layer), arch, delta)
    return delta
