"""The DeepSpeed engine: ZeRO stages, CPU offload and bf16/fp16 for every gradient method.

The trial config sets the common knobs (deepspeed.zero_stage, offload_optimizer, offload_params,
precision, grad_clip); a DeepSpeed JSON file (deepspeed.config) may add or override anything else.
The optimiser is the same AdamW the plain engine uses (``torch_adam``), so switching engines does not
change results and needs no fused-op JIT build.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.distributed as dist

from chronosweep.core.errors import UserError
from chronosweep.core.typed import deep_merge
from chronosweep.editing.base import EditContext
from chronosweep.editing.distributed import backend_for, process_group
from chronosweep.editing.runtime import Runtime


class DeepSpeedConfigError(UserError, ValueError):
    pass


def read_json_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepSpeedConfigError(f"deepspeed.config: {path}: no such file") from None
    except json.JSONDecodeError as err:
        raise DeepSpeedConfigError(f"deepspeed.config: {path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise DeepSpeedConfigError(f"deepspeed.config: {path}: the top level must be a JSON object")
    return data


def _drop_auto(tree: dict) -> dict:
    # "auto" (the Hugging Face convention) means "whatever the trial decides".
    return {k: _drop_auto(v) if isinstance(v, dict) else v for k, v in tree.items() if v != "auto"}


def build_ds_config(cfg: Runtime, *, lr: float, weight_decay: float, micro_batch: int, world_size: int,
                    dtype: torch.dtype) -> dict:
    """The DeepSpeed config dict for one training run: trial settings, then the JSON file's on top.

    Batch sizes are the training loop's to decide (it builds the micro-batches): a file may leave them
    out, say "auto", or agree with the loop.
    """
    ds = cfg.deepspeed
    zero: dict = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    ours = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        # DeepSpeed clips at 1.0 unless told otherwise; 0 disables it, as in the plain engine.
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "weight_decay": weight_decay, "betas": [0.9, 0.999], "eps": 1e-8, "torch_adam": True},
        },
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if not ds.config:
        ours["train_batch_size"] = micro_batch * world_size
        return ours
    user = _drop_auto(read_json_config(ds.config))
    given = user.get("train_micro_batch_size_per_gpu")
    if given is not None and given != micro_batch:
        raise DeepSpeedConfigError(
            f"deepspeed.config: {ds.config}: train_micro_batch_size_per_gpu={given} disagrees with the method's "
            f"batch_size ({micro_batch} per rank); remove it or set it to \"auto\""
        )
    user_opt = user.get("optimizer")
    if isinstance(user_opt, dict) and str(user_opt.get("type", "AdamW")).lower() not in ("adam", "adamw"):
        # Another optimiser type takes none of AdamW's parameters: the file's block replaces ours whole,
        # keeping only the method's learning rate where the file names none.
        ours["optimizer"] = {**user_opt, "params": {"lr": lr, **user_opt.get("params", {})}}
        user = {k: v for k, v in user.items() if k != "optimizer"}
    merged = deep_merge(ours, user)
    expected = micro_batch * int(merged.get("gradient_accumulation_steps", 1)) * world_size
    if merged.get("train_batch_size", expected) != expected:
        raise DeepSpeedConfigError(
            f"deepspeed.config: {ds.config}: train_batch_size={merged['train_batch_size']} but the method's batch gives "
            f"{micro_batch} per rank x {merged.get('gradient_accumulation_steps', 1)} accumulation x {world_size} "
            f"ranks = {expected}; remove it or set it to \"auto\""
        )
    merged["train_batch_size"] = expected
    return merged


class DeepSpeedEngine:
    def __init__(self, model, lr: float, weight_decay: float, batch_size: int, ctx: EditContext):
        import deepspeed
        from deepspeed.accelerator import get_accelerator
        from deepspeed.utils import logger as ds_logger

        # DeepSpeed logs its whole config and every init step at INFO; a sweep runs hundreds of these.
        ds_logger.setLevel(logging.WARNING)
        accel = get_accelerator().device_name()
        if accel != ctx.device.type:
            raise RuntimeError(
                f"DeepSpeed selected the {accel} accelerator but the trial runs on {ctx.device}; "
                f"set DS_ACCELERATOR={ctx.device.type} or use engine: torch"
            )
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the method left no trainable parameters")
        # DeepSpeed reads the launch variables during training too (ZeRO-3 looks up LOCAL_RANK per step),
        # so they stay set for the engine's life and are put back by close().
        self._launch_env = contextlib.ExitStack()
        launch = self._launch_env.enter_context(process_group(backend_for(ctx.device)))
        try:
            self.rank, self.world_size = launch.rank, launch.world_size
            # The method's batch_size is the batch per optimiser step, whatever the number of ranks.
            self.micro_batch = math.ceil(batch_size / self.world_size)
            self.config = build_ds_config(ctx.runtime, lr=lr, weight_decay=weight_decay, micro_batch=self.micro_batch,
                                          world_size=self.world_size, dtype=ctx.dtype)
            self.module = model
            self.engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=self.config)
        except BaseException:
            self._launch_env.close()
            raise
        self.device = self.engine.device
        self.zero3 = self.engine.zero_optimization_stage() == 3

    def step(self, batch: dict) -> float:
        return self.step_weighted([(batch, 1.0)])[0]

    def step_weighted(self, parts: list[tuple[dict, float]]) -> list[float]:
        """One optimiser step on the weighted sum of the parts' losses; returns each part's loss."""
        losses = [self.engine(**batch).loss for batch, _ in parts]
        self.engine.backward(sum(w * loss for loss, (_, w) in zip(losses, parts)))
        self.engine.step()
        return [float(loss.detach()) for loss in losses]

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        """Hand the trained weights back as ordinary tensors in the module, and free the optimiser."""
        import deepspeed

        try:
            if self.zero3:
                # ZeRO-3 leaves each parameter as an empty placeholder plus a shard; evaluation needs whole
                # tensors, and once the engine is gone nothing would gather them before a forward pass.
                params = list(self.module.parameters())
                with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                    full = [p.data.detach().clone() for p in params]
                self.engine.destroy()
                for p, tensor in zip(params, full):
                    p.data = tensor
                    for attr in [a for a in vars(p) if a.startswith("ds_")]:
                        delattr(p, attr)
            else:
                self.engine.destroy()
            self.engine = None
        finally:
            self._launch_env.close()
