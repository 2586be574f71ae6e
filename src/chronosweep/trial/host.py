"""What machine a trial ran on: the figures its seconds depend on, so times from two machines are not compared blind.

Sessions, CI runners and cluster nodes of one "2-core" kind differ by 2-3x in speed (the same chronosweep
LoRA trial took 70.6 s on one and 26.9 s on another: docs/benchmarks.md), and what bf16 buys on a CPU depends
on its instruction sets (AMX). metrics.json records the CPU model, the instruction sets that decide
matrix-multiply speed, the cores and the GPU; the report warns when trials it compares ran on different ones.
"""

from __future__ import annotations

import os
import platform
from functools import cache

# Flags that change what a matrix multiply costs on x86 (AMX: bf16 tiles; AVX-512 bf16: bf16 dot products).
FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@cache
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    """(model name, the FEATURES it has) from /proc/cpuinfo; (platform.processor(), ()) where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return platform.processor() or platform.machine(), ()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), tuple(f for f in FEATURES if f in flags)


def host(device_type: str = "cpu") -> dict:
    """The host fields of metrics.json."""
    model, features = _cpuinfo()
    out = {"cpu": model, "cpu_features": list(features), "logical_cpus": os.cpu_count(), "machine": platform.machine(),
           "gpu": None}
    if device_type == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name()
    return out


def label(fields: dict) -> str:
    """One string a report can group by: the CPU model and its AMX/AVX-512 capability, and the GPU if any."""
    feats = fields.get("cpu_features") or []
    tag = "AMX" if "amx_bf16" in feats else "AVX-512" if "avx512f" in feats else "AVX2" if "avx2" in feats else ""
    cpu = f"{fields.get('cpu') or '?'}{f' ({tag})' if tag else ''}, {fields.get('logical_cpus')} CPUs"
    return f"{cpu}, {fields['gpu']}" if fields.get("gpu") else cpu
