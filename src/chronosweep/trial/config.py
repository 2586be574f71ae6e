"""Typed trial configuration: one YAML file (or none) plus dotted --set overrides, validated in one pass.

The top level holds what every trial shares; each method's options live in a section named after the
method (``lora:``, ``rome:`` ...) and are typed by that method's own ``Options`` dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from chronosweep.core.typed import ConfigError, build, deep_merge, set_dotted, to_dict
from chronosweep.data.config import DataConfig
from chronosweep.editing.registry import METHODS
from chronosweep.editing.runtime import DeepSpeedConfig, Runtime
from chronosweep.evaluation.config import EvalConfig


@dataclass
class StreamConfig:
    """An edit stream (protocol sequential): edits arrive in waves in the order the world changed, and after each
    wave the run records that wave's reliability, every earlier wave's retention, locality, leakage and history
    (stream.jsonl in the run dir)."""

    # The waves: "year" (one wave per year of time_start), an integer N (N edits per wave), or null (no stream:
    # edits one at a time, the plain sequential protocol).
    wave: int | Literal["year"] | None = None
    # The order edits arrive in: time_start (every edit needs one) or file.
    order: Literal["time_start", "file"] = "time_start"


@dataclass
class TrialConfig:
    model: str = "smollm2-135m"
    revision: str | None = None
    trust_remote_code: bool = False
    seed: int = 0
    method: str = "lora"
    # How the edits meet the model (trial.protocols): batch (all together, scored at the end), single (each on the
    # unedited model, scored, then restored exactly) or sequential (one after another, scored at the end and every
    # eval_every edits).
    protocol: Literal["batch", "single", "sequential"] = "batch"
    # sequential: also score the edits applied so far after every N edits (null: at the end only).
    eval_every: int | None = None
    # sequential: the order edits are applied in; auto is time_start order when every edit has one, else file order.
    edit_order: Literal["auto", "file", "time"] = "auto"
    # sequential: edits in waves, scored after each (stream.jsonl); stream.order replaces edit_order.
    stream: StreamConfig = field(default_factory=StreamConfig)
    # Per-model option values (configs/presets/<method>/<model>.yaml): auto picks the one made for the model (by name,
    # then by architecture and shape); none uses the options' defaults; or a preset name (rome/llama-2-7b) or file.
    # Options set in the config win over the preset.
    preset: str = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 on CUDA where supported, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # auto: DeepSpeed when CUDA is present, plain PyTorch otherwise.
    engine: Literal["auto", "torch", "deepspeed"] = "auto"
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    # Gradient-norm clipping for every engine (DeepSpeed would otherwise clip at 1.0 silently); 0 disables.
    grad_clip: float = 1.0
    # torch intra-op threads; null lets torch decide (Ray sets 1 per CPU of the trial).
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Appended to the new object in training targets so the model also learns where the object ends
    # ("Li Qiang." rather than "Li Qiangonglao"); evaluation still scores the object alone.
    target_suffix: str = "."
    # Write the edited weights' artifact (adapter, prompt encoder) into the run dir.
    save_artifacts: bool = True
    # The selected method's options, typed by its Options dataclass (filled by load_config).
    options: Any = None
    # The keys of the method's section the config set (filled by config_from_dict): a preset fills in the others.
    given: dict = field(default_factory=dict, repr=False, compare=False)
    # What trial.run.plan found for the model: the preset that filled in the options (metrics.json's preset).
    applied_preset: dict | None = field(default=None, repr=False, compare=False)

    def runtime(self) -> Runtime:
        """What the method is told about the run (it never sees this config)."""
        return Runtime(seed=self.seed, target_suffix=self.target_suffix, engine=self.engine, grad_clip=self.grad_clip,
                       deepspeed=self.deepspeed)

    def to_dict(self) -> dict:
        out = to_dict(self)
        out.pop("options")
        out.pop("given")
        out.pop("applied_preset")
        out[self.method] = to_dict(self.options)
        return out


_SHARED_KEYS = {f.name for f in dataclasses.fields(TrialConfig)} - {"options", "given", "applied_preset"}


def parse_value(text: str) -> Any:
    """--set values are YAML scalars: 1e-3, true, null, [10, 12] all mean what they say."""
    return yaml.safe_load(text) if text != "" else ""


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not valid YAML: {err}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"])
    return data


def apply_overrides(raw: dict, overrides: list[str] | None, problems: list[str]) -> dict:
    raw = deep_merge(raw, {})
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected key=value")
            continue
        key, text = item.split("=", 1)
        set_dotted(raw, key.strip(), parse_value(text))
    return raw


def config_from_dict(raw: dict, source: str | None = None) -> TrialConfig:
    """Validate raw into a TrialConfig; raises ConfigError listing every problem."""
    problems: list[str] = []
    shared = {k: v for k, v in raw.items() if k in _SHARED_KEYS}
    sections = {k: v for k, v in raw.items() if k not in _SHARED_KEYS}
    cfg = build(TrialConfig, shared, "", problems)
    for key, value in sections.items():
        if key not in METHODS:
            problems.append(
                f"{key}: unknown key (shared keys: {', '.join(sorted(_SHARED_KEYS))}; method sections: {', '.join(METHODS)})"
            )
        elif not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping of {key} options, got {value!r}")
    if cfg.method not in METHODS:
        problems.append(f"method: unknown method {cfg.method!r} (known: {', '.join(METHODS)})")
    else:
        for name, value in sections.items():
            if name in METHODS and isinstance(value, dict) and name != cfg.method:
                # Validate other sections too so a sweep's base config fails early, but keep only the chosen one.
                build(METHODS[name].options, value, name, problems)
        section = sections.get(cfg.method) or {}
        section = section if isinstance(section, dict) else {}
        cfg.options = build(METHODS[cfg.method].options, section, cfg.method, problems)
        cfg.given = dict(section)
    if cfg.threads is not None and cfg.threads < 1:
        problems.append(f"threads: must be >= 1 or null, got {cfg.threads}")
    if cfg.eval_every is not None and cfg.eval_every < 1:
        problems.append(f"eval_every: must be >= 1 or null, got {cfg.eval_every}")
    if cfg.stream.wave is not None:
        if cfg.protocol != "sequential":
            problems.append(f"stream.wave: an edit stream needs protocol: sequential, got protocol: {cfg.protocol}")
        if isinstance(cfg.stream.wave, int) and cfg.stream.wave < 1:
            problems.append(f"stream.wave: must be 'year' or a number of edits >= 1, got {cfg.stream.wave}")
        if cfg.stream.wave == "year" and cfg.stream.order != "time_start":
            problems.append("stream.wave: 'year' waves need stream.order: time_start")
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrialConfig:
    raw = read_yaml(path) if path else {}
    problems: list[str] = []
    raw = apply_overrides(raw, overrides, problems)
    if problems:
        raise ConfigError(problems, str(path) if path else None)
    return config_from_dict(raw, str(path) if path else None)
