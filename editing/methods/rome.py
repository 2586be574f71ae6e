"""ROME: one rank-one rewrite of an MLP down-projection per edit, edits applied one after another.

Per edit: the key k is the down-projection input at the subject's last token, averaged over the bare
prompt and a few model-generated context prefixes; the target value v is optimised so the new object
follows (editing.targets); the update W += (v - W k0) (C^-1 k)^T / ((C^-1 k)^T k0) maps the bare
prompt's key k0 onto v while disturbing keys least under the key statistics C (editing.stats).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from chronosweep.archs import UnsupportedArchitecture, arch_for
from chronosweep.models import ModelInfo
from editing.base import EditContext, EditOutcome
from editing.locate import (LocateOptions, at_raw, build_rows, check_layer, down_proj, generate_prefixes, mean_keys,
                            record)
from editing.stats import second_moments
from editing.targets import Site, optimize_targets, rank_one_update


@dataclass
class RomeOptions(LocateOptions):
    # The rewritten layer; 5 edits SmolLM2-135M well (ROME's 7B setting, see docs/stack notes).
    layer: int = 5
    # Whiten the key with C^-1 (ROME's mom2_adjustment); false uses the raw key and needs no statistics.
    mom2_adjustment: bool = True


def check_arch(where: str, info: ModelInfo, problems: list[str]) -> bool:
    try:
        arch_for(info.model_type)
        return True
    except UnsupportedArchitecture as err:
        problems.append(f"{where}: {err}")
        return False


def whitened(c_inv_solve, key: torch.Tensor) -> torch.Tensor:
    left = c_inv_solve(key) if c_inv_solve is not None else key.double()
    return (left / left.norm()).float()


class ROME:
    name = "rome"
    Options = RomeOptions

    def check(self, options: RomeOptions, info: ModelInfo, problems: list[str]) -> None:
        if check_arch(self.name, info, problems):
            check_layer(f"{self.name}.layer", options.layer, info, problems)

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
        prefixes = generate_prefixes(model, tokenizer, options.n_prefixes, options.prefix_tokens, ctx.config.seed, device)
        history: list[dict] = []
        missing = 0
        for i, req in enumerate(tqdm(requests, desc="rome", unit="edit", dynamic_ncols=True)):
            t0 = time.perf_counter()
            rows = build_rows(tokenizer, [req], prefixes).to(device)
            missing += not rows.subject_found[0]
            # Keys on the model as edited so far: earlier edits may have moved them.
            rec = record(model, arch, rows.input_ids, rows.attention_mask, mlp_layers=(layer,), stop=True)
            key_mean, key_raw = mean_keys(rec.keys[layer], rows)[0], at_raw(rec.keys[layer], rows)[0]
            del rec
            left = whitened(solve, key_mean)
            target = optimize_targets(model, arch, rows, Site("mlp", layer), options, desc=f"rome v* {i + 1}")
            delta = rank_one_update(model, arch, layer, key_raw, left, target.init[0], target.target[0])
            history.append({"edit": i, "case_id": req.case_id, "layer": layer, **target.history[0],
                            "update_norm": float(delta.norm()), "subject_found": rows.subject_found[0],
                            "truncated": target.truncated, "stats_cached": stats_cached,
                            "seconds": time.perf_counter() - t0})
        if missing:
            warnings.warn(f"rome: {missing} of {len(requests)} edit prompts do not contain their subject; "
                          "their key was read at the last prompt token instead", stacklevel=2)
        trainable = down_proj(model, arch, layer).weight.numel()
        return EditOutcome(model=model, trainable_params=trainable, history=history)
