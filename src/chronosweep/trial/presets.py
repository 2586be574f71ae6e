"""Per-model option values of a method, as data: ``configs/presets/<method>/<model>.yaml``.

The files ship inside the package (``chronosweep/presets``; ``configs/presets`` in the repository points there),
so they work from a clean checkout, an installed wheel and inside a sweep trial alike. Directories named in
``$CHRONOSWEEP_PRESETS`` (``os.pathsep``-separated, same layout) are searched first.

A preset file::

    method: rome
    source: where the values come from (a file of the reference implementation, a measurement)
    match:                       # the models it is for
      names: [meta-llama/Llama-2-7b-hf, ...]  # model names, hub ids or directory names (case-insensitive)
      model_type: llama          # and/or the architecture and shape (every key given must agree)
      num_layers: 32
      hidden_size: 4096
      intermediate_size: 11008
    extends: rome/llama-2-7b     # optional: start from another preset's options
    options: {layer: 5, ...}     # values of the method's options

With ``preset: auto`` (the default) a trial takes the preset whose names include its model, else the one whose
shape matches; the options the config sets itself win over the preset's. metrics.json records which applied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from chronosweep.core.models import ModelInfo
from chronosweep.core.typed import build

SHIPPED = Path(__file__).resolve().parents[1] / "presets"
SHAPE_KEYS = ("model_type", "num_layers", "hidden_size", "intermediate_size")
_FILE_KEYS = {"method", "source", "match", "extends", "options"}


class PresetError(ValueError):
    pass


@dataclass(frozen=True)
class Preset:
    name: str  # "<method>/<file stem>"
    method: str
    path: Path
    source: str
    match: dict
    options: dict  # with whatever it extends merged in

    def matches_name(self, model: str) -> bool:
        names = {str(n).lower() for n in self.match.get("names") or []}
        candidates = {model.lower(), Path(model.rstrip("/")).name.lower()}
        return bool(names & candidates)

    def matches_shape(self, info: ModelInfo) -> bool:
        keys = [k for k in SHAPE_KEYS if k in self.match]
        return bool(keys) and all(getattr(info, k) == self.match[k] for k in keys)


def preset_dirs() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get("CHRONOSWEEP_PRESETS", "").split(os.pathsep) if p]
    return [*extra, SHIPPED]


def _read(path: Path, seen: tuple[str, ...] = ()) -> Preset:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PresetError(f"preset {path}: cannot be read: {err}") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset {path}: the top level must be a mapping")
    problems = [f"{k}: unknown key (known: {', '.join(sorted(_FILE_KEYS))})" for k in data if k not in _FILE_KEYS]
    method = data.get("method")
    if not isinstance(method, str):
        problems.append("method: required, the registry name of the method")
    match = data.get("match") or {}
    if not isinstance(match, dict) or set(match) - {"names", *SHAPE_KEYS}:
        problems.append(f"match: a mapping of names and/or {', '.join(SHAPE_KEYS)}")
        match = {}
    options = data.get("options") or {}
    if not isinstance(options, dict):
        problems.append("options: a mapping of the method's options")
        options = {}
    if not str(data.get("source") or "").strip():
        problems.append("source: required, where the values come from")
    if problems:
        raise PresetError(f"preset {path}: " + "; ".join(problems))
    name = f"{path.parent.name}/{path.stem}"
    if data.get("extends"):
        parent_name = str(data["extends"])
        if parent_name in seen or parent_name == name:
            raise PresetError(f"preset {path}: extends {parent_name} in a cycle")
        parent = find_named(parent_name, (*seen, name))
        options = {**parent.options, **options}
    return Preset(name, method, path, str(data["source"]).strip(), match, options)


def find_named(name: str, seen: tuple[str, ...] = ()) -> Preset:
    """A preset by name ('rome/llama-2-7b') or by file path."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _read(path, seen)
    for folder in preset_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return _read(candidate, seen)
    known = ", ".join(p.name for p in all_presets()) or "none"
    raise PresetError(f"preset {name!r}: no such preset (known: {known}) and no such file")


def all_presets(method: str | None = None) -> list[Preset]:
    """Every preset (of one method), earlier directories shadowing later ones of the same name."""
    found: dict[str, Preset] = {}
    for folder in preset_dirs():
        subdirs = [folder / method] if method else sorted(p for p in folder.glob("*") if p.is_dir())
        for sub in subdirs:
            for path in sorted(sub.glob("*.yaml")):
                name = f"{sub.name}/{path.stem}"
                if name not in found:
                    found[name] = _read(path)
    return list(found.values())


def choose(method: str, model: str, info: ModelInfo) -> tuple[Preset | None, str | None]:
    """(the preset made for this model, "name" or "shape"), or (None, None)."""
    candidates = all_presets(method)
    by_name = [p for p in candidates if p.matches_name(model)]
    if len(by_name) > 1:
        raise PresetError(f"presets {', '.join(p.name for p in by_name)} all name model {model!r}; set preset: to one")
    if by_name:
        return by_name[0], "name"
    by_shape = [p for p in candidates if p.matches_shape(info)]
    if len(by_shape) > 1:
        raise PresetError(f"presets {', '.join(p.name for p in by_shape)} all fit {model!r} "
                          f"({info.model_type}, {info.num_layers} layers, hidden {info.hidden_size}); set preset: to one")
    if by_shape:
        return by_shape[0], "shape"
    return None, None


def apply_preset(cfg, info: ModelInfo, problems: list[str]) -> dict | None:
    """Rebuild cfg.options from the preset for (cfg.method, model) under the options the config set itself.

    Returns what metrics.json records (name, file, source, how it was chosen, the values it supplied, the keys the
    config overrode), or None when no preset applies. Problems (a bad preset file, a value the options refuse) are
    appended, each naming the preset.
    """
    from chronosweep.editing.registry import METHODS

    if cfg.preset == "none" or cfg.method not in METHODS:
        return None
    try:
        if cfg.preset == "auto":
            preset, how = choose(cfg.method, cfg.model, info)
        else:
            preset, how = find_named(cfg.preset), "config"
    except PresetError as err:
        problems.append(f"preset: {err}")
        return None
    if preset is None:
        return None
    if preset.method != cfg.method:
        problems.append(f"preset: {preset.name} ({preset.path}) is a preset of {preset.method}, not of {cfg.method}")
        return None
    merged = {**preset.options, **cfg.given}
    found: list[str] = []
    options = build(METHODS[cfg.method].options, merged, cfg.method, found)

    def from_preset(problem: str) -> bool:
        key = problem.split(":", 1)[0].removeprefix(f"{cfg.method}.").split(".")[0].split("[")[0]
        return key in preset.options and key not in cfg.given

    problems.extend(f"{p} (from preset {preset.name}, {preset.path})" if from_preset(p) else p for p in found)
    cfg.options = options
    return {"name": preset.name, "file": str(preset.path), "source": preset.source, "matched_by": how,
            "options": {k: v for k, v in preset.options.items() if k not in cfg.given},
            "overridden": sorted(k for k in cfg.given if k in preset.options)}
