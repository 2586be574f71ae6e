"""One progress bar for the sweep and one line per finished trial, instead of Tune's per-trial result dumps."""

from __future__ import annotations

import math

from ray.tune import Callback
from tqdm.auto import tqdm

from chronosweep.sweep.storage import trial_run_dir


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class TrialProgress(Callback):
    def __init__(self, total: int, space, mode: str, experiment: str):
        self.total = total
        self.experiment = experiment
        self.space = space
        self.mode = mode
        self._bar = None
        self._best: float | None = None

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment (for --resume); a live bar is not state.
        return {**self.__dict__, "_bar": None}

    def _ensure_bar(self, trials) -> tqdm:
        if self._bar is None:
            done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
            self._bar = tqdm(total=max(self.total, done), initial=done, desc="trials", unit="trial",
                             dynamic_ncols=True)
        return self._bar

    def _values(self, trial) -> str:
        values = self.space.decode((trial.config or {}).get("params") or {})
        return " ".join(f"{k}={_short(v)}" for k, v in values.items())

    def on_trial_start(self, iteration, trials, trial, **info):
        self._ensure_bar(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        bar = self._ensure_bar(trials)
        objective = (trial.last_result or {}).get("objective")
        if isinstance(objective, (int, float)) and math.isfinite(objective):
            better = self._best is None or (objective > self._best if self.mode == "max" else objective < self._best)
            self._best = objective if better else self._best
            state = f"ok  objective={objective:.4f}"
        else:
            state = "stopped early"
        bar.write(f"{trial} {state}  {self._values(trial)}")
        bar.update(1)
        if self._best is not None:
            bar.set_postfix(best=f"{self._best:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        bar = self._ensure_bar(trials)
        # run_trial's error.txt opens with the exception; Tune's own error file ends with it.
        run_error = trial_run_dir(self.experiment, str(trial)).child("error.txt").read_text()
        lines = run_error.splitlines()[:1] if run_error else str(trial.get_error() or "").splitlines()[-1:]
        bar.write(f"{trial} FAILED  {self._values(trial)}: {lines[0].strip() if lines else 'see its error.txt'}")
        bar.update(1)

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
