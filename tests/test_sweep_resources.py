"""Resource arithmetic of sweep trials: Tune's request, Ray Train's worker bundles, concurrency caps."""

from __future__ import annotations

import math

import pytest

from chronosweep.sweep.resources import DRIVER_CPUS, Resources, concurrency, trials_that_fit


def problems_of(res: Resources) -> list[str]:
    out: list[str] = []
    res.check("resources", out)
    return out


def test_single_process_trial_holds_what_it_asks_for():
    res = Resources(cpus=2, gpus=0.5)
    assert not res.distributed and res.num_workers == 1
    assert res.trial_request() == {"cpu": 2, "gpu": 0.5}
    assert res.bundles() == [{"CPU": 2, "GPU": 0.5}]
    assert res.threads() == 2


def test_fractional_cpu_still_gets_one_thread():
    assert Resources(cpus=0.5).threads() == 1


def test_multi_gpu_trial_is_a_driver_plus_one_bundle_per_gpu():
    res = Resources(cpus=8, gpus=4)
    assert res.distributed and res.num_workers == 4
    assert res.trial_request() == {"cpu": DRIVER_CPUS, "gpu": 0}
    assert res.worker_bundle() == {"CPU": 2.0, "GPU": 1.0}
    assert res.bundles() == [{"CPU": DRIVER_CPUS}] + [{"CPU": 2.0, "GPU": 1.0}] * 4
    assert res.totals() == {"CPU": 8 + DRIVER_CPUS, "GPU": 4.0}
    assert res.threads() == 2


def test_cpu_workers_without_gpus():
    res = Resources(cpus=4, workers=2)
    assert res.distributed
    assert res.worker_bundle() == {"CPU": 2.0}
    assert "GPU" not in res.totals()


@pytest.mark.parametrize("res, fragment", [
    (Resources(cpus=0), "resources.cpus"),
    (Resources(gpus=-1), "resources.gpus: must be >= 0"),
    (Resources(gpus=2.5), "whole number"),
    (Resources(gpus=4, workers=2), "workers must equal gpus"),
    (Resources(workers=0), "resources.workers: must be >= 1"),
    (Resources(placement="ANYWHERE"), "resources.placement"),
])
def test_invalid_resources_are_reported(res, fragment):
    problems = problems_of(res)
    assert any(fragment in p for p in problems), problems


def test_valid_resources_have_no_problems():
    for res in (Resources(), Resources(cpus=4, gpus=1), Resources(cpus=1, gpus=0.25), Resources(cpus=16, gpus=8)):
        assert problems_of(res) == []


def test_how_many_trials_fit_a_cluster():
    cluster = {"CPU": 32.0, "GPU": 8.0}
    # 2 GPUs per trial: the GPUs bound it to 4 (CPUs would allow 32 / (4 + 1) = 6).
    assert trials_that_fit(Resources(cpus=4, gpus=2), cluster) == 4
    # CPU bound: 32 / 9 = 3 trials (8 worker CPUs + 1 driver CPU each).
    assert trials_that_fit(Resources(cpus=8, gpus=2), cluster) == 3
    # Fractional GPUs pack several trials on one device.
    assert trials_that_fit(Resources(cpus=1, gpus=0.25), cluster) == 32
    assert trials_that_fit(Resources(cpus=4, gpus=4), {"CPU": 64.0}) == 0


def test_concurrency_caps_distributed_trials_unless_the_user_sets_it():
    cluster = {"CPU": 32.0, "GPU": 8.0}
    assert concurrency(Resources(cpus=1), cluster, None) is None
    assert concurrency(Resources(cpus=1), cluster, 3) == 3
    assert concurrency(Resources(cpus=4, gpus=2), cluster, None) == 4
    assert concurrency(Resources(cpus=4, gpus=2), cluster, 2) == 2
    # An autoscaling cluster grows: the user's limit is taken as given.
    assert concurrency(Resources(cpus=4, gpus=2), cluster, 10) == 10
    # A cluster that cannot hold one trial yet (an autoscaler may add nodes): still one at a time.
    assert concurrency(Resources(cpus=4, gpus=2), {"CPU": 4.0}, None) == 1


def test_scaling_config_matches_the_arithmetic():
    from chronosweep.sweep.multigpu import scaling_config

    res = Resources(cpus=6, gpus=3, placement="SPREAD")
    sc = scaling_config(res)
    assert sc.num_workers == 3
    assert sc.use_gpu is True
    assert sc.resources_per_worker == {"CPU": 2.0, "GPU": 1.0}
    assert sc.placement_strategy == "SPREAD"
    cpu = scaling_config(Resources(cpus=4, workers=2))
    assert cpu.use_gpu is False and cpu.num_workers == 2
    assert math.isclose(cpu.resources_per_worker["CPU"], 2.0)
