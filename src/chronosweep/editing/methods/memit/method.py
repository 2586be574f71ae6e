"""MEMIT (Meng et al., 2023) as kmeng01/memit implements it, and chronosweep's variant memit-preserve.

Target hidden states z are optimised at the output of the window's last layer (compute_z, editing.targets), all
edits on the model as it is. Then, layer by layer, on the model as updated so far, the remaining residual z - h at
each edit's subject is divided over the layers still to come and each down-projection gets the least-squares update
    dW = R K^T (lambda C + K K^T)^-1
with K the edits' keys at that layer and C the cached key statistics, in fp64. A key is averaged within each group
of context templates first, then over the groups and the bare prompt (compute_ks).

memit-preserve, chronosweep's variant: the keys after the subject (the rest of the prompt, the target tokens) join
the least-squares problem with a zero target (preserve_tail), keys are a plain average over all contexts, the KL
term is read after "{subject} is a" rather than at the subject token; its SmolLM2 preset uses one template and
lambda 500.
"""

from __future__ import annotations

import time
import warnings

import torch
from tqdm.auto import tqdm

from chronosweep.core.archs import arch_for
from chronosweep.editing.base import EditContext, EditOutcome, edited, save_params
from chronosweep.editing.locate import (
    Rows,
    add_to_weight,
    at_raw,
    build_rows,
    context_prefixes,
    down_proj,
    down_proj_path,
    mean_keys,
    record,
    tail_keys,
)
from chronosweep.editing.methods.memit.options import MemitOptions
from chronosweep.editing.stats import second_moments
from chronosweep.editing.targets import Site, optimize_targets


def spread_updates(model, arch, layers: list[int], z: torch.Tensor, key_rows: list[Rows], stats, lam: float,
                   preserve_tail: bool, keys_by_type: bool) -> list[dict]:
    """Move the target layer's output at each edit's subject toward z, dividing the residual over the layers."""
    z_layer = layers[-1]
    history = []
    for i, layer in enumerate(tqdm(layers, desc="memit layers", unit="layer", dynamic_ncols=True)):
        t1 = time.perf_counter()
        keys, now, tails = [], [], []
        for rows in key_rows:
            # On the model as updated so far; stops after the target layer.
            rec = record(model, arch, rows.input_ids, rows.attention_mask, mlp_layers=(layer,),
                         block_out=(z_layer,), stop=True)
            keys.append(mean_keys(rec.keys[layer], rows, by_type=keys_by_type))
            now.append(at_raw(rec.block_out[z_layer], rows))
            if preserve_tail:
                tails += [tail_keys(rec.keys[layer], rows, j) for j in range(rows.n_edits)]
        k = torch.cat(keys).double()  # (edits, mlp width)
        resid = (z - torch.cat(now).double()) / (len(layers) - i)  # (edits, hidden)
        cov = stats[layer].mom2.to(device=k.device, dtype=torch.float64)
        # memit-preserve: keys after the subject join the least-squares problem with a zero target.
        k_all = torch.cat([k, *[t.double() for t in tails]]) if tails else k
        adj = torch.linalg.solve(lam * cov + k_all.T @ k_all, k.T)  # (mlp width, edits)
        update = resid.T @ adj.T  # (hidden, mlp width)
        add_to_weight(down_proj(model, arch, layer), arch, update)
        history.append({"stage": "update", "layer": layer, "lambda": lam, "residual_norm": float(resid.norm(dim=-1).mean()),
                        "update_norm": float(update.norm()), "stats_cached": stats[layer].cached,
                        "seconds": time.perf_counter() - t1})
    return history


class MEMIT:
    """The published algorithm. One instance serves a whole trial: the templates are sampled once."""

    NAME = "memit"
    KL_AT = "subject"
    KEYS_BY_TYPE = True

    def __init__(self):
        self._prefixes: dict[tuple, list[list[str]]] = {}

    def preserve_tail(self, options) -> bool:
        return False

    def changes(self, model, options: MemitOptions, ctx: EditContext) -> list[str]:
        """The parameters edit() rewrites in place (what an exact restore copies)."""
        arch = arch_for(ctx.info.model_type)
        return [down_proj_path(arch, layer) + ".weight" for layer in options.layers]

    def edit(self, model, tokenizer, requests, options: MemitOptions, ctx: EditContext) -> EditOutcome:
        arch = arch_for(ctx.info.model_type)
        layers, device = list(options.layers), ctx.device
        z_layer = layers[-1]
        stats = second_moments(model, tokenizer, arch, layers, corpus=options.stats_corpus,
                               samples=options.stats_samples, fingerprint=ctx.info.fingerprint,
                               cache_dir=ctx.cache_dir, device=device)
        lam = options.mom2_update_weight
        key = (ctx.info.fingerprint, ctx.runtime.seed, tuple(map(tuple, options.context_templates)))
        if key not in self._prefixes:
            self._prefixes[key] = context_prefixes(model, tokenizer, options.context_templates, ctx.runtime.seed, device)
        prefixes = self._prefixes[key]
        chunks = [requests[i:i + options.batch_size] for i in range(0, len(requests), options.batch_size)]
        history: list[dict] = []

        t0, c0 = time.perf_counter(), time.process_time()
        zs, missing = [], 0
        for c, chunk in enumerate(chunks):
            rows = build_rows(tokenizer, chunk, prefixes, kl_at=self.KL_AT).to(device)
            missing += rows.subject_found.count(False)
            target = optimize_targets(model, arch, rows, Site("block", z_layer), options,
                                      desc=f"{self.NAME} z (batch {c + 1}/{len(chunks)})")
            zs.append(target.target)
            for j, req in enumerate(chunk):
                history.append({"stage": "target", "edit": len(history), "case_id": req.case_id, "layer": z_layer,
                                **target.history[j], "subject_found": rows.subject_found[j],
                                "truncated": target.truncated, "tail_mode": target.mode,
                                "seconds": target.seconds / len(chunk)})
        z = torch.cat(zs).double()
        z_seconds = time.perf_counter() - t0
        key_rows = [build_rows(tokenizer, chunk, prefixes, with_kl=False).to(device) for chunk in chunks]
        history += spread_updates(model, arch, layers, z, key_rows, stats, lam, self.preserve_tail(options),
                                  self.KEYS_BY_TYPE)
        history.append({"stage": "total", "z_seconds": z_seconds, "n_edits": len(requests),
                        "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})
        if missing:
            warnings.warn(f"{self.NAME}: {missing} of {len(requests)} edit prompts do not contain their subject; "
                          "their keys were read at the last prompt token instead", stacklevel=2)
        trainable = sum(down_proj(model, arch, layer).weight.numel() for layer in set(layers))
        names = [down_proj_path(arch, layer) + ".weight" for layer in layers]
        modules, edited_layers = edited(names, ctx.info)
        return EditOutcome(model=model, trainable_params=trainable, history=history, save=save_params(model, names),
                           edited_modules=modules, edited_layers=edited_layers)


class MEMITPreserve(MEMIT):
    """memit-preserve: the keys after the subject kept in place, flat key averages, KL after "is a"."""

    NAME = "memit-preserve"
    KL_AT = "end"
    KEYS_BY_TYPE = False

    def preserve_tail(self, options) -> bool:
        return options.preserve_tail
