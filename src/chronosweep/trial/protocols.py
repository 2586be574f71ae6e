"""Edit protocols: how a trial's edits meet the model, and which model answers each probe.

- batch: every edit applied together (the study's batch editing), every probe scored on the result;
- single: each edit applied to the unedited model on its own, its probes scored, the model restored exactly before
  the next (the literature's single-edit tables); locality probes are scored after every edit and averaged. Edits
  of one multi-hop case form one unit, since its questions need them all;
- sequential: edits applied one after another (file order, or time_start order), every probe scored on the final
  model, and the edits applied so far scored every eval_every edits (their retention at each checkpoint).

The model is loaded once; the unedited model's answers are measured once (and cached across trials by the caller).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import fmean

from chronosweep.core.errors import UserError
from chronosweep.core.requests import EditRequest

PROTOCOLS = ("batch", "single", "sequential")


class RestoreError(RuntimeError):
    pass


# ---------------------------------------------------------------- which probes belong to which edits

EDIT_KINDS = ("rewrite", "paraphrase", "neighborhood", "history", "temporal")


def edit_probes(probes, requests: list[EditRequest], kinds: tuple[str, ...] = EDIT_KINDS) -> list[int]:
    """Indices of the probes of these edits (rewrite, paraphrase, neighborhood, history and temporal)."""
    ids = {r.case_id for r in requests}
    return [i for i, p in enumerate(probes) if p.kind in kinds and p.case_id in ids]


def case_probes(probes, case_ids: set[str]) -> list[int]:
    """Indices of the multi-hop and single-hop probes of these multi-hop cases."""
    return [i for i, p in enumerate(probes) if p.kind in ("multihop", "hop") and p.case_id in case_ids]


def locality_probes(probes) -> list[int]:
    return [i for i, p in enumerate(probes) if p.kind == "locality"]


def units(requests: list[EditRequest]) -> list[list[int]]:
    """The single protocol's units: one edit each, except that the edits of one multi-hop case go together (and
    an edit shared by several cases, as in MQuAKE-Remastered, joins their units)."""
    parent = list(range(len(requests)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, r in enumerate(requests):
        for m in r.multihop_cases:
            parent[root(i)] = root(first.setdefault(m.case_id, i))
    groups: dict[int, list[int]] = {}
    for i in range(len(requests)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


_TIME = re.compile(r"^\s*([+-]?\d{1,9})(?:-(\d{1,2}))?(?:-(\d{1,2}))?")


def time_key(value: str | None) -> tuple[int, int, int] | None:
    """(year, month, day) of an ISO-like date ('+2015-02-03T00:00:00Z', '2015-02', '2015'); None if unreadable."""
    if not value:
        return None
    m = _TIME.match(value)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def edit_order(requests: list[EditRequest], order: str, key: str = "edit_order") -> tuple[list[int], str]:
    """(indices in the order edits are applied, "time" or "file"); key: the config key that asked for the order."""
    keys = [time_key(r.time_start) for r in requests]
    if order == "file" or (order == "auto" and any(k is None for k in keys)):
        return list(range(len(requests))), "file"
    missing = [r.case_id for r, k in zip(requests, keys) if k is None]
    if missing:
        asked, fallback = ("stream.order: time_start", "stream.order: file") if key == "stream.order" \
            else ("edit_order: time", "edit_order: file")
        raise UserError(f"{asked} needs a readable time_start on every edit; {len(missing)} of "
                        f"{len(requests)} lack one (first: {missing[0]}); use {fallback}")
    # Stable: edits that start on the same day keep their file order.
    return sorted(range(len(requests)), key=lambda i: keys[i]), "time"


# ---------------------------------------------------------------- exact restoration

def _base_params(model) -> dict:
    return dict(model.named_parameters())


class Restorer:
    """Puts the model back bit for bit after each edit of the single protocol, without reloading it.

    Copies are kept of the parameters the method changes in place (what its changes() names; a method without it
    has every parameter copied once, cut down after the first edit to those it touched). After an edit, what the
    method wrapped around the model (a peft adapter) is taken off with its detach(), the copies are written back and
    the requires_grad flags reset. A parameter changed in place outside the copies is an error, not a silent drift:
    tensor version counters show every in-place write.
    """

    def __init__(self, model, implementation, options, ctx):
        import torch

        self.model = model
        params = _base_params(model)
        changes = getattr(implementation, "changes", None)
        names = changes(model, options, ctx) if callable(changes) else None
        self.trim = names is None
        if names is None:
            names = list(params)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise RestoreError(f"{type(implementation).__name__}.changes() names parameters the model lacks: {unknown[:3]}")
        with torch.no_grad():
            # Copies of everything (no declaration) wait on the CPU; declared ones stay beside their parameter.
            self.saved = {n: params[n].detach().to("cpu" if self.trim else params[n].device, copy=True) for n in names}
        self.flags = {n: p.requires_grad for n, p in params.items()}
        self.versions = {n: p._version for n, p in params.items()}
        self.method = type(implementation).__name__

    def restore(self, outcome):
        import torch

        model = outcome.detach() if outcome.detach is not None else outcome.model
        if model is not self.model:
            raise RestoreError(f"{self.method}: the edited model is not the base model after detaching its additions; "
                               "an in-place method must return the model it was given")
        params = _base_params(model)
        if set(params) != set(self.versions):
            extra = sorted(set(params) - set(self.versions))[:3]
            raise RestoreError(f"{self.method}: the base model has parameters it did not have before the edit: {extra}")
        touched = {n for n, p in params.items() if p._version != self.versions[n]}
        if self.trim:
            self.saved = {n: v.to(params[n].device) for n, v in self.saved.items() if n in touched}
            self.trim = False
        outside = sorted(touched - set(self.saved))
        if outside:
            raise RestoreError(f"{self.method} changed parameters in place that it does not declare in changes() "
                               f"({outside[:3]}{' ...' if len(outside) > 3 else ''}); they cannot be restored")
        with torch.no_grad():
            for name, value in self.saved.items():
                params[name].copy_(value)
        for name, p in params.items():
            p.requires_grad_(self.flags[name])
        self.versions = {n: p._version for n, p in params.items()}
        return model


# ---------------------------------------------------------------- scoring measurements of probe subsets

def subset(measurement, positions: list[int]):
    """The measurement of the probes at these positions of the list it was measured on."""
    return dataclasses.replace(measurement, top_tokens=[measurement.top_tokens[j] for j in positions],
                               target_ids=[measurement.target_ids[j] for j in positions])


def merged_rows(probes, pre, evaluations: list[tuple[list[int], object]]) -> list[dict]:
    """One prediction row per probe, from post-edit measurements of probe subsets (index list, measurement).

    A probe scored once keeps that row; a locality probe scored after several edits gets the mean of each score
    over them (AVERAGED), the values per edit in <field>_all and its post-edit continuations in post_all (post and
    post_answer: after the first edit).
    """
    from chronosweep.evaluation.scoring import score_rows

    scored: dict[int, list[dict]] = {}
    for idx, post in evaluations:
        rows = score_rows([probes[i] for i in idx], subset(pre, idx), post)
        for i, row in zip(idx, rows):
            scored.setdefault(i, []).append(row)
    out = []
    for i in sorted(scored):
        rows = scored[i]
        if len(rows) == 1 or probes[i].kind != "locality":
            out.append(rows[0])
            continue
        merged = {**rows[0], "post_all": [r["post"] for r in rows]}
        for key in AVERAGED:
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            merged[key] = fmean(values) if values else None
            merged[f"{key}_all"] = [r.get(key) for r in rows]
        out.append(merged)
    return out


# The locality row's scores that single averages over its evaluations (same_answer becomes a share).
AVERAGED = ("score", "token_acc", "answer_score", "same_answer")


def metrics_of(rows: list[dict], side: str = "post") -> dict:
    from chronosweep.evaluation.scoring import aggregate, unit_values

    return aggregate(unit_values(rows, side), side)


# ---------------------------------------------------------------- the protocols

@dataclass
class Setting:
    """What a protocol works with: the loaded model, the method, the probes and how to measure them."""

    model: object
    tokenizer: object
    requests: list[EditRequest]
    probes: list
    pre: object
    implementation: object
    options: object
    ctx: object  # editing.base.EditContext
    measure: Callable  # (model, probes, desc) -> Measurement
    reseed: Callable[[], None]
    progress: Callable[[str], None] = print
    # Edit streams: called with each wave's stream.jsonl record as soon as it is measured.
    on_wave: Callable[[dict], None] | None = None


class Clock:
    """Wall and process CPU seconds (all threads) spent inside its `timed()` blocks, summed."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    @contextmanager
    def timed(self):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - t0
            self.cpu += time.process_time() - c0


@dataclass
class Result:
    outcome: object  # the last EditOutcome (what is saved; trainable_params, edited modules)
    rows: list[dict]
    history: list[dict]
    edit: Clock
    eval: Clock
    # Whether outcome.model is the edited model (batch, sequential) or the restored unedited one (single).
    edited_model_kept: bool = True
    edited_modules: list[str] = field(default_factory=list)
    edited_layers: list[int] = field(default_factory=list)
    # metrics.json entries only this protocol has.
    extra: dict = field(default_factory=dict)
    # metrics.json's "training" (the last step's summary, epochs summed over steps) and every text trained on in
    # any step (training_prompts.json; the disjointness check reads them all).
    training: dict = field(default_factory=dict)
    training_prompts: dict | None = None

    @property
    def edit_seconds(self) -> float:
        return self.edit.wall

    @property
    def eval_seconds(self) -> float:
        return self.eval.wall

    @property
    def edit_cpu_seconds(self) -> float:
        return self.edit.cpu

    @property
    def eval_cpu_seconds(self) -> float:
        return self.eval.cpu


def _with_step(ctx, step: int, offset: list[int]):
    """The context for one step of a multi-step protocol: epochs numbered on from the earlier steps'."""
    if ctx.on_epoch is None:
        return ctx
    outer = ctx.on_epoch

    def on_epoch(epoch: int, record: dict) -> None:
        outer(offset[0] + epoch, {**record, "protocol_step": step})

    return dataclasses.replace(ctx, on_epoch=on_epoch)


def _tag(history: list[dict], step: int, epochs: list[int]) -> list[dict]:
    rows = [{**row, "protocol_step": step} for row in history]
    epochs[0] += sum(1 for row in history if "epoch" in row)
    return rows


class Trained:
    """What the gradient methods trained on, gathered over a protocol's steps."""

    def __init__(self) -> None:
        self.summary: dict = {}
        self.prompts: dict | None = None
        self.epochs = 0
        self.steps = 0

    def add(self, outcome, step: int | None = None) -> None:
        if not outcome.training and not outcome.training_prompts:
            return
        self.steps += 1
        self.epochs += outcome.training.get("epochs_run") or 0
        self.summary = dict(outcome.training)
        if outcome.training_prompts:
            self.prompts = self.prompts or {}
            for key, rows in outcome.training_prompts.items():
                tagged = rows if step is None else [{**r, "protocol_step": step} for r in rows]
                self.prompts.setdefault(key, []).extend(tagged)

    def fill(self, result: Result) -> Result:
        if self.steps > 1:
            self.summary.update(epochs_run=self.epochs, protocol_steps=self.steps)
        result.training, result.training_prompts = self.summary, self.prompts
        return result


def run(protocol: str, s: Setting, **kwargs) -> Result:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return {"batch": run_batch, "single": run_single, "sequential": run_sequential}[protocol](s, **kwargs)


def run_batch(s: Setting) -> Result:
    s.reseed()
    edit, evaluation = Clock(), Clock()
    with edit.timed():
        outcome = s.implementation.edit(s.model, s.tokenizer, s.requests, s.options, s.ctx)
    with evaluation.timed():
        post = s.measure(outcome.model, s.probes, "post-edit")
    rows = merged_rows(s.probes, s.pre, [(list(range(len(s.probes))), post)])
    trained = Trained()
    trained.add(outcome)
    return trained.fill(Result(outcome, rows, list(outcome.history), edit, evaluation,
                               edited_modules=list(outcome.edited_modules), edited_layers=list(outcome.edited_layers)))


def run_single(s: Setting) -> Result:
    restorer = Restorer(s.model, s.implementation, s.options, s.ctx)
    local = locality_probes(s.probes)
    evaluations, history = [], []
    edit, evaluation = Clock(), Clock()
    modules: dict[str, None] = {}
    layers: set[int] = set()
    epochs = [0]
    outcome = None
    groups = units(s.requests)
    model = s.model
    trained = Trained()
    for step, group in enumerate(groups):
        reqs = [s.requests[i] for i in group]
        # Every edit starts from the same seed on the same model: what one process per edit would do.
        s.reseed()
        with edit.timed():
            outcome = s.implementation.edit(model, s.tokenizer, reqs, s.options, _with_step(s.ctx, step, epochs))
        history += _tag(outcome.history, step, epochs)
        trained.add(outcome, step)
        modules.update(dict.fromkeys(outcome.edited_modules))
        layers.update(outcome.edited_layers)
        cases = {m.case_id for r in reqs for m in r.multihop_cases}
        idx = sorted(edit_probes(s.probes, reqs) + case_probes(s.probes, cases) + local)
        with evaluation.timed():
            post = s.measure(outcome.model, [s.probes[i] for i in idx], f"post-edit {step + 1}/{len(groups)}")
        evaluations.append((idx, post))
        model = restorer.restore(outcome)
    rows = merged_rows(s.probes, s.pre, evaluations)
    return trained.fill(Result(outcome, rows, history, edit, evaluation, edited_model_kept=False,
                               edited_modules=sorted(modules), edited_layers=sorted(layers),
                               extra={"n_evaluations": len(evaluations)}))


def _resume(implementation, previous, tokenizer, requests, options, ctx):
    resume = getattr(implementation, "resume", None)
    if callable(resume):
        return resume(previous, tokenizer, requests, options, ctx)
    return implementation.edit(previous.model, tokenizer, requests, options, ctx)


def run_sequential(s: Setting, eval_every: int | None = None, order: str = "auto", wave: int | str | None = None) -> Result:
    """Edits one after another (wave None), or an edit stream: waves of edits (trial.stream), scored after each."""
    from chronosweep.trial import stream

    indices, used = edit_order(s.requests, order)
    plan = stream.waves(s.requests, indices, wave) if wave is not None else [(s.requests[i].case_id, [i]) for i in indices]
    local = locality_probes(s.probes)
    n = len(plan)
    history, checkpoints, fresh, records = [], [], [], []
    edit, evaluation = Clock(), Clock()
    modules: dict[str, None] = {}
    layers: set[int] = set()
    epochs = [0]
    outcome = None
    applied: list[EditRequest] = []
    since: list[EditRequest] = []
    final_rows: list[dict] = []
    trained = Trained()
    kinds = stream.CHECKPOINT_KINDS if wave is not None else EDIT_KINDS
    s.reseed()
    for step, (label, group) in enumerate(plan):
        reqs = [s.requests[i] for i in group]
        ctx = _with_step(s.ctx, step, epochs)
        if wave is not None:
            s.progress(f"wave {step + 1}/{n} ({label}): {len(reqs)} edits")
        with edit.timed():
            if outcome is None:
                outcome = s.implementation.edit(s.model, s.tokenizer, reqs, s.options, ctx)
            else:
                outcome = _resume(s.implementation, outcome, s.tokenizer, reqs, s.options, ctx)
        history += _tag(outcome.history, step, epochs)
        trained.add(outcome, step)
        modules.update(dict.fromkeys(outcome.edited_modules))
        layers.update(outcome.edited_layers)
        applied += reqs
        since += reqs
        last = step == n - 1
        if not (last or wave is not None or (eval_every and (step + 1) % eval_every == 0)):
            continue
        # Multi-hop cases count once all their edits are in.
        ids = {r.case_id for r in applied}
        done = {m.case_id for r in applied for m in r.multihop_cases}
        done -= {m.case_id for r in s.requests if r.case_id not in ids for m in r.multihop_cases}
        idx = sorted(edit_probes(s.probes, applied, kinds) + case_probes(s.probes, done) + local)
        if last:
            idx = list(range(len(s.probes)))
        with evaluation.timed():
            post = s.measure(outcome.model, [s.probes[j] for j in idx], f"checkpoint {step + 1}/{n}")
        rows = merged_rows(s.probes, s.pre, [(idx, post)])
        metrics = metrics_of(rows)
        checkpoints.append({"n_applied": len(applied), **metrics})
        if wave is not None:
            records.append(stream.record(step, plan, s.requests, rows, metrics,
                                         {"edit_seconds": edit.wall, "eval_seconds": evaluation.wall}))
            if s.on_wave is not None:
                s.on_wave(records[-1])
        new_cases = {m.case_id for r in since for m in r.multihop_cases} & done
        new = set(edit_probes(s.probes, since, kinds) + case_probes(s.probes, new_cases) + local)
        positions = [k for k, j in enumerate(idx) if j in new]
        fresh.append(([idx[k] for k in positions], subset(post, positions)))
        since = []
        if last:
            final_rows = rows
    extra = {"edit_order": used, "eval_every": eval_every, "applied_order": [s.requests[i].case_id for i in indices],
             "checkpoints": checkpoints}
    if wave is not None:
        final_rows = stream.tag_waves(final_rows, plan, s.requests)
        extra["stream"] = records
        extra["stream_waves"] = n
        extra["stream_wave"] = wave
    if len(checkpoints) > 1:
        # Each edit scored at the first checkpoint after it was applied (right after it, with eval_every 1);
        # locality averaged over the checkpoints.
        extra["immediate"] = metrics_of(merged_rows(s.probes, s.pre, fresh))
    return trained.fill(Result(outcome, final_rows, history, edit, evaluation, edited_modules=sorted(modules),
                               edited_layers=sorted(layers), extra=extra))
