"""Optional experiment tracking: `tracking: {mlflow: {uri: ...}}` in a sweep file logs every trial to MLflow.

Each trial becomes one MLflow run (named after the trial) in an MLflow experiment named after the sweep: its whole
trial config as parameters (dotted keys, every default filled in, as config.yaml has them), every epoch's loss
and the final metrics as metrics (step = Tune's training iteration), its run dir and status as tags. Logging goes
through Ray Tune's own MLflowLoggerCallback in the driver, so trials need neither mlflow nor network access.

The default store is a local ``mlruns/`` folder in the working directory (``mlflow ui --backend-store-uri
./mlruns`` shows it); ``uri`` may name another folder, a ``sqlite:///`` database or an MLflow server. MLflow 3
refuses new file stores unless MLFLOW_ALLOW_FILE_STORE is set, which the driver sets for file URIs it is given.
Needs the ``mlflow`` extra: ``pip install 'chronosweep[mlflow]'``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_URI = "mlruns"


@dataclass
class MlflowTracking:
    # Tracking URI: a folder (file store), sqlite:///FILE, or http(s)://SERVER; default ./mlruns.
    uri: str = DEFAULT_URI
    # MLflow experiment; default: the sweep's --name.
    experiment: str | None = None
    # Tags set on every run.
    tags: dict = field(default_factory=dict)

    def check(self, where: str, problems: list[str]) -> None:
        if importlib.util.find_spec("mlflow") is None:
            problems.append(f"{where}: needs the mlflow package (pip install 'chronosweep[mlflow]', or mlflow itself)")
        if not isinstance(self.uri, str) or not self.uri:
            problems.append(f"{where}.uri: a folder, sqlite:///FILE or http(s)://SERVER, got {self.uri!r}")

    def resolved_uri(self) -> str:
        """Local folders as absolute file: URIs (trials and the driver may run in other working directories)."""
        if "://" in self.uri or self.uri.startswith("file:"):
            return self.uri
        return Path(self.uri).expanduser().resolve().as_uri()


@dataclass
class Tracking:
    mlflow: MlflowTracking | None = None


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def callbacks(tracking: Tracking | None, plan, sweep_name: str) -> list:
    """The Tune callbacks the sweep's tracking section asks for (none without one)."""
    if tracking is None or tracking.mlflow is None:
        return []
    cfg = tracking.mlflow
    uri = cfg.resolved_uri()
    if uri.startswith("file:"):
        # MLflow 3 keeps file stores in maintenance mode and refuses them unless told to.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return [_callback_class()(plan, tracking_uri=uri, experiment_name=cfg.experiment or sweep_name,
                              tags={"chronosweep.sweep": sweep_name, "chronosweep.experiment": plan.experiment,
                                    **{str(k): str(v) for k, v in cfg.tags.items()}})]


def _callback_class():
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialConfigMLflowCallback(MLflowLoggerCallback):
        """Ray's MLflow callback, logging each trial's whole chronosweep config instead of Tune's raw point."""

        def __init__(self, plan, **kwargs):
            super().__init__(**kwargs)
            self.plan = plan

        def log_trial_start(self, trial) -> None:
            if trial not in self._trial_runs:
                tags = {**self.tags, "trial_name": str(trial)}
                self._trial_runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            run_id = self._trial_runs[trial]
            params = flatten(self.trial_config(trial))
            # MLflow takes at most 100 parameters per call.
            items = list(params.items())
            for start in range(0, len(items), 100):
                self.mlflow_util.log_params(run_id=run_id, params_to_log=dict(items[start:start + 100]))

        def trial_config(self, trial) -> dict:
            from chronosweep.trial.config import config_from_dict

            try:
                return config_from_dict(self.plan.trial_raw(trial.config.get("params", {}))).to_dict()
            except Exception:  # noqa: BLE001 - logging must not fail a sweep; fall back to the sampled point
                return dict(trial.config.get("params", {}))

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            super().log_trial_result(iteration, trial, numbers)
            # The final report carries the run dir and status (strings, which MLflow keeps as tags).
            for key in ("run_dir", "status"):
                if isinstance(result.get(key), str):
                    self._set_tag(trial, f"chronosweep.{key}", result[key])

        def _set_tag(self, trial, key: str, value: str) -> None:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=self.tracking_uri).set_tag(self._trial_runs[trial], key, value)

    return TrialConfigMLflowCallback
