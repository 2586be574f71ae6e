"""The dry-run's arithmetic: model shapes, trainable parameters, memory per phase (hand-computed), and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from chronosweep.cli import main
from chronosweep.core.shapes import ModelShape, ShapeError, find_shape, known_models, shape_from_config
from chronosweep.sweep.dryrun import dry_run, gpu_device, load_for_dry_run, trial_lengths
from chronosweep.sweep.estimate import Device, Lengths, estimate_trial, layer_activation_bytes, trainable
from chronosweep.trial.config import config_from_dict

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20

# vocab 100, hidden 8, MLP 16, 2 layers, 2 heads of 4 (q 8), 1 kv head (k, v 4), tied: small enough to add up by hand.
TOY = ModelShape(name="toy", model_type="llama", vocab_size=100, hidden_size=8, intermediate_size=16, num_layers=2,
                 num_heads=2, num_kv_heads=1, head_dim=4, tie_word_embeddings=True)
# Batches of 2 edits of at most 5 tokens; 3 probes of at most 6 tokens teacher-forced, 5 generated.
TOY_LENGTHS = Lengths(n_edits=4, train_max=5, train_mean=4.0, n_generate=3, generate_max=5, n_teacher=3, teacher_max=6,
                      locate_max=5, kl_max=3, target_mean=2.0)


def _cfg(method: str, **sections) -> object:
    return config_from_dict({"method": method, "model": "smollm2-135m", **sections})


def test_toy_parameter_count_by_hand():
    # embeddings 100*8; per layer q 8*8 + k 8*4 + v 8*4 + o 8*8 = 192, MLP 3*8*16 = 384, two norms 16; final norm 8.
    assert TOY.layer_params() == 192 + 384 + 16
    assert TOY.total_params() == 800 + 2 * 592 + 8


@pytest.mark.parametrize("model_id", sorted(known_models()))
def test_the_shipped_table_counts_what_transformers_builds(model_id):
    from transformers import AutoConfig, AutoModelForCausalLM

    entry = dict(known_models()[model_id])
    config = AutoConfig.for_model(entry.pop("model_type"), **entry)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert shape_from_config(known_models()[model_id], model_id).total_params() == sum(p.numel() for p in model.parameters())


def test_published_sizes():
    sizes = {"meta-llama/Llama-2-7b-hf": 6_738_415_616, "meta-llama/Meta-Llama-3-8B": 8_030_261_248,
             "mistralai/Mistral-7B-v0.1": 7_241_732_096, "Qwen/Qwen2.5-7B": 7_615_616_512,
             "tiiuae/falcon-7b": 6_921_720_704, "meta-llama/Llama-2-13b-hf": 13_015_864_320}
    assert {k: find_shape(k).total_params() for k in sizes} == sizes


def test_local_config_wins_and_unknown_models_are_refused(tiny_model_dir, fact_gpt2_dir):
    from transformers import AutoModelForCausalLM

    for folder in (tiny_model_dir, fact_gpt2_dir):
        shape = find_shape(str(folder))
        assert shape.source == str(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert shape.total_params() == sum(p.numel() for p in model.parameters())
    with pytest.raises(ShapeError, match="table of known models"):
        find_shape("someone/unknown-model-7b")


def test_trainable_parameters_match_the_measured_runs():
    """The counts docs/benchmarks.md reports from real runs on SmolLM2-135M, from the shape alone."""
    shape = find_shape("smollm2-135m")
    base = yaml.safe_load((ROOT / "configs/sweeps/methods.yaml").read_text())["base"]
    measured = {"lora": 1_216_512, "ptuning": 373_056, "full": 134_515_008, "freeze": 15_925_248, "rome": 884_736,
                "memit": 4_423_680}
    for method, count in measured.items():
        cfg = config_from_dict({**base, "method": method})
        assert trainable(method, cfg.options, shape)["params"] == count, method


def test_layer_activations_by_hand():
    # Frozen path, bf16: two norm inputs in fp32 (2*8*4), q, k, v, attention out (8+4+4+8)*2, gate/act/up 3*16*2.
    assert layer_activation_bytes(TOY, 2, trained=False) == 64 + 48 + 96
    # Without grouped k/v in sdpa (CUDA with a padding mask) k and v are saved at q's width.
    assert layer_activation_bytes(TOY, 2, trained=False, gqa=False) == 64 + 64 + 96
    # A trained fp32 layer also keeps two normalised states, two linear inputs (h each) and the down input (16).
    assert layer_activation_bytes(TOY, 4, trained=True) == 64 + 96 + 192 + (2 * 8 + 2 * 8 + 16) * 4


def test_full_fine_tuning_memory_by_hand():
    cfg = _cfg("full", full={"batch_size": 2}, precision="fp32", engine="torch")
    est = estimate_trial(cfg, TOY, TOY_LENGTHS, Device(kind="cpu"))
    m, p = est.memory, 1992
    assert (m.weights, m.optimizer, m.gradients) == (4 * p, 8 * p, 4 * p)
    # 2 x 5 tokens through both (trained) layers at 544 bytes each.
    assert m.activations == 10 * 2 * 544
    # Per token: logits (4) and three fp32 copies (12) of the vocabulary, the final hidden state; plus the tied
    # embedding's gradient.
    assert m.loss_head == 10 * (100 * 16 + 8 * 4) + 100 * 8 * 4
    # Optimizer state + (activations + head), which beats gradients + two copies of the embedding for the step.
    assert m.peak_phase == "training"
    assert m.total == 4 * p + 8 * p + max(m.activations + m.loss_head, 4 * p + 2 * 800 * 4)
    # Evaluation: 3 rows x 6 tokens of fp32 logits (two buffers of them on the CPU), plus two MLP-wide intermediates.
    assert m.evaluation == 18 * 100 * 4 * 2 + 18 * 16 * 4 * 2


def test_deepspeed_zero_shards_optimizer_state_and_gradients():
    cfg = _cfg("full", precision="bf16", engine="deepspeed", deepspeed={"zero_stage": 2})
    p = 1992
    one = estimate_trial(cfg, TOY, TOY_LENGTHS, gpu_device("A100-80GB", 8), world_size=1).memory
    four = estimate_trial(cfg, TOY, TOY_LENGTHS, gpu_device("A100-80GB", 8), world_size=4).memory
    # fp32 master weights and Adam's two states, divided over ranks; fp32 gradients divided (stage 2), bf16 ones not.
    assert (one.optimizer, four.optimizer) == (12 * p, 12 * p / 4)
    assert (one.gradients, four.gradients) == (4 * p + 2 * p, 4 * p / 4 + 2 * p)
    assert one.weights == four.weights == 2 * p and one.overhead == 600 * MiB
    offload = estimate_trial(_cfg("full", precision="bf16", engine="deepspeed",
                                  deepspeed={"zero_stage": 3, "offload_optimizer": True, "offload_params": True}),
                             TOY, TOY_LENGTHS, gpu_device("A100-80GB", 8), world_size=4).memory
    assert offload.optimizer == 0 and offload.weights == 2 * TOY.layer_params() * 2


def test_lora_and_rome_memory_by_hand():
    lora = estimate_trial(_cfg("lora", lora={"rank": 4, "layer_start": 1, "layer_width": 1, "batch_size": 2},
                               precision="fp32"), TOY, TOY_LENGTHS, Device(kind="cpu")).memory
    adapter = 4 * ((8 + 16) * 2 + (16 + 8))
    # fp32 adapter weights, gradients and two Adam states.
    assert (lora.adapters, lora.gradients, lora.optimizer) == (4 * adapter, 4 * adapter, 8 * adapter)
    # Only layer 1 is on the gradient path; its MLP adapters keep the shared gate/up input (8) and down's (16).
    assert lora.activations == 10 * (layer_activation_bytes(TOY, 4, trained=False) + (8 + 16) * 4)
    rome = estimate_trial(_cfg("rome", rome={"layer": 1, "context_templates": []}), TOY, TOY_LENGTHS, Device(kind="cpu"),
                          stats_cached=True).memory
    # C in fp64 and the solve's workspace: 2 x 16 x 16 x 8 bytes.
    assert rome.statistics == 2 * 16 * 16 * 8 and rome.optimizer == 0
    # One row of 5 tokens and a KL row of 3, through layer 1 (frozen path), plus 2 target positions and the KL one's
    # log-probabilities (x3) and the kept rows' hidden states.
    rows = 5 + 3
    assert rome.locate == rows * layer_activation_bytes(TOY, 4, trained=False) + 3 * 100 * 4 * 3 + rows * 8 * 4 * 3


def test_dry_run_of_the_methods_sweep_on_llama2_7b_needs_no_network(monkeypatch, capsys):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    code = main(["sweep", str(ROOT / "configs/sweeps/methods.yaml"), "--dry-run", "--gpu", "A100-80GB",
                 "--set", "base.model=meta-llama/Llama-2-7b-hf", "--set", "resources.gpus=1",
                 "--price-per-gpu-hour", "2", "--runs", "/nonexistent"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    rows = [line for line in lines if line[:2].strip().isdigit()]
    assert len(rows) == 9 and all("meta-llama/Llama-2-7b-hf" in r for r in rows)
    # Full fine-tuning of 6.7B parameters with DeepSpeed bf16 needs 16+ bytes per parameter: not on one 80 GB GPU.
    assert "warning: trial 4 (method=full)" in out and "will not fit" in out
    assert sum("warning:" in line for line in lines) == 1
    assert "cost" in lines[[i for i, line in enumerate(lines) if line.startswith("total:")][0]]


def test_fractional_gpus_share_one_device(tmp_path):
    spec = load_for_dry_run(str(ROOT / "configs/sweeps/methods-small.yaml"),
                            ["resources.gpus=0.25", "base.model=meta-llama/Llama-2-7b-hf"])
    dry = dry_run(spec, gpu="A100-40GB")
    lora = next(r for r in dry.rows if r.cfg.method == "lora")
    assert lora.capacity == pytest.approx(0.25 * 40e9)
    # A quarter of 40 GB cannot hold 7B bf16 weights (13.5 GB).
    assert not lora.fits and lora.gpu_hours == pytest.approx(lora.seconds / 3600 * 0.25)


def test_optuna_totals_scale_the_corners(tmp_path):
    path = tmp_path / "opt.yaml"
    path.write_text(yaml.safe_dump({"base": {"method": "lora", "data": {"limit": 4}},
                                    "space": {"lora.rank": {"type": "int", "low": 4, "high": 64}},
                                    "num_samples": 10, "resources": {"gpus": 1}}))
    dry = dry_run(load_for_dry_run(str(path), []), gpu="H100-80GB")
    assert not dry.exhaustive and [r.cfg.options.rank for r in dry.rows] == [4, 64]
    totals = dry.totals()
    assert totals["gpu_hours"] == pytest.approx(10 * sum(r.gpu_hours for r in dry.rows) / 2)
    assert totals["gpu_hours_low"] <= totals["gpu_hours"] <= totals["gpu_hours_high"]


def test_earlier_runs_time_the_trials(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": {"method": "lora", "data": {"limit": 4}, "lora": {"epochs": 10}},
                                     "space": {"lora.epochs": [10, 20]}, "search": "grid"}))
    spec = load_for_dry_run(str(sweep), [])
    cfg = config_from_dict({"method": "lora", "data": {"limit": 4}, "lora": {"epochs": 10}})
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "edit_seconds": 40.0, "eval_seconds": 8.0,
                                                  "n_edits": 4, "device": "cpu", "threads": 1}))
    flops = dry_run(spec)
    measured = dry_run(spec, run_roots=[tmp_path / "runs"])
    assert [r.time_source for r in flops.rows] == ["estimate (30% of peak)"] * 2
    assert [r.time_source for r in measured.rows] == ["1 earlier run(s)"] * 2
    same, double = measured.rows
    # The run's own config is timed as it ran; twice the epochs, twice the training.
    assert same.estimate.seconds["load"] + 40.0 + 8.0 == pytest.approx(same.seconds, rel=1e-6)
    assert double.seconds - same.seconds == pytest.approx(40.0, rel=1e-6)


def test_lengths_come_from_the_tokenizer_when_it_is_local(tiny_model_dir, data_root):
    cfg = config_from_dict({"model": str(tiny_model_dir), "data": {"root": str(data_root), "limit": 3}})
    lengths = trial_lengths(cfg, find_shape(str(tiny_model_dir)))
    assert lengths.source == "tokenizer" and lengths.n_edits == 3
    from transformers import AutoTokenizer

    from chronosweep.core.tokens import edit_examples
    from chronosweep.data import load_edits

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = edit_examples(tok, load_edits(cfg.data).requests, cfg.target_suffix)
    assert lengths.train_max == max(len(e["input_ids"]) for e in examples)


@pytest.mark.parametrize("method,section", [
    ("lora", {"targets": "attn", "rank": 4, "layer_start": 1, "layer_width": 2}),
    ("lora", {"targets": "both", "rank": 2, "layer_start": None}),
    ("ptuning", {"num_virtual_tokens": 5, "encoder_hidden_size": 16}),
    ("ptuning", {"num_virtual_tokens": 3, "encoder_hidden_size": 8, "encoder_type": "lstm", "encoder_num_layers": 2}),
    ("freeze", {"layer_start": 1, "layer_width": 2, "modules": "all"}),
    ("full", {"layer_start": 0, "layer_width": 1}),
])
def test_trainable_parameters_match_the_methods_on_real_models(method, section, tiny_model_dir, fact_gpt2_dir):
    """What the estimate counts is what the method's own setup makes trainable (peft or requires_grad)."""
    from chronosweep.core.models import load, resolve

    for folder in (tiny_model_dir, fact_gpt2_dir):
        cfg = config_from_dict({"model": str(folder), "method": method, method: section})
        info = resolve(str(folder))
        model, _ = load(info, torch.device("cpu"), torch.float32)
        if method == "lora":
            from peft import LoraConfig, get_peft_model

            from chronosweep.core.archs import target_modules

            o = cfg.options
            model = get_peft_model(model, LoraConfig(r=o.rank, lora_alpha=o.alpha, task_type="CAUSAL_LM",
                                                     target_modules=target_modules(info.model_type, o.targets),
                                                     layers_to_transform=o.window_layers()))
        elif method == "ptuning":
            from peft import get_peft_model

            from chronosweep.editing.methods.ptuning.method import prompt_encoder_config

            model = get_peft_model(model, prompt_encoder_config(cfg.options))
        else:
            from chronosweep.editing.methods.finetune.method import set_trainable

            o = cfg.options
            set_trainable(model, info, o.window_layers(), o.modules if method == "freeze" else "all")
        actual = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable(method, cfg.options, find_shape(str(folder)))["params"] == actual, folder.name


def test_the_dry_run_loads_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys; from chronosweep.cli import main; "
            f"main(['sweep', {str(ROOT / 'configs/sweeps/methods.yaml')!r}, '--dry-run', '--runs', '/nonexistent', "
            "'--set', 'base.model=meta-llama/Llama-2-7b-hf']); "
            "print('LOADED', sorted(m for m in ('torch', 'ray', 'transformers', 'polars') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out and "total: 9 trial(s)" in out


def test_protocols_repeat_the_work_they_repeat():
    import dataclasses

    from chronosweep.sweep.estimate import eval_repeats, work

    # 4 edits, a quarter of the probes locality probes.
    lengths = dataclasses.replace(TOY_LENGTHS, locality_share=0.25)
    batch, single = _cfg("lora"), _cfg("lora", protocol="single")
    sequential = _cfg("lora", protocol="sequential", eval_every=2)
    assert eval_repeats(batch, lengths) == 1.0
    # single: every probe once, then the locality quarter again after each of the other 3 edits.
    assert eval_repeats(single, lengths) == pytest.approx(1 + 3 * 0.25)
    # sequential every 2 of 4 edits: 2 checkpoints, the first scoring locality and half the edits' probes.
    assert eval_repeats(sequential, lengths) == pytest.approx(1 + 1 * (0.25 + 0.75 / 2))
    w_batch, w_single = work(batch, TOY, lengths, "cpu"), work(single, TOY, lengths, "cpu")
    assert w_single["eval"] == pytest.approx(w_batch["eval"] * 1.75)
    # lora's batch_size 8 takes the 4 edits in one step per epoch; single trains each edit alone: 4 steps per epoch.
    assert w_single["edit_layer_passes"] == pytest.approx(4 * w_batch["edit_layer_passes"])
