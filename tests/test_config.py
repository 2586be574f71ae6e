import pytest

from chronosweep.core.models import resolve
from chronosweep.core.typed import ConfigError
from chronosweep.trial.config import load_config


def test_defaults_are_the_demo_trial():
    cfg = load_config()
    assert cfg.model == "smollm2-135m" and cfg.method == "lora" and cfg.data.name == "dyknow"
    assert cfg.options.targets == "mlp" and cfg.options.rank == 32
    d = cfg.to_dict()
    assert d["lora"]["rank"] == 32 and "options" not in d


def test_set_overrides_use_yaml_scalars(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nlora:\n  rank: 8\n")
    cfg = load_config(path, ["lora.lr=1e-3", "data.limit=null", "lora.targets=both", "eval.max_new_tokens=5"])
    assert cfg.seed == 3 and cfg.options.rank == 8 and cfg.options.lr == pytest.approx(1e-3)
    assert cfg.data.limit is None and cfg.options.targets == "both" and cfg.eval.max_new_tokens == 5


def test_all_problems_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: one\nmethod: lora\nlora:\n  rank: 0\n  targets: ffn\n  colour: red\ndata:\n  limit: -1\nbogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    for needle in ("seed: expected an integer", "lora.rank: must be >= 1", "lora.targets: must be one of",
                   "lora.colour: unknown key", "data.limit: must be >= 1", "bogus: unknown key"):
        assert needle in text, needle
    assert len(info.value.problems) == 6


def test_unknown_method_named():
    with pytest.raises(ConfigError, match="method: unknown method 'magic'"):
        load_config(None, ["method=magic"])


def test_layer_window_must_fit_the_model():
    info = resolve("smollm2-135m", fetch=False)  # 30 layers, known without loading weights
    cfg = load_config(None, ["lora.layer_start=27", "lora.layer_width=6"])
    problems: list[str] = []
    cfg.options.check_model("lora", info, problems)
    assert problems and "27..32 runs past the last layer (29)" in problems[0]
    ok = load_config(None, ["lora.layer_start=24", "lora.layer_width=6"])
    problems = []
    ok.options.check_model("lora", info, problems)
    assert problems == []
