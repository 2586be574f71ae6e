"""Target values for locate-and-edit: the vector that makes the model say the new object.

A delta is added at the subject's last token of every row of an edit (ROME: to the down-projection
output of the edited layer; MEMIT: to the residual stream after the window's last layer) and
optimised with Adam so the new object's tokens become likely after every context, with a KL term on
"{subject} is a", a weight decay and a norm clamp (ROME's compute_v / MEMIT's compute_z).

Several edits are optimised in one batch: each edit's loss only reaches its own delta and Adam works
element-wise, so this is exactly the edits optimised one by one. An edit whose loss is low enough
leaves the batch. The layers before the delta never change, so their output is computed once and
every step runs only the layers after it, and the LM head only at the positions the loss reads.
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
    at_raw,
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
    truncated: bool  # whether steps ran only the layers after the delta (False: fell back to full passes)
    seconds: float


def _add_rows(hidden: torch.Tensor, row_idx: torch.Tensor, pos: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    add = torch.zeros_like(hidden)
    add = add.index_put((row_idx, pos), vec.to(hidden.dtype))
    return hidden + add


class _Tail:
    """Runs the model from the edit site to the logits at the loss positions, for a subset of rows."""

    def __init__(self, model, arch: Arch, rows: Rows, site: Site, hidden_in: torch.Tensor | None):
        self.model, self.arch, self.rows, self.site = model, arch, rows, site
        self.hidden_in = hidden_in  # input of block site.start for every row (None: run the full model)
        self.n_layers = len(blocks(model, arch))
        self.head = model.get_output_embeddings()

    # Rows run in this many length groups, each cut to its own longest row: bare prompts and KL rows
    # are half as long as prefixed ones, and padding them to one width wasted about a third of a step.
    BUCKETS = 3

    def logits(self, sel: torch.Tensor, delta_rows: torch.Tensor, pos_rows: torch.Tensor, pos: torch.Tensor):
        """Log-probs at (pos_rows, pos) of the rows sel, with delta_rows[i] added at row sel[i]'s lookup."""
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
        # Back to the caller's order of positions.
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
        return torch.log_softmax(self.head(hidden[pos_rows, pos]).float(), dim=-1)


def optimize_targets(model, arch: Arch, rows: Rows, site: Site, opts: LocateOptions, desc: str = "target") -> Targets:
    """Optimise one target vector per edit of rows; the model is not changed."""
    device = rows.input_ids.device
    n_layers = len(blocks(model, arch))
    mlp_layers = (site.layer,) if site.kind == "mlp" else ()
    block_in = (site.start,) if site.start < n_layers else ()
    block_out = (site.layer,) if site.kind == "block" else ()
    rec = record(model, arch, rows.input_ids, rows.attention_mask, mlp_layers=mlp_layers, block_in=block_in,
                 block_out=block_out)
    init = at_raw(rec.values[site.layer] if site.kind == "mlp" else rec.block_out[site.layer], rows)
    hidden_in = rec.block_in[site.start] if block_in else rec.block_out[site.layer]
    full_hidden = rec.last_hidden
    del rec

    head = model.get_output_embeddings()
    with torch.no_grad():
        kl_init = torch.log_softmax(head(full_hidden[rows.kl_row, rows.kl_pos]).float(), dim=-1)
        tgt_check = torch.log_softmax(head(full_hidden[rows.tgt_row, rows.tgt_pos]).float(), dim=-1)
    del full_hidden

    n = rows.n_edits
    delta = torch.zeros(n, init.shape[-1], device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=opts.v_lr)
    max_norm = opts.clamp_norm_factor * init.norm(dim=-1)
    init_sq = init.norm(dim=-1) ** 2
    active = torch.ones(n, dtype=torch.bool, device=device)
    stats = [{"steps": 0} for _ in range(n)]
    tail = _Tail(model, arch, rows, site, hidden_in)
    truncated = True
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
                logp = tail.logits(sel, delta[rows.request[sel]], pos_rows, pos)
                if step == 0 and truncated and hidden_in is not None:
                    # Running only the later layers must reproduce the full pass exactly (delta is 0 here).
                    err = (logp[: len(t_rows)] - tgt_check[t_keep]).abs().max().item()
                    if not err < _tolerance(model):
                        truncated = False
                        tail = _Tail(model, arch, rows, site, None)
                        logp = tail.logits(sel, delta[rows.request[sel]], pos_rows, pos)
                tok_logp = logp[: len(t_rows)].gather(1, t_ids[:, None]).squeeze(1)
                kl_logp = logp[len(t_rows):]
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
    return Targets(init=init, target=init + delta, history=stats, truncated=truncated, seconds=seconds)


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
