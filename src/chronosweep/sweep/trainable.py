"""The Tune trainable: one sampled point -> the trial config -> ``run_trial`` (what `chronosweep edit` runs).

Gradient methods report each epoch (loss, for ASHA); the last report carries every scalar of metrics.json
and the objective. A trial restarted after its driver died finds its finished run dir and reports it again
instead of editing twice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from chronosweep.core.typed import set_dotted
from chronosweep.evaluation.objective import Objective
from chronosweep.sweep.resources import Resources
from chronosweep.sweep.space import Space
from chronosweep.sweep.storage import Location, finished_metrics, local_run_dir, trial_run_dir

NAN = float("nan")
# metrics.json parts that are not per-trial scalars; config.yaml and history.jsonl hold them.
_NOT_REPORTED = ("config", "history", "versions", "host", "edited_modules", "edited_layers", "checkpoints", "applied_order")


@dataclass
class TrialPlan:
    """Everything a trial needs besides its sampled values; shipped to the workers once (tune.with_parameters)."""

    base_raw: dict
    space: Space
    objective: Objective
    resources: Resources
    # The experiment folder or URI: <storage>/<name>.
    experiment: str
    # The per-epoch metric ASHA watches, when early stopping is on.
    stop_metric: str | None = None

    def trial_raw(self, encoded: dict) -> dict:
        raw = copy.deepcopy(self.base_raw)
        for key, value in self.space.decode(encoded).items():
            set_dotted(raw, key, copy.deepcopy(value))
        if raw.get("threads") is None:
            # Ray sets OMP_NUM_THREADS=1 in a 1-CPU actor; use exactly the CPUs the trial holds.
            raw["threads"] = self.resources.threads()
        if self.resources.distributed and raw.get("engine", "auto") == "auto":
            # Ranks must share gradients; the plain engine trains each rank on its own.
            raw["engine"] = "deepspeed"
        return raw


def epoch_report(epoch: int, record: dict, stop_metric: str | None) -> dict:
    # Tune's strict metric check wants the objective in every report; it is unknown until the end.
    out: dict = {"epoch": epoch, "objective": NAN}
    out.update({k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if stop_metric:
        out.setdefault(stop_metric, NAN)
    return out


def final_report(metrics: dict, plan: TrialPlan, run: Location) -> dict:
    """Every scalar of metrics.json plus the objective; raises ValueError when the objective cannot be computed."""
    out = {k: v for k, v in metrics.items() if k not in _NOT_REPORTED}
    history = metrics.get("history") or []
    if history:
        out["epoch"] = history[-1].get("epoch")
        out["loss"] = history[-1].get("loss")
    if plan.stop_metric:
        out.setdefault(plan.stop_metric, NAN)
    out["objective"] = plan.objective.value(metrics)
    out["run_dir"] = run.uri
    return out


def run_point(config: dict, plan: TrialPlan) -> None:
    """The function Tune runs for each trial."""
    from ray import tune

    from chronosweep.trial.config import config_from_dict

    raw = plan.trial_raw(config["params"])
    trial_dir = Path(tune.get_context().get_trial_dir()).name
    run = trial_run_dir(plan.experiment, trial_dir)
    metrics = finished_metrics(run)
    if metrics is None and plan.resources.distributed:
        from chronosweep.sweep.multigpu import train_distributed

        train_distributed(raw, plan, trial_dir)
        return
    if metrics is None:
        from chronosweep.trial.run import run_trial

        cfg = config_from_dict(raw)

        def on_epoch(epoch: int, record: dict) -> None:
            tune.report(epoch_report(epoch, record, plan.stop_metric))

        metrics = run_trial(cfg, local_run_dir(run), on_epoch=on_epoch, force=True)
    tune.report(final_report(metrics, plan, run))

