"""The sweep driver: check the experiment name, prepare model and data once, run (or resume) Tune, tabulate.

Layout of an experiment (``<storage>/<name>/``): Tune's own files, ``sweep.yaml`` (the sweep file as run,
--set applied), one ``trial_<id>/`` per trial holding Tune's result.json, the trial's stdout/stderr and the
chronosweep run dir ``run/`` (docs/run-dir.md); at the end ``trials.csv`` and ``best.yaml``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from chronosweep.core.errors import UserError
from chronosweep.sweep.results import Summary, summarize
from chronosweep.sweep.resume import CHECKPOINT_PERIOD_S, reconcile
from chronosweep.sweep.spec import SAMPLERS, SweepSpec
from chronosweep.sweep.storage import Location, is_remote, join, normalize
from chronosweep.sweep.trainable import TrialPlan, run_point

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SPEC_FILE = "sweep.yaml"


class SweepExists(UserError):
    pass


@dataclass
class SweepOptions:
    name: str
    storage: str = "runs/sweeps"
    # None: an embedded local Ray; "auto" inside a Ray job; host:port or ray://... to join a cluster.
    address: str | None = None
    resume: bool = False
    # Resume when the experiment exists, start it when it does not (a re-run of the same command picks up
    # where the last one stopped, or only re-reports a finished sweep).
    allow_resume: bool = False
    # With resume: run failed trials again from scratch (else they stay failed).
    retry_failed: bool = False
    # CPUs of the embedded local Ray (default: every core of the machine).
    num_cpus: int | None = None


def in_ray_job() -> bool:
    # The job supervisor hands its driver the job's config in this variable.
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def experiment_location(opts: SweepOptions) -> Location:
    if not NAME_RE.match(opts.name):
        raise UserError(f"--name {opts.name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if in_ray_job() and not is_remote(opts.storage) and not Path(opts.storage).expanduser().is_absolute():
        raise UserError(f"--storage {opts.storage}: inside a Ray job a relative folder lands in the job's unpacked "
                        "working dir, which Ray deletes; pass an absolute path (a shared filesystem on a "
                        "multi-node cluster) or a URI such as s3://BUCKET/sweeps")
    return Location(join(normalize(opts.storage), opts.name))


def check_experiment(experiment: Location, spec: SweepSpec, resume: bool) -> None:
    """A sweep never writes into another's folder; a resume must be of the same sweep file."""
    exists = experiment.exists()
    if exists and not resume:
        raise SweepExists(f"sweep {experiment.uri} already exists; pass --resume to finish it, "
                          "or choose another --name")
    if resume and not exists:
        raise UserError(f"--resume: there is no sweep at {experiment.uri}")
    if resume:
        stored = experiment.child(SPEC_FILE).read_text()
        if stored is not None:
            before = yaml.safe_load(stored)
            changed = _changed_keys(before, spec.raw)
            if changed:
                raise UserError(
                    f"--resume: the sweep file differs from the one {experiment.uri} was started with "
                    f"(changed: {', '.join(changed)}); resume with the same file and --set values, "
                    f"or start a new --name"
                )


def _changed_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _changed_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(top level)"]


def pin_paths(base_raw: dict) -> dict:
    """Make every local path in the base config absolute: trials run in a scratch working directory."""
    from chronosweep.core.models import BUILTIN
    from chronosweep.data.files import data_root

    raw = copy.deepcopy(base_raw)
    model = raw.get("model")
    if isinstance(model, str) and model not in BUILTIN and Path(model).expanduser().exists():
        raw["model"] = str(Path(model).expanduser().resolve())
    data = raw.setdefault("data", {})
    if isinstance(data, dict):
        for key in ("path", "root", "name"):
            value = data.get(key)
            if isinstance(value, str) and Path(value).expanduser().exists() and not Path(value).is_absolute():
                data[key] = str(Path(value).expanduser().resolve())
        if data.get("root") is None:
            root, _ = data_root(None)
            if root is not None:
                data["root"] = str(root.resolve())
    ds = raw.get("deepspeed")
    if isinstance(ds, dict) and isinstance(ds.get("config"), str) and Path(ds["config"]).exists():
        ds["config"] = str(Path(ds["config"]).resolve())
    return raw


def prepare_models(spec: SweepSpec, progress=print) -> None:
    """Convert built-in models once, here, before any trial could race to do it (fetch_builtin also locks)."""
    from chronosweep.core.models import BUILTIN, resolve

    for name in spec.space.infos:
        if name in BUILTIN:
            info = resolve(name, fetch=True)
            progress(f"model {name}: {info.path}")


def check_data(base_raw: dict, progress=print) -> None:
    """Read the base trial's edits now: a missing or malformed file fails before Ray starts."""
    from chronosweep.data import load_edits
    from chronosweep.data.hygiene import describe
    from chronosweep.trial.config import config_from_dict

    progress(f"data: {describe(load_edits(config_from_dict(base_raw).data))}")


@contextlib.contextmanager
def connected(address: str | None, num_cpus: int | None):
    import ray

    if ray.is_initialized():
        # A caller (a notebook, a test) already holds a Ray session: use it and leave it as it was.
        yield
        return
    # Trials' output goes to <trial>/stdout and stderr (RunConfig.log_to_file), not into the driver's.
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local" starts a fresh Ray even when a `ray start` head runs on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _checkpoint_period():
    """Tune saves its experiment state at most every 10 s by default; a sweep's resume needs it fresher."""
    key = "TUNE_GLOBAL_CHECKPOINT_S"
    if key in os.environ:
        yield
        return
    os.environ[key] = CHECKPOINT_PERIOD_S
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _search(spec: SweepSpec, limit: int | None):
    """(search algorithm, param_space, max_concurrent_trials for TuneConfig)."""
    from ray import tune

    if spec.file.search == "grid":
        return None, {"params": tune.grid_search(spec.space.grid())}, limit
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    sampler_cls = getattr(optuna.samplers, SAMPLERS[spec.file.sampler])
    sampler = sampler_cls(seed=spec.file.seed, **spec.file.sampler_options)
    search = OptunaSearch(space=spec.space.define_by_run, metric="objective", mode=spec.objective.mode,
                          sampler=sampler)
    # Always the same chain (sweep.resume restores and re-saves it): the limiter is ours, not Tune's optional one.
    return ConcurrencyLimiter(search, max_concurrent=limit or max(1, spec.file.num_samples or 1)), {}, None


def _scheduler(spec: SweepSpec):
    es = spec.file.early_stopping
    if es is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # stop_last_trials=False: a trial that reaches max_t still runs to its evaluation.
    return ASHAScheduler(time_attr="training_iteration", metric=es.metric, mode=es.mode, grace_period=es.grace_period,
                         reduction_factor=es.reduction_factor, max_t=es.max_t, stop_last_trials=False)


def build_tuner(spec: SweepSpec, plan: TrialPlan, opts: SweepOptions, experiment: Location, progress=print):
    import ray
    from ray import tune

    from chronosweep.sweep.progress import TrialProgress
    from chronosweep.sweep.resources import concurrency
    from chronosweep.sweep.tracking import callbacks as tracking_callbacks

    trainable = tune.with_resources(tune.with_parameters(run_point, plan=plan), plan.resources.trial_request())
    if opts.resume and tune.Tuner.can_restore(experiment.uri):
        kept = reconcile(experiment, plan, grid=spec.file.search == "grid")
        if kept:
            progress(f"{len(kept)} trial(s) had finished after Tune last saved its state; kept as they are: "
                     f"{', '.join(kept)}")
        return tune.Tuner.restore(experiment.uri, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=opts.retry_failed)
    limit = concurrency(plan.resources, ray.cluster_resources(), spec.file.max_concurrent_trials)
    search, param_space, limit = _search(spec, limit)
    scheduler = _scheduler(spec)
    tune_config = tune.TuneConfig(
        # An ASHA scheduler brings its own metric (the epoch loss); Tune refuses a second one next to it.
        metric=None if scheduler else "objective",
        mode=None if scheduler else spec.objective.mode,
        search_alg=search,
        scheduler=scheduler,
        num_samples=(spec.file.num_samples or 1) if search is not None else 1,
        max_concurrent_trials=limit,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
    run_config = tune.RunConfig(
        name=Path(experiment.uri).name,
        storage_path=experiment.uri.rsplit("/", 1)[0],
        failure_config=tune.FailureConfig(max_failures=spec.file.max_failures),
        # Syncs each trial's working directory (its stdout/stderr, and run/ for remote storage) to the trial dir.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        log_to_file=True,
        # One bar and one line per finished trial (TrialProgress) instead of Tune's per-trial dumps.
        verbose=0,
        callbacks=[TrialProgress(spec.num_trials, spec.space, spec.objective.mode, experiment.uri),
                   *tracking_callbacks(spec.file.tracking, plan, opts.name)],
    )
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def run_sweep(spec: SweepSpec, opts: SweepOptions, progress=print) -> Summary:
    experiment = experiment_location(opts)
    if opts.allow_resume and not opts.resume and experiment.exists():
        progress(f"sweep {opts.name} exists at {experiment.uri}: resuming it")
        opts = replace(opts, resume=True)
    check_experiment(experiment, spec, opts.resume)
    base_raw = pin_paths(spec.base_raw)
    check_data(base_raw, progress)
    prepare_models(spec, progress)
    es = spec.file.early_stopping
    plan = TrialPlan(base_raw=base_raw, space=spec.space, objective=spec.objective, resources=spec.resources,
                     experiment=experiment.uri, stop_metric=es.metric if es else None)
    if not opts.resume or experiment.child(SPEC_FILE).read_text() is None:
        experiment.child(SPEC_FILE).write_text(yaml.safe_dump(spec.raw, sort_keys=False))
    progress(f"sweep {opts.name}: {spec.num_trials} trial(s), {spec.file.search}"
             f"{' (' + spec.file.sampler + ')' if spec.file.search == 'optuna' else ''}, objective "
             f"{spec.objective.describe()}; results in {experiment.uri}")
    from chronosweep.sweep.progress import quiet_tune

    with connected(opts.address, opts.num_cpus), _checkpoint_period(), quiet_tune():
        tuner = build_tuner(spec, plan, opts, experiment, progress)
        grid = tuner.fit()
    summary = summarize(grid, spec, experiment)
    summary.write(experiment)
    summary.print(file=sys.stdout)
    if summary.best_config is not None:
        best = experiment.child("best.yaml").uri
        progress(f"best trial's config: {best}  (run it alone: chronosweep edit {best} --out DIR)")
    progress(f"all trials: {experiment.child('trials.csv').uri}")
    unfinished = summary.counts.get("pending", 0) + summary.counts.get("interrupted", 0)
    if unfinished:
        progress(f"{unfinished} trial(s) did not finish: complete the sweep with the same command and --resume")
    return summary
