"""Rank, world size and the process group a trial trains in.

A trial runs either under a multi-process launch (torchrun, Ray Train, the deepspeed launcher), which sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or as one plain process. In the second case
this module makes it a world of one, on a port nobody else holds, so concurrent trials on a node never
collide. The group then lives as long as the process: later trials reuse it (DeepSpeed keeps its own
handle on it, and tearing it down under DeepSpeed's feet breaks the next initialisation).
The launch variables themselves are set only while a DeepSpeed engine lives (see process_group).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    rank: int
    world_size: int
    local_rank: int


def launched_by_env(environ=os.environ) -> bool:
    return all(name in environ for name in LAUNCH_VARS)


def launch_from_env(environ=os.environ) -> Launch:
    """What the environment says about this process (a world of one when no launcher set it)."""
    if not launched_by_env(environ):
        return Launch(rank=0, world_size=1, local_rank=0)
    return Launch(rank=int(environ["RANK"]), world_size=int(environ["WORLD_SIZE"]), local_rank=int(environ["LOCAL_RANK"]))


def local_device(kind: str) -> torch.device:
    """The device this rank owns: cuda:LOCAL_RANK under a launcher (DeepSpeed puts the model there), else kind."""
    if kind == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(kind)


@contextlib.contextmanager
def process_group(backend: str, timeout: timedelta = timedelta(minutes=30)) -> Iterator[Launch]:
    """Join (or create) the default process group; inside the block the launch variables are set.

    DeepSpeed reads them (LOCAL_RANK above all) while it initialises and trains, so a world of one must
    look like a launch then. They are put back as they were afterwards: left behind, RANK/WORLD_SIZE/MASTER_PORT would
    make any child process (a subprocess trial, a Ray worker) believe it was launched, and bind a port
    this process holds.
    """
    saved = {name: os.environ.get(name) for name in LAUNCH_VARS}
    try:
        launch, extra = _join(backend, timeout)
        os.environ.update({k: v for k, v in extra.items() if k not in os.environ})
        yield launch
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _join(backend: str, timeout: timedelta) -> tuple[Launch, dict[str, str]]:
    if dist.is_initialized():
        # A launcher (Ray Train) or an earlier trial in this process set it up: reuse it as it is.
        launch = Launch(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", "0")))
        return launch, {"RANK": str(launch.rank), "WORLD_SIZE": str(launch.world_size), "LOCAL_RANK": str(launch.local_rank)}
    if launched_by_env():
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        return launch_from_env(), {}
    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        missing = [name for name in LAUNCH_VARS if name not in os.environ]
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: a half-configured launch")
    # Port 0 makes the OS pick a free port and the store holds it from that moment, so two trials
    # started at once on one node cannot both take it (a probe-then-bind port picker could race).
    # A MASTER_PORT the user set is honoured.
    port = int(os.environ.get("MASTER_PORT", "0"))
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=timeout, wait_for_workers=False)
    dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
    return Launch(rank=0, world_size=1, local_rank=0), dict(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port)
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for a launcher to hand to the processes it starts (they bind it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"
