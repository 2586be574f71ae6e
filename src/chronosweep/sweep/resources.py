"""What one trial reserves on the cluster, and how many trials fit at once.

A trial with at most one GPU (fractions included) is one Tune actor holding ``cpus`` and ``gpus``.
A trial with more workers (by default one per GPU when it asks for more than one GPU) trains as a Ray Train
``TorchTrainer``: the Tune actor is only its driver and holds DRIVER_CPUS, and Ray Train reserves one bundle
per worker (``cpus / workers`` CPUs and one GPU each) in a placement group of its own. Tune does not see that
second reservation, so without max_concurrent_trials the sweep caps concurrency at what the cluster's GPUs
(and CPUs) hold when it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The Tune actor of a distributed trial only waits on its TorchTrainer and forwards reports.
DRIVER_CPUS = 1.0


@dataclass
class Resources:
    # CPUs and GPUs of one trial, all workers together; fractional GPUs share a device between trials.
    cpus: float = 1.0
    gpus: float = 0.0
    # Ray Train workers (ranks) per trial; default one per GPU when gpus > 1, else a single process.
    workers: int | None = None
    # Ray Train placement strategy for the workers of one trial: PACK keeps ranks on as few nodes as it can.
    placement: str = "PACK"

    def check(self, where: str, problems: list[str]) -> None:
        if self.cpus <= 0:
            problems.append(f"{where}.cpus: must be > 0, got {self.cpus}")
        if self.gpus < 0:
            problems.append(f"{where}.gpus: must be >= 0, got {self.gpus}")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            problems.append(f"{where}.gpus: more than one GPU must be a whole number (one per worker), got {self.gpus}")
        if self.workers is not None:
            if self.workers < 1:
                problems.append(f"{where}.workers: must be >= 1, got {self.workers}")
            elif self.workers > 1 and self.gpus > 0 and self.gpus != self.workers:
                problems.append(f"{where}.workers: each worker trains on one GPU, so workers must equal gpus "
                                f"({self.gpus:g}) when both are given, got {self.workers}")
        if self.placement not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            problems.append(f"{where}.placement: must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {self.placement!r}")

    @property
    def num_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return int(self.gpus) if self.gpus > 1 else 1

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1

    def trial_request(self) -> dict[str, float]:
        """What tune.with_resources gets: the whole trial, or only the driver of a distributed one."""
        if self.distributed:
            return {"cpu": DRIVER_CPUS, "gpu": 0}
        return {"cpu": self.cpus, "gpu": self.gpus}

    def worker_bundle(self) -> dict[str, float]:
        """Resources of one Ray Train worker (ScalingConfig.resources_per_worker)."""
        bundle = {"CPU": self.cpus / self.num_workers}
        if self.gpus > 0:
            bundle["GPU"] = self.gpus / self.num_workers
        return bundle

    def bundles(self) -> list[dict[str, float]]:
        """Every bundle one running trial holds: the Tune actor's, then one per Ray Train worker."""
        if not self.distributed:
            head = {"CPU": self.cpus}
            if self.gpus > 0:
                head["GPU"] = self.gpus
            return [head]
        return [{"CPU": DRIVER_CPUS}] + [self.worker_bundle() for _ in range(self.num_workers)]

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundle in self.bundles():
            for key, value in bundle.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def threads(self) -> int:
        """torch threads for one process of the trial (Ray itself would set OMP_NUM_THREADS=1)."""
        return max(1, int(self.cpus / self.num_workers))


def trials_that_fit(resources: Resources, cluster: dict[str, float]) -> int:
    """How many trials the cluster's totals hold at once (node boundaries ignored: an upper bound)."""
    fits = []
    for key, need in resources.totals().items():
        if need > 0:
            # A small epsilon: Ray stores fractional resources in units of 1e-4.
            fits.append(math.floor(cluster.get(key, 0.0) / need + 1e-6))
    return min(fits) if fits else 0


def concurrency(resources: Resources, cluster: dict[str, float], requested: int | None) -> int | None:
    """The max_concurrent_trials to give Tune.

    The user's value wins (on an autoscaling cluster only they know how far it grows). Without one, Tune's own
    limit (what the trial actors' requests allow) is right for single-process trials; distributed trials are
    capped at what the cluster holds now, since Tune cannot see their Ray Train workers.
    """
    if requested or not resources.distributed:
        return requested
    return max(1, trials_that_fit(resources, cluster))
