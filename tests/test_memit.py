"""MEMIT on a tiny model that has learned tests.tiny_facts.FACTS (see test_rome for why the subject
spans the prompt there), plus its option checks and its use of the shared statistics cache."""

from __future__ import annotations

import pytest
import torch

from chronosweep.core.archs import arch_for
from chronosweep.core.models import load, resolve
from chronosweep.core.requests import EditRequest
from chronosweep.core.typed import ConfigError
from chronosweep.editing.base import EditContext
from chronosweep.editing.locate import down_proj, weight_out_in
from chronosweep.editing.registry import get_method
from chronosweep.trial.config import load_config
from tests.tiny_facts import FACTS, greedy, make_fact_model, one_thread  # noqa: F401 (autouse fixture)

# One single-token new object per fact, no two edits trading objects.
NEW = ["Amazon", "Apple", "Italy", "Germany", "Berlin", "Miami", "Paris", "York"]




@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_fact_model(tmp_path_factory.mktemp("facts") / "llama", arch="llama")



def _run(path, cache, overrides, requests):
    info = resolve(str(path))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    # lambda 500 (the published 15000 is for 7B models: on these 64-wide ones it barely moves the weights).
    cfg = load_config(None, ["method=memit", "memit.stats_samples=2048", "memit.mom2_update_weight=500", *overrides])
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32, run_dir=None,
                      cache_dir=cache)
    arch = arch_for(info.model_type)
    before = {layer: weight_out_in(down_proj(model, arch, layer), arch).detach().clone() for layer in range(4)}
    outcome = get_method("memit").edit(model, tok, requests, cfg.options, ctx)
    return model, tok, arch, before, outcome


def test_memit_batch_of_eight_edits_all_land(llama_dir, tmp_path):
    requests = [EditRequest(case_id=f"t:{i}", subject=p, prompt=p, target_new=new)
                for i, ((p, old, _), new) in enumerate(zip(FACTS, NEW))]
    overrides = ["memit.layers=[0,1,2]", "memit.batch_size=3"]
    model, tok, arch, before, outcome = _run(llama_dir, tmp_path, overrides, requests)
    for req in requests:
        assert greedy(model, tok, req.prompt, 2).startswith(" " + req.target_new), req.prompt
    # The window's layers changed, the layer after it did not; each rewritten matrix counts once.
    for layer in (0, 1, 2):
        assert not torch.equal(weight_out_in(down_proj(model, arch, layer), arch), before[layer])
    assert torch.equal(weight_out_in(down_proj(model, arch, 3), arch), before[3])
    assert outcome.trainable_params == 3 * down_proj(model, arch, 0).weight.numel()
    per_edit = [h for h in outcome.history if "edit" in h]
    per_layer = [h for h in outcome.history if "lambda" in h]
    assert [h["case_id"] for h in per_edit] == [r.case_id for r in requests]
    assert [h["layer"] for h in per_layer] == [0, 1, 2]
    assert all(h["lambda"] == 500.0 for h in per_layer)


def test_memit_reuses_statistics_rome_computed(llama_dir, tmp_path):
    prompt = FACTS[4][0]
    req = EditRequest(case_id="t:fr", subject=prompt, prompt=prompt, target_new="Berlin")
    info = resolve(str(llama_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    cfg = load_config(None, ["method=rome", "rome.layer=1", "rome.stats_samples=2048"])
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32, run_dir=None,
                      cache_dir=tmp_path)
    assert get_method("rome").edit(model, tok, [req], cfg.options, ctx).history[0]["stats_cached"] is False
    _, _, _, _, outcome = _run(llama_dir, tmp_path, ["memit.layers=[1,2]"], [req])
    cached = {h["layer"]: h["stats_cached"] for h in outcome.history if "lambda" in h}
    assert cached == {1: True, 2: False}


def test_memit_options_are_checked():
    with pytest.raises(ConfigError, match="strictly ascending"):
        load_config(None, ["method=memit", "memit.layers=[5,4]"])
    with pytest.raises(ConfigError, match="at least one layer"):
        load_config(None, ["method=memit", "memit.layers=[]"])
    with pytest.raises(ConfigError, match="mom2_update_weight"):
        load_config(None, ["method=memit", "memit.mom2_update_weight=-1"])
    cfg = load_config(None, ["method=memit", "memit.layers=[4,5,6,7,8]"])
    info = resolve("smollm2-135m", fetch=False)
    problems: list[str] = []
    cfg.options.check_model("memit", info, problems)
    assert problems == []
    cfg = load_config(None, ["method=memit", "memit.layers=[28,29,30]"])
    cfg.options.check_model("memit", info, problems)
    assert len(problems) == 1 and "memit.layers[2]" in problems[0] and "0..29" in problems[0]
