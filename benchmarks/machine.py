"""The machine a benchmark ran on, with what its matrix multiplies reach, for reading seconds across machines.

    .venv/bin/python benchmarks/machine.py [--threads 2]

Machines of one kind differ by 2-3x (docs/benchmarks.md, "The machine"): every benchmark's JSON carries this
block, so a time is read against the host it was measured on. The GFLOP/s are a 256 x 576 x 1536 matrix product
(a SmolLM2 MLP projection over 256 tokens) in fp32 and bf16 on the given threads; the load average says whether
anything else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def gemm_gflops(dtype_name: str, threads: int, m: int = 256, k: int = 576, n: int = 1536, seconds: float = 0.5) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dtype = getattr(torch, dtype_name)
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(5):
            a @ b
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            count += 1
        return 2 * m * k * n * count / (time.perf_counter() - t0) / 1e9
    finally:
        torch.set_num_threads(before)


def describe(threads: int) -> dict:
    from chronosweep.trial.host import host, label

    fields = host()
    return {**fields, "label": label(fields), "threads": threads, "load_average": os.getloadavg()[0],
            "gemm_gflops_fp32": round(gemm_gflops("float32", threads), 1),
            "gemm_gflops_bf16": round(gemm_gflops("bfloat16", threads), 1)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    print(json.dumps(describe(ap.parse_args().threads), indent=2))
