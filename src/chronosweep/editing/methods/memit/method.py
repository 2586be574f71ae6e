"""MEMIT: a batch of edits spread over a window of MLP down-projections, solved in closed form.

Target hidden states z are optimised at the output of the window's last layer (editing.targets), all
edits on the unedited model. Then, layer by layer, the remaining residual z - h is divided over the
layers still to come and each down-projection gets the least-squares update
    dW = R K^T (lambda C + K K^T)^-1
with K the edits' keys at that layer (averaged over contexts) and C the cached key statistics, in fp64.
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
    down_proj,
    down_proj_path,
    generate_prefixes,
    mean_keys,
    record,
    tail_keys,
)
from chronosweep.editing.methods.memit.options import MemitOptions
from chronosweep.editing.stats import second_moments
from chronosweep.editing.targets import Site, optimize_targets


def spread_updates(model, arch, layers: list[int], z: torch.Tensor, key_rows: list[Rows], stats, lam: float,
                   preserve_tail: bool) -> list[dict]:
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
            keys.append(mean_keys(rec.keys[layer], rows))
            now.append(at_raw(rec.block_out[z_layer], rows))
            if preserve_tail:
                tails += [tail_keys(rec.keys[layer], rows, j) for j in range(rows.n_edits)]
        k = torch.cat(keys).double()  # (edits, mlp width)
        resid = (z - torch.cat(now).double()) / (len(layers) - i)  # (edits, hidden)
        cov = stats[layer].mom2.to(device=k.device, dtype=torch.float64)
        # Keys after the subject join the least-squares problem with a zero target: the update should
        # leave the rest of the prompt and the target tokens as the z optimisation saw them.
        k_all = torch.cat([k, *[t.double() for t in tails]]) if tails else k
        adj = torch.linalg.solve(lam * cov + k_all.T @ k_all, k.T)  # (mlp width, edits)
        update = resid.T @ adj.T  # (hidden, mlp width)
        add_to_weight(down_proj(model, arch, layer), arch, update)
        history.append({"stage": "update", "layer": layer, "lambda": lam, "residual_norm": float(resid.norm(dim=-1).mean()),
                        "update_norm": float(update.norm()), "stats_cached": stats[layer].cached,
                        "seconds": time.perf_counter() - t1})
    return history


class MEMIT:
    def edit(self, model, tokenizer, requests, options: MemitOptions, ctx: EditContext) -> EditOutcome:
        arch = arch_for(ctx.info.model_type)
        layers, device = list(options.layers), ctx.device
        z_layer = layers[-1]
        stats = second_moments(model, tokenizer, arch, layers, corpus=options.stats_corpus,
                               samples=options.stats_samples, fingerprint=ctx.info.fingerprint,
                               cache_dir=ctx.cache_dir, device=device)
        lam = options.mom2_update_weight
        prefixes = generate_prefixes(model, tokenizer, options.n_prefixes, options.prefix_tokens, ctx.runtime.seed, device)
        chunks = [requests[i:i + options.batch_size] for i in range(0, len(requests), options.batch_size)]
        history: list[dict] = []

        t0 = time.perf_counter()
        zs, missing = [], 0
        for c, chunk in enumerate(chunks):
            rows = build_rows(tokenizer, chunk, prefixes).to(device)
            missing += rows.subject_found.count(False)
            target = optimize_targets(model, arch, rows, Site("block", z_layer), options,
                                      desc=f"memit z (batch {c + 1}/{len(chunks)})")
            zs.append(target.target)
            for j, req in enumerate(chunk):
                history.append({"stage": "target", "edit": len(history), "case_id": req.case_id, "layer": z_layer,
                                **target.history[j], "subject_found": rows.subject_found[j],
                                "truncated": target.truncated, "seconds": target.seconds / len(chunk)})
        z = torch.cat(zs).double()
        z_seconds = time.perf_counter() - t0
        key_rows = [build_rows(tokenizer, chunk, prefixes, with_kl=False).to(device) for chunk in chunks]
        history += spread_updates(model, arch, layers, z, key_rows, stats, lam, options.preserve_tail)
        history.append({"stage": "total", "z_seconds": z_seconds, "n_edits": len(requests),
                        "seconds": time.perf_counter() - t0})
        if missing:
            warnings.warn(f"memit: {missing} of {len(requests)} edit prompts do not contain their subject; "
                          "their keys were read at the last prompt token instead", stacklevel=2)
        trainable = sum(down_proj(model, arch, layer).weight.numel() for layer in set(layers))
        names = [down_proj_path(arch, layer) + ".weight" for layer in layers]
        modules, edited_layers = edited(names, ctx.info)
        return EditOutcome(model=model, trainable_params=trainable, history=history, save=save_params(model, names),
                           edited_modules=modules, edited_layers=edited_layers)
