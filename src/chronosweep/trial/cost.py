"""What a trial's edit and evaluation cost in resources it actually got, and what else ran on the node meanwhile.

Wall seconds say how long a trial waited as much as how much it worked: on a shared CPU node a trial that runs
alone looks several times cheaper than the same trial beside another one. Process CPU seconds (user + system, all
threads) count the work; GPU seconds (wall x GPUs held) are the cost on GPU. Each trial also leaves a small
record under the cache (``activity/<host>/``), so every trial can say how many other trials overlapped it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

# Records older than this are left-overs of killed processes: removed when seen.
_STALE_SECONDS = 7 * 24 * 3600


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (torch's intra-op threads included)."""
    return time.process_time()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class NodeActivity:
    """This trial's record among the node's trials: started when the trial starts working, finished at its end."""

    path: Path | None
    start: float = field(default_factory=time.time)

    @classmethod
    def begin(cls, cache: Path, run_dir: Path) -> NodeActivity:
        folder = cache / "activity" / socket.gethostname()
        activity = cls(path=None)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{os.getpid()}-{time.time_ns()}.json"
            path.write_text(json.dumps({"pid": os.getpid(), "start": activity.start, "end": None,
                                        "run_dir": str(run_dir)}))
            activity.path = path
        except OSError:
            pass  # a read-only cache costs the concurrency count, not the trial
        return activity

    def overlapping(self, until: float) -> int:
        """Other trials on this node whose working time overlapped [start, until]."""
        if self.path is None:
            return 0
        count = 0
        for other in self.path.parent.glob("*.json"):
            if other == self.path:
                continue
            try:
                record = json.loads(other.read_text())
                if int(record["pid"]) == os.getpid():
                    continue  # an earlier trial of this process (one that failed never closed its record)
                start, end = float(record["start"]), record.get("end")
                if end is None and not _alive(int(record["pid"])):
                    end = other.stat().st_mtime  # killed before it could finish its record
                    if time.time() - end > _STALE_SECONDS:
                        other.unlink(missing_ok=True)
                        continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if start < until and (end is None or float(end) > self.start):
                count += 1
        return count

    def finish(self) -> int:
        """Close this trial's record; returns how many other trials overlapped it."""
        end = time.time()
        count = self.overlapping(end)
        if self.path is not None:
            try:
                record = json.loads(self.path.read_text())
                record["end"] = end
                self.path.write_text(json.dumps(record))
            except (OSError, ValueError):
                pass
        return count


def cost_fields(edit_cpu: float, eval_cpu: float, edit_seconds: float, n_edits: int, n_gpus: int,
                concurrent: int) -> dict:
    """The cost metrics of metrics.json that come from this module (evaluation/metrics.py declares them)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "edit_cpu_seconds": edit_cpu,
        "edit_cpu_seconds_per_edit": edit_cpu / n_edits if n_edits else None,
        "eval_cpu_seconds": eval_cpu,
        "edit_gpu_seconds": edit_seconds * n_gpus if n_gpus else None,
        "edit_gpu_seconds_per_edit": edit_seconds * n_gpus / n_edits if n_gpus and n_edits else None,
        "concurrent_trials": concurrent,
        "load_average": load,
    }
