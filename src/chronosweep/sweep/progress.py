"""One progress bar for the sweep and one line per finished trial, instead of Tune's per-trial result dumps.

A failed trial is one line too: the trial, its values, the exception's class and message and the run dir's
error.txt, which holds the full traceback (as does the trial's own stderr). Tune's console output for the same
event (its traceback, "errored after ... Error file: <Ray's temp folder>", "Trials did not complete") is off
while the sweep runs (``quiet_tune``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

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
        result = trial.last_result or {}
        objective = result.get("objective")
        if result.get("status") == "degenerate":
            state = f"DEGENERATE (never ranked): {result.get('degenerate_reason')}"
        elif isinstance(objective, (int, float)) and math.isfinite(objective):
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
        bar.write(failure_line(trial, self._values(trial), self.experiment))
        bar.update(1)

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def failure_line(trial, values: str, experiment: str) -> str:
    """'<trial> FAILED <values>: <Class>: <message>  (traceback: <run dir>/error.txt)', one line."""
    error_file = trial_run_dir(experiment, str(trial)).child("error.txt")
    text = error_file.read_text()
    if text:
        # run_trial's error.txt opens with "Class: message", then a blank line and the traceback.
        head = text.strip().split("\n\n", 1)[0]
        where = error_file.uri
    else:
        # The trial failed before run_trial wrote anything (it could not start): Tune's error ends with the exception.
        lines = [line.strip() for line in str(trial.get_error() or "").splitlines() if line.strip()]
        head = lines[-1] if lines else "unknown error"
        where = trial_run_dir(experiment, str(trial)).uri.rsplit("/", 1)[0] + "/error.txt"
    message = " ".join(part.strip() for part in head.splitlines() if part.strip())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{trial} FAILED  {values}: {message}  (traceback: {where})"


class _DropTrialErrors(logging.Filter):
    """Tune's own report of a failed trial: a traceback per trial, then a list of the trials that failed."""

    PREFIXES = ("Trial task failed", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


@contextlib.contextmanager
def quiet_tune():
    """While a sweep runs: no Tune trial-error dumps and no Tune experiment banner (its new output engine prints
    both whatever the verbosity). Only this process's settings change, and only until the block ends."""
    loggers = [logging.getLogger(n) for n in ("ray.tune.execution.tune_controller", "ray.tune.tune")]
    drop = _DropTrialErrors()
    for lg in loggers:
        lg.addFilter(drop)
    key, before = "RAY_AIR_NEW_OUTPUT", os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ[key] = "0"
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
