"""Before Tune restores a sweep: trials whose run dir finished are recorded as finished in Tune's own state.

Tune saves its experiment state every few seconds (``TUNE_GLOBAL_CHECKPOINT_S``), so a driver killed after a
trial wrote ``metrics.json`` but before that state was saved again leaves the trial RUNNING or PENDING in what
Tune restores. Tune would launch it again, and the relaunch, in a fresh session, rewrites the trial's
``result.json``, ``progress.csv``, ``stdout`` and ``stderr`` (the per-epoch history shrinks to the one re-report)
even though the trial itself does not edit again. So before ``Tuner.restore`` each such trial is set to
TERMINATED with its final report as its last result, and the search algorithm is told it completed, through
Tune's own save/restore methods: the grid generator and the concurrency limiter free its slot, Optuna's study
gets its objective. Nothing of a finished trial's folder is touched.

Only Tune's files at the experiment's top level are rewritten, each whole (write and rename). Doing it twice is
harmless: every step is idempotent (Tune ignores a second completion).
"""

from __future__ import annotations

import fnmatch
import json
import tempfile
import time
from pathlib import Path

from chronosweep.sweep.storage import Location, finished_metrics, trial_run_dir
from chronosweep.sweep.trainable import TrialPlan, final_report

STATE_PATTERN = "experiment_state-*.json"
# Tune's cadence for saving that state, when the user has not chosen one: short, so that every trial is in the
# saved state long before it can finish (a trial takes seconds at the least), which is what lets a resume find it.
CHECKPOINT_PERIOD_S = "2"


def _newest(names: list[str], pattern: str) -> str | None:
    matches = sorted(n for n in names if fnmatch.fnmatch(n, pattern))
    return matches[-1] if matches else None


def _session(state_name: str) -> str:
    return state_name[len("experiment_state-"):-len(".json")]


def reconcile(experiment: Location, plan: TrialPlan, grid: bool) -> list[str]:
    """Mark finished-but-unrecorded trials TERMINATED in the newest experiment state; returns their folders."""
    names = experiment.names()
    state_name = _newest(names, STATE_PATTERN)
    if state_name is None:
        return []
    state_file = experiment.child(state_name)
    state = json.loads(state_file.read_text())
    done: dict[str, dict] = {}
    folders = []
    for entry in state["trial_data"]:
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        if trial.get("status") in ("TERMINATED", "ERROR") or not trial.get("relative_logdir"):
            continue
        run = trial_run_dir(experiment.uri, trial["relative_logdir"])
        metrics = finished_metrics(run)
        if metrics is None:
            continue
        try:
            report = final_report(metrics, plan, run)
        except ValueError:
            continue  # no objective: relaunched, it fails the way its first run did
        last = meta.get("last_result") or {}
        # Tune's results carry the trial's config; ResultGrid reads it from there.
        report.update(trial_id=trial["trial_id"], done=True, config=trial.get("config"),
                      training_iteration=int(last.get("training_iteration") or 0) + 1)
        trial["status"] = "TERMINATED"
        meta["last_result"] = report
        meta["last_result_time"] = time.time()
        entry[0], entry[1] = json.dumps(trial, indent=2), json.dumps(meta, indent=2)
        done[trial["trial_id"]] = report
        folders.append(trial["relative_logdir"])
    if not done:
        return []
    # The searcher first: a kill between the two writes leaves the state unpatched, and the next resume repeats both.
    _tell_searcher(experiment, names, _session(state_name), done, grid)
    state_file.write_text(json.dumps(state))
    return folders


def _tell_searcher(experiment: Location, names: list[str], session: str, done: dict[str, dict], grid: bool) -> None:
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator

    if grid:
        generator = BasicVariantGenerator()
    else:
        from ray.tune.search.optuna import OptunaSearch

        # The chain runner._search builds: SearchGenerator(ConcurrencyLimiter(OptunaSearch)); restore sets each
        # part's state (the limiter's real max_concurrent included).
        generator = SearchGenerator(ConcurrencyLimiter(OptunaSearch(), max_concurrent=1))
    patterns = [generator.CKPT_FILE_TMPL.format("*")]
    if not grid:
        patterns.append(OptunaSearch.CKPT_FILE_TMPL.format("*"))
    with tempfile.TemporaryDirectory(prefix="chronosweep-resume-") as tmp:
        copied = []
        for pattern in patterns:
            name = _newest(names, pattern)
            if name is None:
                return  # no saved searcher state (Tune restarts the search as it would anyway)
            Path(tmp, name).write_bytes(experiment.child(name).read_bytes())
            copied.append(name)
        generator.restore_from_dir(tmp)
        for trial_id, report in done.items():
            generator.on_trial_complete(trial_id, result=report)
        for name in copied:
            Path(tmp, name).unlink()
        generator.save_to_dir(tmp, session_str=session)
        for path in sorted(Path(tmp).iterdir()):
            if not path.name.startswith("."):
                experiment.child(path.name).write_bytes(path.read_bytes())
