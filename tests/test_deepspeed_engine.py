"""The DeepSpeed engine on CPU (gloo): config building, the launch environment, LoRA training and sharding.

The first DeepSpeed test in a fresh environment JIT-builds DeepSpeed's shm comm op (~35-75 s on 2 cores);
it is cached in ~/.cache/torch_extensions afterwards and each test then takes a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from chronosweep.core.typed import ConfigError
from chronosweep.editing.deepspeed_engine import DeepSpeedConfigError, build_ds_config
from chronosweep.editing.distributed import LAUNCH_VARS, free_port
from chronosweep.editing.registry import get_method
from chronosweep.editing.training import shard
from tests.trainkit import load_tiny, make_ctx, tiny_requests

ROOT = Path(__file__).resolve().parents[1]
LORA = ["method=lora", "lora.layer_start=1", "lora.layer_width=2", "lora.batch_size=3", "lora.lr=5e-3"]


def lora_trial(model_dir, overrides):
    cfg, ctx = make_ctx(model_dir, [*LORA, *overrides])
    torch.manual_seed(0)
    model, tokenizer = load_tiny(ctx)
    outcome = get_method("lora").edit(model, tokenizer, tiny_requests(), cfg.options, ctx)
    return outcome


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


# --- config --------------------------------------------------------------------------------------------


def test_trial_settings_reach_the_deepspeed_config(tiny_model_dir):
    cfg, _ = make_ctx(tiny_model_dir, [*LORA, "deepspeed.zero_stage=2", "deepspeed.offload_optimizer=true",
                                       "grad_clip=0.5"])
    out = build_ds_config(cfg, lr=1e-3, weight_decay=0.1, micro_batch=4, world_size=2, dtype=torch.bfloat16)
    assert out["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert out["gradient_clipping"] == 0.5
    assert out["optimizer"]["params"]["lr"] == 1e-3 and out["optimizer"]["params"]["weight_decay"] == 0.1
    assert out["optimizer"]["params"]["torch_adam"] is True
    assert out["bf16"]["enabled"] and not out["fp16"]["enabled"]
    assert out["train_batch_size"] == 8


def test_json_config_wins_and_auto_defers(tiny_model_dir, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": 2,
        "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}},
        "optimizer": {"params": {"lr": 7e-4}},
        "gradient_clipping": 2.0,
    }))
    cfg, _ = make_ctx(tiny_model_dir, [*LORA, "deepspeed.zero_stage=1", f"deepspeed.config={path}"])
    out = build_ds_config(cfg, lr=1e-3, weight_decay=0.0, micro_batch=4, world_size=1, dtype=torch.float32)
    assert out["zero_optimization"]["stage"] == 3 and out["zero_optimization"]["offload_param"] == {"device": "cpu"}
    assert out["optimizer"]["type"] == "AdamW" and out["optimizer"]["params"]["lr"] == 7e-4
    assert out["gradient_clipping"] == 2.0
    assert out["train_micro_batch_size_per_gpu"] == 4 and out["train_batch_size"] == 8

    path.write_text(json.dumps({"optimizer": {"type": "SGD", "params": {"momentum": 0.9}}}))
    out = build_ds_config(cfg, lr=1e-3, weight_decay=0.0, micro_batch=4, world_size=1, dtype=torch.float32)
    assert out["optimizer"] == {"type": "SGD", "params": {"lr": 1e-3, "momentum": 0.9}}


def test_json_config_batch_size_conflict_is_named(tiny_model_dir, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16}))
    cfg, _ = make_ctx(tiny_model_dir, [*LORA, f"deepspeed.config={path}"])
    with pytest.raises(DeepSpeedConfigError, match=r"ds\.json: train_micro_batch_size_per_gpu=16"):
        build_ds_config(cfg, lr=1e-3, weight_decay=0.0, micro_batch=4, world_size=1, dtype=torch.float32)


def test_bad_deepspeed_settings_fail_at_config_time(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        make_ctx(tiny_model_dir, ["deepspeed.offload_optimizer=true", "deepspeed.offload_params=true",
                                  "deepspeed.zero_stage=0", f"deepspeed.config={bad}"])
    text = str(err.value)
    assert "deepspeed.offload_optimizer: needs zero_stage 1, 2 or 3" in text
    assert "deepspeed.offload_params: needs zero_stage 3" in text
    assert "bad.json: not a readable JSON file" in text
    with pytest.raises(ConfigError, match="missing.json: no such file"):
        make_ctx(tiny_model_dir, [f"deepspeed.config={tmp_path / 'missing.json'}"])


@pytest.mark.parametrize("n, world", [(6, 1), (7, 2), (5, 3), (2, 4)])
def test_shard_splits_like_distributed_sampler(n, world):
    order = [4, 0, 6, 2, 1, 5, 3][:n]
    shards = [shard(order, rank, world) for rank in range(world)]
    for rank in range(world):
        sampler = DistributedSampler(order, num_replicas=world, rank=rank, shuffle=False)
        assert shards[rank] == [order[i] for i in sampler]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    assert set().union(*shards) == set(order)
    assert shard(order, 0, 1) == order


# --- training -----------------------------------------------------------------------------------------


def test_deepspeed_lora_trains_and_matches_plain_torch(tiny_model_dir):
    saved = {name: os.environ.get(name) for name in LAUNCH_VARS}
    plain = lora_trial(tiny_model_dir, ["engine=torch", "lora.epochs=6"])
    ds = lora_trial(tiny_model_dir, ["engine=deepspeed", "lora.epochs=6"])
    losses = [h["loss"] for h in ds.history]
    assert losses[-1] < losses[0] - 0.3, losses
    # Same seed, same AdamW, same clipping: the engines differ by float rounding only.
    for a, b in zip(plain.history, ds.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    wp, wd = lora_weights(plain.model), lora_weights(ds.model)
    assert wp.keys() == wd.keys() and wp
    assert max((wp[k] - wd[k]).abs().max().item() for k in wp) < 1e-4
    # The launch variables DeepSpeed needed are gone again: a child process must not inherit a fake launch.
    assert {name: os.environ.get(name) for name in LAUNCH_VARS} == saved
    # A second trial in the same process reuses the process group.
    again = lora_trial(tiny_model_dir, ["engine=deepspeed", "lora.epochs=2", "deepspeed.zero_stage=2"])
    assert again.history[0]["loss"] == pytest.approx(ds.history[0]["loss"], abs=1e-4)


def test_zero3_hands_back_whole_parameters(tiny_model_dir):
    ds = lora_trial(tiny_model_dir, ["engine=deepspeed", "lora.epochs=3", "deepspeed.zero_stage=3",
                                     "deepspeed.offload_params=true", "deepspeed.offload_optimizer=true"])
    plain = lora_trial(tiny_model_dir, ["engine=torch", "lora.epochs=3"])
    for (name, p), (_, q) in zip(ds.model.named_parameters(), plain.model.named_parameters()):
        assert p.shape == q.shape and p.numel() > 0, name
        assert not any(a.startswith("ds_") for a in vars(p)), name
    wp, wd = lora_weights(plain.model), lora_weights(ds.model)
    assert max((wp[k] - wd[k]).abs().max().item() for k in wp) < 1e-3
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(ds.model(**batch).logits, plain.model(**batch).logits, atol=1e-3, rtol=1e-3)


WORKER = """
import json, sys, torch
sys.path.insert(0, {root!r})
import chronosweep.editing.training as training
from tests.test_deepspeed_engine import lora_trial, lora_weights
from pathlib import Path
seen = []
real_collate = training.collate
def collate(examples, pad_id):
    seen.append([e["input_ids"] for e in examples])
    return real_collate(examples, pad_id)
training.collate = collate
out = lora_trial(Path({model!r}), ["engine=deepspeed", "lora.epochs=4", "lora.batch_size=4", "deepspeed.zero_stage=2"])
w = lora_weights(out.model)
rank = torch.distributed.get_rank()
json.dump({{"history": out.history, "sum": sum(float(t.double().sum()) for t in w.values()),
           "first": w[sorted(w)[0]].flatten()[:8].tolist(), "seen": seen}}, open({dest!r} + f"/rank{{rank}}.json", "w"))
"""


def test_two_ranks_shard_the_batch_and_stay_in_sync(tiny_model_dir, tmp_path):
    port = free_port()
    script = WORKER.format(root=str(ROOT), model=str(tiny_model_dir), dest=str(tmp_path))
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # Gradients are averaged across ranks, so both hold the same weights and report the same epoch losses.
    assert r0["sum"] == pytest.approx(r1["sum"], rel=1e-6)
    assert r0["first"] == pytest.approx(r1["first"], abs=1e-6)
    assert [h["loss"] for h in r0["history"]] == pytest.approx([h["loss"] for h in r1["history"]])
    assert r0["history"][-1]["loss"] < r0["history"][0]["loss"]
    # 6 edits, batch 4 over 2 ranks: micro-batches of 2, each rank 3 edits (2 steps) per epoch, disjoint.
    assert len(r0["seen"]) == len(r1["seen"]) == 4 * 2
    for epoch in range(4):
        mine = [tuple(x) for b in r0["seen"][2 * epoch:2 * epoch + 2] for x in b]
        theirs = [tuple(x) for b in r1["seen"][2 * epoch:2 * epoch + 2] for x in b]
        assert len(mine) == len(theirs) == 3
        assert not set(mine) & set(theirs) and len(set(mine) | set(theirs)) == 6


@pytest.mark.slow
def test_default_model_lora_loss_is_engine_independent():
    from chronosweep.core.models import load, resolve
    from chronosweep.editing.base import EditContext
    from chronosweep.trial.config import load_config

    histories = {}
    for engine in ("torch", "deepspeed"):
        cfg = load_config(None, ["method=lora", f"engine={engine}", "lora.epochs=2", "lora.batch_size=3"])
        info = resolve(cfg.model)
        ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32, run_dir=None,
                          cache_dir=Path("/nonexistent"))
        model, tokenizer = load(info, ctx.device, ctx.dtype)
        torch.manual_seed(0)
        outcome = get_method("lora").edit(model, tokenizer, tiny_requests(), cfg.options, ctx)
        histories[engine] = [h["loss"] for h in outcome.history]
    assert histories["torch"][-1] < histories["torch"][0]
    assert histories["deepspeed"] == pytest.approx(histories["torch"], abs=1e-4)
