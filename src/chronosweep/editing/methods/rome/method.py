"""ROME: one rank-one rewrite of an MLP down-projection per edit, edits applied one after another.

Per edit: the key k is the down-projection input at the subject's last token, averaged over the bare
prompt and a few model-generated context prefixes; the target value v is optimised so the new object
follows (editing.targets); the update W += (v - W k0) u^T / (u^T k0), u = C^-1 k, maps the bare
prompt's key k0 onto v while disturbing keys least under the key statistics C (editing.stats).

Edits of one trial share templates ("The head of state in X is"), so their keys are close: a later
rank-one update would overwrite an earlier edit (measured on SmolLM2: the update for "head of
government in Italy" moves "head of state in Italy" by 100% of its own change, China's by 20%). With
preserve_earlier (default), u is the least-change direction under C with u^T k = 1 that also has
u^T k_j = 0 for the keys of this trial's earlier edits: u = C^-1 K (K^T C^-1 K)^-1 e1 with
K = [k, k_1 ... k_m]. Each update is still rank one and leaves the earlier edits exactly in place;
with no earlier edits it is ROME's C^-1 k. The keys include those after the subject (the rest of the
prompt and the target tokens): with preserve_tail the edit's own are among them too, so the update
changes only the subject token, which is all the value optimisation assumed. Multi-token objects
otherwise drift after their first token ("Sergio Mattarelli"). On 6 DyKnow edits: plain ROME 4/6
land, preserve_earlier 5/6, both 6/6.
"""

from __future__ import annotations

import time
import warnings

import torch
from tqdm.auto import tqdm

from chronosweep.core.archs import arch_for
from chronosweep.editing.base import EditContext, EditOutcome, edited, save_params
from chronosweep.editing.locate import (
    at_raw,
    build_rows,
    down_proj,
    down_proj_path,
    generate_prefixes,
    mean_keys,
    record,
    tail_keys,
)
from chronosweep.editing.methods.rome.options import RomeOptions
from chronosweep.editing.stats import second_moments
from chronosweep.editing.targets import Site, optimize_targets, rank_one_update


def update_direction(solve, key: torch.Tensor, earlier: list[torch.Tensor]) -> torch.Tensor:
    """u with u^T key = 1 and u^T k = 0 for the earlier keys, least change under C (ROME's C^-1 key when none)."""
    keys = torch.stack([key, *earlier], dim=1).double()  # (width, 1 + m)
    whitened = solve(keys) if solve is not None else keys
    gram = keys.T @ whitened
    # lstsq: an earlier key equal to this one (or a combination of others) leaves the system singular.
    coef = torch.linalg.lstsq(gram, torch.eye(len(gram), 1, dtype=gram.dtype, device=gram.device)).solution
    u = (whitened @ coef).squeeze(1)
    return (u / u.norm()).float()


class ROME:
    def edit(self, model, tokenizer, requests, options: RomeOptions, ctx: EditContext) -> EditOutcome:
        arch = arch_for(ctx.info.model_type)
        layer, device = options.layer, ctx.device
        solve = None
        stats_cached = None
        if options.mom2_adjustment:
            stats = second_moments(model, tokenizer, arch, [layer], corpus=options.stats_corpus,
                                   samples=options.stats_samples, fingerprint=ctx.info.fingerprint,
                                   cache_dir=ctx.cache_dir, device=device)[layer]
            stats_cached = stats.cached
            cov = stats.mom2.to(device=device, dtype=torch.float64)
            solve = lambda k: torch.linalg.solve(cov, k.double())  # noqa: E731
        prefixes = generate_prefixes(model, tokenizer, options.n_prefixes, options.prefix_tokens, ctx.runtime.seed, device)
        history: list[dict] = []
        missing = 0
        # Keys of the edits applied so far, by prompt: a prompt edited again drops its old constraint.
        earlier: dict[str, list[torch.Tensor]] = {}
        for i, req in enumerate(tqdm(requests, desc="rome", unit="edit", dynamic_ncols=True)):
            t0 = time.perf_counter()
            rows = build_rows(tokenizer, [req], prefixes).to(device)
            missing += not rows.subject_found[0]
            # Keys on the model as edited so far: earlier edits may have moved them.
            rec = record(model, arch, rows.input_ids, rows.attention_mask, mlp_layers=(layer,), stop=True)
            key_mean, key_raw = mean_keys(rec.keys[layer], rows)[0], at_raw(rec.keys[layer], rows)[0]
            tail = list(tail_keys(rec.keys[layer], rows))
            del rec
            earlier.pop(req.prompt, None)
            kept = [k for ks in earlier.values() for k in ks] if options.preserve_earlier else []
            left = update_direction(solve, key_mean, kept + (tail if options.preserve_tail else []))
            target = optimize_targets(model, arch, rows, Site("mlp", layer), options, desc=f"rome v* {i + 1}")
            delta = rank_one_update(model, arch, layer, key_raw, left, target.init[0], target.target[0])
            # The bare prompt's key (what the update maps), the context average (what generalises) and
            # the keys after the subject (what carries the answer on).
            earlier[req.prompt] = [key_raw, key_mean, *tail]
            history.append({"edit": i, "case_id": req.case_id, "layer": layer, **target.history[0],
                            "update_norm": float(delta.norm()), "subject_found": rows.subject_found[0],
                            "truncated": target.truncated, "stats_cached": stats_cached,
                            "seconds": time.perf_counter() - t0})
        if missing:
            warnings.warn(f"rome: {missing} of {len(requests)} edit prompts do not contain their subject; "
                          "their key was read at the last prompt token instead", stacklevel=2)
        trainable = down_proj(model, arch, layer).weight.numel()
        names = [down_proj_path(arch, layer) + ".weight"]
        modules, layers = edited(names, ctx.info)
        return EditOutcome(model=model, trainable_params=trainable, history=history, save=save_params(model, names),
                           edited_modules=modules, edited_layers=layers)
