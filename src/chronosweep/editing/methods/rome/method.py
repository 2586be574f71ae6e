"""ROME (Meng et al., 2022) as kmeng01/rome implements it, and chronosweep's variant rome-preserve.

Per edit, on the model as edited so far (edits are applied one after another):
- the key: the down-projection input at the subject's last token, averaged over the bare prompt and the context
  templates (compute_u); u = C^-1 k / ||C^-1 k|| with mom2_adjustment (C: the key statistics), else k / ||k||;
- the target value v*: the down-projection output there plus a delta optimised so the new object follows every
  context, with a KL term on the next-token distribution at the subject's last token of "{subject} is a", a
  weight decay and a norm clamp (compute_v, editing.targets);
- W += (v* - W k*) u^T / (u^T k*), k* the bare prompt's key: a rank-one change that maps k* onto v*.

rome-preserve, chronosweep's variant, changes three things:
- preserve_earlier: edits of one trial share templates ("The head of state in X is"), so their keys are close and a
  later rank-one update overwrites an earlier edit (measured on SmolLM2: the update for "head of government in
  Italy" moves "head of state in Italy" by 100% of its own change, China's by 20%). u is instead the least-change
  direction under C with u^T k = 1 that also has u^T k_j = 0 for the keys of this trial's earlier edits:
  u = C^-1 K (K^T C^-1 K)^-1 e1 with K = [k, k_1 ... k_m]. Each update is still rank one and leaves the earlier
  edits exactly in place; with no earlier edits it is ROME's C^-1 k.
- preserve_tail: the keys after the subject (the rest of the prompt and the target tokens) join those constraints,
  so the update changes only the subject token, which is all the value optimisation assumed. Multi-token objects
  otherwise drift after their first token ("Sergio Mattarelli").
- the KL term is read after "{subject} is a" (the distribution of the word that follows), not at the subject token.
Its preset for SmolLM2 uses five 10-token templates and the key statistics; what it measured beside the published
method is in docs/benchmarks.md.
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
    context_prefixes,
    down_proj,
    down_proj_path,
    mean_keys,
    record,
    tail_keys,
)
from chronosweep.editing.methods.rome.options import RomeOptions, RomePreserveOptions
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
    """The published algorithm. One instance serves a whole trial: templates and C^-1 are computed once."""

    NAME = "rome"
    # Where the KL term reads the "{subject} is a" row.
    KL_AT = "subject"

    def __init__(self):
        self._prefixes: dict[tuple, list[list[str]]] = {}
        self._solvers: dict[tuple, tuple] = {}

    def changes(self, model, options: RomeOptions, ctx: EditContext) -> list[str]:
        """The parameters edit() rewrites in place (what an exact restore copies)."""
        return [down_proj_path(arch_for(ctx.info.model_type), options.layer) + ".weight"]

    def edit(self, model, tokenizer, requests, options: RomeOptions, ctx: EditContext) -> EditOutcome:
        return self._apply(model, tokenizer, requests, options, ctx, None)

    def resume(self, previous: EditOutcome, tokenizer, requests, options: RomeOptions, ctx: EditContext) -> EditOutcome:
        """More edits on top of an earlier outcome of this method (the sequential protocol)."""
        return self._apply(previous.model, tokenizer, requests, options, ctx, previous.state)

    # --- what the variant changes -----------------------------------------------------------------------------

    def constraints(self, state: dict, request, tail: list[torch.Tensor], options) -> list[torch.Tensor]:
        """Keys the update must leave unchanged besides mapping this edit's key (ROME: none)."""
        return []

    def remember(self, state: dict, request, keys: list[torch.Tensor]) -> None:
        """Keep what later edits of the trial must respect (ROME: nothing)."""

    # --- shared ----------------------------------------------------------------------------------------------

    def _context(self, model, tokenizer, options, ctx: EditContext) -> list[list[str]]:
        key = (ctx.info.fingerprint, ctx.runtime.seed, tuple(map(tuple, options.context_templates)))
        if key not in self._prefixes:
            self._prefixes[key] = context_prefixes(model, tokenizer, options.context_templates, ctx.runtime.seed,
                                                   ctx.device)
        return self._prefixes[key]

    def _solver(self, model, tokenizer, arch, layer: int, options, ctx: EditContext):
        """(C^-1 applied to a matrix of keys, whether C came from the cache); C is factorised once."""
        key = (ctx.info.fingerprint, layer, options.stats_corpus, options.stats_samples)
        if key not in self._solvers:
            stats = second_moments(model, tokenizer, arch, [layer], corpus=options.stats_corpus,
                                   samples=options.stats_samples, fingerprint=ctx.info.fingerprint,
                                   cache_dir=ctx.cache_dir, device=ctx.device)[layer]
            lu, pivots = torch.linalg.lu_factor(stats.mom2.to(device=ctx.device, dtype=torch.float64))
            solve = lambda k, lu=lu, pivots=pivots: torch.linalg.lu_solve(lu, pivots, k.double())  # noqa: E731
            self._solvers[key] = (solve, stats.cached)
            return solve, stats.cached
        return self._solvers[key][0], True

    def _apply(self, model, tokenizer, requests, options: RomeOptions, ctx: EditContext, state: dict | None) -> EditOutcome:
        arch = arch_for(ctx.info.model_type)
        layer, device = options.layer, ctx.device
        solve, stats_cached = (self._solver(model, tokenizer, arch, layer, options, ctx) if options.mom2_adjustment
                               else (None, None))
        prefixes = self._context(model, tokenizer, options, ctx)
        state = {"applied": 0, "earlier": {}} if state is None else {**state, "earlier": dict(state["earlier"])}
        history: list[dict] = []
        missing = 0
        for req in tqdm(requests, desc=self.NAME, unit="edit", dynamic_ncols=True, disable=len(requests) < 2):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = build_rows(tokenizer, [req], prefixes, kl_at=self.KL_AT).to(device)
            missing += not rows.subject_found[0]
            # Keys on the model as edited so far: earlier edits may have moved them.
            rec = record(model, arch, rows.input_ids, rows.attention_mask, mlp_layers=(layer,), stop=True)
            key_mean, key_raw = mean_keys(rec.keys[layer], rows)[0], at_raw(rec.keys[layer], rows)[0]
            tail = list(tail_keys(rec.keys[layer], rows))
            del rec
            left = update_direction(solve, key_mean, self.constraints(state, req, tail, options))
            target = optimize_targets(model, arch, rows, Site("mlp", layer), options,
                                      desc=f"{self.NAME} v* {state['applied'] + 1}")
            delta = rank_one_update(model, arch, layer, key_raw, left, target.init[0], target.target[0])
            # The bare prompt's key (what the update maps), the context average (what generalises) and the keys
            # after the subject (what carries the answer on).
            self.remember(state, req, [key_raw, key_mean, *tail])
            history.append({"edit": state["applied"], "case_id": req.case_id, "layer": layer, **target.history[0],
                            "update_norm": float(delta.norm()), "subject_found": rows.subject_found[0],
                            "truncated": target.truncated, "tail_mode": target.mode, "stats_cached": stats_cached,
                            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})
            state["applied"] += 1
        if missing:
            warnings.warn(f"{self.NAME}: {missing} of {len(requests)} edit prompts do not contain their subject; "
                          "their key was read at the last prompt token instead", stacklevel=2)
        trainable = down_proj(model, arch, layer).weight.numel()
        names = [down_proj_path(arch, layer) + ".weight"]
        modules, layers = edited(names, ctx.info)
        return EditOutcome(model=model, trainable_params=trainable, history=history, save=save_params(model, names),
                           edited_modules=modules, edited_layers=layers, state=state)


class ROMEPreserve(ROME):
    """rome-preserve: each update kept off earlier edits' keys and off the keys after the subject."""

    NAME = "rome-preserve"
    KL_AT = "end"

    def constraints(self, state: dict, request, tail: list[torch.Tensor], options: RomePreserveOptions):
        earlier = state["earlier"]
        # A prompt edited again drops its old constraint.
        earlier.pop(request.prompt, None)
        kept = [k for ks in earlier.values() for k in ks] if options.preserve_earlier else []
        return kept + (tail if options.preserve_tail else [])

    def remember(self, state: dict, request, keys: list[torch.Tensor]) -> None:
        state["earlier"][request.prompt] = keys

