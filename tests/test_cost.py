"""Cost that survives concurrency: CPU seconds count work, not waiting; each trial knows who ran beside it."""

from __future__ import annotations

import json
import os
import time

from chronosweep.trial.cost import NodeActivity, cost_fields, cpu_seconds


def test_cpu_seconds_count_work_not_waiting():
    start = cpu_seconds()
    time.sleep(0.3)
    slept = cpu_seconds() - start
    start, wall = cpu_seconds(), time.perf_counter()
    # On a shared machine a busy loop gets only part of the wall time; it must still be counted as it accrues.
    while cpu_seconds() - start < 0.2 and time.perf_counter() - wall < 20:
        sum(range(1000))
    assert slept < 0.1 and cpu_seconds() - start >= 0.2


def _other_process(activity: NodeActivity, pid: int) -> NodeActivity:
    """Make a record look as if another (live) process wrote it."""
    record = json.loads(activity.path.read_text())
    activity.path.write_text(json.dumps({**record, "pid": pid}))
    return activity


def test_trials_on_one_node_count_each_other(tmp_path):
    alive = os.getppid()  # a live process that is not this one
    a = _other_process(NodeActivity.begin(tmp_path, tmp_path / "a"), alive)
    b = NodeActivity.begin(tmp_path, tmp_path / "b")
    assert b.finish() == 1  # a is still running
    c = NodeActivity.begin(tmp_path, tmp_path / "c")  # starts after b ended: b's record is this process's own
    assert c.finish() == 1  # a, not b: a process runs one trial at a time, its earlier records are its past
    b2 = _other_process(NodeActivity.begin(tmp_path, tmp_path / "b2"), alive)
    d = NodeActivity.begin(tmp_path, tmp_path / "d")
    assert d.finish() == 2  # a and b2, both still running
    b2.finish()
    a.finish()
    # A trial that finished before this one began is not counted; a killed one (dead pid, no end) ends at its
    # record's last write.
    folder = a.path.parent
    (folder / "1-old.json").write_text(json.dumps({"pid": os.getpid(), "start": 1.0, "end": 2.0, "run_dir": "x"}))
    dead = folder / "999999999-dead.json"
    dead.write_text(json.dumps({"pid": 999_999_999, "start": 1.0, "end": None, "run_dir": "y"}))
    os.utime(dead, (3.0, 3.0))
    d = NodeActivity.begin(tmp_path, tmp_path / "d")
    assert d.finish() == 0
    assert not dead.exists()  # a week-old leftover is cleaned up


def test_cost_fields_per_edit_and_gpu_seconds():
    cpu = cost_fields(edit_cpu=30.0, eval_cpu=10.0, edit_seconds=20.0, n_edits=10, n_gpus=0, concurrent=1)
    assert cpu["edit_cpu_seconds_per_edit"] == 3.0 and cpu["edit_gpu_seconds"] is None
    assert cpu["concurrent_trials"] == 1
    gpu = cost_fields(edit_cpu=5.0, eval_cpu=1.0, edit_seconds=20.0, n_edits=10, n_gpus=2, concurrent=0)
    assert gpu["edit_gpu_seconds"] == 40.0 and gpu["edit_gpu_seconds_per_edit"] == 4.0


def _measure_in_child(path: str, log: str, out: str) -> None:
    from pathlib import Path

    from chronosweep.evaluation.evaluate import Measurement, measure_once

    def compute():
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return Measurement({"p": f"measured by {os.getpid()}"}, [None], [None])

    m, cached = measure_once(Path(path), compute)
    Path(out).write_text(json.dumps([m.continuations["p"], cached]))


def test_trials_started_together_measure_the_unedited_model_once(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    path, log = tmp_path / "pre_eval" / "key.json", tmp_path / "computed.log"
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    procs = [ctx.Process(target=_measure_in_child, args=(str(path), str(log), str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1
    results = [json.loads(o.read_text()) for o in outs]
    assert len({text for text, _ in results}) == 1
    assert sorted(cached for _, cached in results) == [False, True, True]


def test_host_reads_the_cpu_and_its_matrix_instruction_sets(monkeypatch, tmp_path):
    from chronosweep.trial import host

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f amx_bf16 "
                    "amx_tile\n\nprocessor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2\n")
    real_open = open
    monkeypatch.setattr("builtins.open",
                        lambda path, *a, **k: real_open(info if path == "/proc/cpuinfo" else path, *a, **k))
    host._cpuinfo.cache_clear()
    try:
        fields = host.host("cpu")
    finally:
        host._cpuinfo.cache_clear()
    assert fields["cpu"] == "Test CPU 9000"
    assert fields["cpu_features"] == ["avx2", "fma", "avx512f", "amx_bf16", "amx_tile"]  # the first CPU's flags
    assert host.label(fields) == f"Test CPU 9000 (AMX), {fields['logical_cpus']} CPUs"
    other = host.label({**fields, "cpu_features": ["avx2"], "gpu": "NVIDIA H200"})
    assert other == f"Test CPU 9000 (AVX2), {fields['logical_cpus']} CPUs, NVIDIA H200"
