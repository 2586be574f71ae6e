"""A trial with several workers: Ray Train's TorchTrainer runs `run_trial` on every rank, inside the Tune trial.

Ray Train sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT and joins the ranks in one process
group before the worker function starts; the DeepSpeed engine (editing/deepspeed_engine.py) trains on that
group. Every rank runs the whole trial (ZeRO-3 needs all ranks in each forward pass, evaluation included) and
reports each epoch, since ray.train.report is a barrier; Ray Train forwards rank 0's reports to Tune.
Only rank 0 writes the trial's run dir; the others write to a scratch folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from chronosweep.sweep.storage import join, local_run_dir, trial_run_dir


def scaling_config(resources):
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=resources.num_workers,
        use_gpu=resources.gpus > 0,
        resources_per_worker=resources.worker_bundle(),
        placement_strategy=resources.placement,
    )


def train_distributed(raw: dict, plan, trial_dir: str) -> None:
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _worker,
        train_loop_config={"raw": raw, "plan": plan, "trial_dir": trial_dir},
        scaling_config=scaling_config(plan.resources),
        # Ray Train keeps its own run state next to the chronosweep run dir of the trial.
        run_config=RunConfig(name="train", storage_path=join(plan.experiment, trial_dir),
                             callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


def _worker(config: dict) -> None:
    import ray.train

    from chronosweep.sweep.trainable import epoch_report, final_report
    from chronosweep.trial.config import config_from_dict
    from chronosweep.trial.run import run_trial

    plan, rank = config["plan"], ray.train.get_context().get_world_rank()
    run = trial_run_dir(plan.experiment, config["trial_dir"])
    with tempfile.TemporaryDirectory(prefix="chronosweep-rank-") as scratch:
        # Rank 0 on another node than the storage writes locally and uploads (local_run_dir gives its cwd).
        out = local_run_dir(run) if rank == 0 else Path(scratch) / "run"

        def on_epoch(epoch: int, record: dict) -> None:
            ray.train.report(epoch_report(epoch, record, plan.stop_metric))

        try:
            metrics = run_trial(config_from_dict(config["raw"]), out, on_epoch=on_epoch, force=True)
        finally:
            if rank == 0 and out.exists():
                run.upload(out)
        ray.train.report(final_report(metrics, plan, run))
