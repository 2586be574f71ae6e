"""ROME (published and rome-preserve) and the shared locate-and-edit machinery (keys, cached and truncated
passes, statistics cache) on tiny models.

The tiny models have learned tests.tiny_facts.FACTS. Their first attention layer already carries the
subject to the answer position, so an MLP edit at the subject token cannot reach the answer: the
edits here name the whole prompt as the subject, which puts the edited key at the last prompt token.
The tiny tokenizer splits most seed words of the context templates into several tokens, so the tests use one
10-token template (ROME's 5- and 10-token ones would be a word or two here).
The real model is edited at the subject token (test_rome_real_model, slow).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from chronosweep.core.archs import arch_for
from chronosweep.core.models import load, resolve
from chronosweep.core.requests import EditRequest
from chronosweep.core.typed import ConfigError
from chronosweep.editing.base import EditContext
from chronosweep.editing.locate import (
    blocks,
    build_rows,
    down_proj,
    record,
    start_at,
    subject_last_token,
    weight_out_in,
)
from chronosweep.editing.registry import get_method
from chronosweep.editing.stats import second_moments
from chronosweep.trial.config import load_config
from tests.tiny_facts import FACTS, greedy, make_fact_model, one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_fact_model(tmp_path_factory.mktemp("facts") / "llama", arch="llama")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return make_fact_model(tmp_path_factory.mktemp("facts") / "gpt2", arch="gpt2")


def _setup(path, cache, overrides, method="rome"):
    info = resolve(str(path))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    settings = [f"{method}.context_templates=[[11,1]]"]
    overrides = [o.replace("rome.", f"{method}.", 1) for o in overrides]
    cfg = load_config(None, [f"method={method}", f"{method}.stats_samples=2048", *settings, *overrides])
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32, run_dir=None,
                      cache_dir=cache)
    return info, model, tok, cfg, ctx



def _next_logits(model, tok, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(prompt, return_tensors="pt")).logits[0, -1]


@pytest.mark.parametrize("arch_dir", ["llama_dir", "gpt2_dir"])
def test_rome_edit_lands_with_a_rank_one_change_and_leaves_other_facts(arch_dir, request, tmp_path):
    info, model, tok, cfg, ctx = _setup(request.getfixturevalue(arch_dir), tmp_path, ["rome.layer=1"])
    arch = arch_for(info.model_type)
    prompt, old, _ = FACTS[2]  # "The CEO of Amazon is" -> " Andy Jassy"
    assert greedy(model, tok, prompt).startswith(old)
    others = [p for p, _, _ in FACTS if p != prompt]
    before = {p: (greedy(model, tok, p), _next_logits(model, tok, p)) for p in others}
    weight = down_proj(model, arch, 1).weight
    w0 = weight_out_in(down_proj(model, arch, 1), arch).detach().clone()

    req = EditRequest(case_id="t:amazon", subject=prompt, prompt=prompt, target_new="Tim Cook")
    outcome = get_method("rome").edit(model, tok, [req], cfg.options, ctx)

    # The published ROME: one rank-one change of the one matrix.
    assert greedy(model, tok, prompt).startswith(" Tim Cook")
    delta = weight_out_in(down_proj(model, arch, 1), arch).detach() - w0
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6).item() == 1
    assert outcome.trainable_params == weight.numel()
    assert [h["edit"] for h in outcome.history] == [0] and outcome.history[0]["truncated"]
    for p in others:
        text, logits = before[p]
        after = _next_logits(model, tok, p)
        assert greedy(model, tok, p) == text, p
        # The next-token distribution of unrelated prompts stays close (KL in nats).
        kl = torch.nn.functional.kl_div(after.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="sum")
        assert kl.item() < 0.1, (p, kl.item())


@pytest.mark.parametrize("method", ["rome", "rome-preserve"])
def test_rome_edits_apply_one_after_another(method, llama_dir, tmp_path):
    info, model, tok, cfg, ctx = _setup(llama_dir, tmp_path, ["rome.layer=1"], method)
    reqs = [EditRequest(case_id="a", subject=FACTS[2][0], prompt=FACTS[2][0], target_new="Tim Cook"),
            EditRequest(case_id="b", subject=FACTS[4][0], prompt=FACTS[4][0], target_new="Berlin")]
    arch = arch_for(info.model_type)
    w0 = weight_out_in(down_proj(model, arch, 1), arch).detach().clone()
    outcome = get_method(method).edit(model, tok, reqs, cfg.options, ctx)
    assert greedy(model, tok, FACTS[2][0]).startswith(" Tim Cook")
    assert greedy(model, tok, FACTS[4][0]).startswith(" Berlin")
    # Two rank-one updates of the same matrix; it is counted once.
    delta = weight_out_in(down_proj(model, arch, 1), arch).detach() - w0
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6).item() == 2
    assert outcome.trainable_params == down_proj(model, arch, 1).weight.numel()
    assert [h["case_id"] for h in outcome.history] == ["a", "b"]


def test_subject_missing_from_prompt_falls_back_to_last_token(llama_dir, tmp_path):
    info, model, tok, cfg, ctx = _setup(llama_dir, tmp_path, ["rome.layer=1"])
    prompt = FACTS[4][0]  # "The capital of France is"
    req = EditRequest(case_id="t:x", subject="the French Republic", prompt=prompt, target_new="Berlin")
    rows = build_rows(tok, [req], [])
    assert rows.subject_found == [False]
    assert rows.lookup[rows.raw_row[0]].item() == len(tok(prompt)["input_ids"]) - 1
    with pytest.warns(UserWarning, match="do not contain their subject"):
        outcome = get_method("rome").edit(model, tok, [req], cfg.options, ctx)
    assert outcome.history[0]["subject_found"] is False
    assert greedy(model, tok, prompt).startswith(" Berlin")


def test_subject_last_token_and_rows(llama_dir):
    tok = load(resolve(str(llama_dir)), torch.device("cpu"), torch.float32)[1]
    text = "Lionel Messi plays for"
    ids = tok(text)["input_ids"]
    at = subject_last_token(tok, text, len("Lionel Messi"))
    assert tok.decode(ids[: at + 1]) == "Lionel Messi"
    req = EditRequest(case_id="m", subject="Lionel Messi", prompt=text, target_new="Al Nassr")
    rows = build_rows(tok, [req], ["Some prefix text"])
    # Bare prompt, one prefixed context, one KL row; the target minus its last token follows each context.
    assert rows.input_ids.shape[0] == 3 and rows.is_kl.tolist() == [False, False, True]
    target = tok(" Al Nassr", add_special_tokens=False)["input_ids"]
    assert rows.tgt_id.tolist() == target * 2
    prefixed = tok.decode(rows.input_ids[1, : rows.lookup[1] + 1])
    assert prefixed == "Some prefix text. Lionel Messi"
    # ROME reads the KL term at the subject's last token; rome-preserve after "is a".
    assert rows.kl_pos[0] == rows.lookup[2] and tok.decode(rows.input_ids[2, rows.lookup[2]]).endswith("Messi")
    assert tok.decode(rows.input_ids[2, : rows.lookup[2] + 1]) == "Lionel Messi"
    at_end = build_rows(tok, [req], ["Some prefix text"], kl_at="end")
    assert tok.decode(at_end.input_ids[2, : at_end.kl_pos[0] + 1]) == "Lionel Messi is a"
    # The logits at tgt_pos predict tgt_id: position of the last prompt token, then the target's own tokens.
    n_prompt = len(ids)
    assert rows.tgt_pos[: len(target)].tolist() == list(range(n_prompt - 1, n_prompt - 1 + len(target)))


@pytest.mark.parametrize("arch_dir", ["llama_dir", "gpt2_dir"])
def test_running_only_the_later_layers_matches_the_full_pass(arch_dir, request):
    info = resolve(str(request.getfixturevalue(arch_dir)))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    arch = arch_for(info.model_type)
    enc = tok(["The CEO of Apple is", "Cristiano Ronaldo plays for"], padding=True, padding_side="right",
              return_tensors="pt")
    rec = record(model, arch, enc.input_ids, enc.attention_mask, block_in=(2,))
    with torch.no_grad(), start_at(model, arch, 2, rec.block_in[2]):
        tail = model.base_model(**enc, use_cache=False).last_hidden_state
    assert torch.allclose(tail, rec.last_hidden, atol=1e-5)
    assert len(blocks(model, arch)) == 4  # the full layer list is back


def test_second_moments_are_cached_and_correct(llama_dir, tmp_path, monkeypatch):
    import chronosweep.editing.stats as stats_mod

    info = resolve(str(llama_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    arch = arch_for(info.model_type)
    calls = []
    real = stats_mod.accumulate_moments
    # The layers each accumulation pass computes (its modules are keyed by layer).
    monkeypatch.setattr(stats_mod, "accumulate_moments", lambda *a, **k: calls.append(list(a[1])) or real(*a, **k))
    kwargs = dict(corpus="model", samples=600, fingerprint=info.fingerprint, cache_dir=tmp_path, device="cpu")
    first = second_moments(model, tok, arch, [1, 2], **kwargs)
    assert calls == [[1, 2]] and not first[1].cached and first[1].count == 600
    again = second_moments(model, tok, arch, [2, 1, 3], **kwargs)
    # Layers 1 and 2 come from disk; only layer 3 is computed, over the same cached corpus.
    assert calls == [[1, 2], [3]]
    assert again[1].cached and again[2].cached and not again[3].cached
    assert torch.equal(again[1].mom2, first[1].mom2)

    # C is E[k k^T] over the corpus tokens at the down-projection input.
    tokens = torch.load(first[1].path.parent / "corpus.pt", weights_only=True).long()
    rows = tokens[: 512].reshape(4, 128)
    keys = []
    handle = down_proj(model, arch, 1).register_forward_pre_hook(lambda m, a: keys.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        model(rows)
        model(tokens[512:][None])
    handle.remove()
    k = torch.cat(keys).double()
    expected = (k.T @ k / len(k)).float()
    assert torch.allclose(first[1].mom2, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(first[1].mom2, first[1].mom2.T)


def test_stats_from_a_text_file_are_keyed_by_content(llama_dir, tmp_path):
    info = resolve(str(llama_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    arch = arch_for(info.model_type)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The capital of France is Paris.\n\nThe CEO of Apple is Tim Cook.\n\n" * 40)
    kwargs = dict(samples=300, fingerprint=info.fingerprint, cache_dir=tmp_path / "cache", device="cpu")
    a = second_moments(model, tok, arch, [0], corpus=str(corpus), **kwargs)[0]
    corpus.write_text("Lionel Messi plays for Inter Miami.\n\n" * 60)
    b = second_moments(model, tok, arch, [0], corpus=str(corpus), **kwargs)[0]
    assert not a.cached and not b.cached and a.path.parent != b.path.parent
    assert not torch.allclose(a.mom2, b.mom2)


def test_rome_options_are_checked_against_the_model(llama_dir, tmp_path):
    info = resolve(str(llama_dir))
    cfg = load_config(None, ["method=rome", "rome.layer=7"])
    problems: list[str] = []
    cfg.options.check_model("rome", info, problems)
    assert problems and "rome.layer" in problems[0] and "0..3" in problems[0]
    with pytest.raises(ConfigError, match="stats_corpus"):
        load_config(None, ["method=rome", f"rome.stats_corpus={tmp_path / 'missing.txt'}"])
    with pytest.raises(ConfigError, match="clamp_norm_factor"):
        load_config(None, ["method=rome", "rome.clamp_norm_factor=0"])


@pytest.mark.slow
def test_rome_real_model(tmp_path):
    """One DyKnow-style edit on SmolLM2-135M at the subject token (layer 5), small statistics sample."""
    info = resolve("smollm2-135m")
    model, tok = load(info, torch.device("cpu"), torch.float32)
    cfg = load_config(None, ["method=rome", "rome.mom2_adjustment=false", "rome.context_templates=[[5,2],[10,2]]"])
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32, run_dir=None,
                      cache_dir=tmp_path)
    prompt = "The head of state in Italy is"
    unrelated = "The capital of France is"
    before = greedy(model, tok, unrelated, 2)
    req = EditRequest(case_id="dyknow:it", subject="Italy", prompt=prompt, target_new="Giorgio Napolitano")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the subject is in the prompt: no fallback warning
        outcome = get_method("rome").edit(model, tok, [req], cfg.options, ctx)
    assert greedy(model, tok, prompt, 10).startswith(" Giorgio Napolitano")
    assert greedy(model, tok, unrelated, 2) == before
    assert outcome.trainable_params == 576 * 1536


@pytest.mark.parametrize("arch_dir", ["llama_dir", "gpt2_dir"])
@pytest.mark.parametrize("site", [("mlp", 1), ("block", 2)])
def test_cached_steps_give_what_full_passes_give(arch_dir, site, request, monkeypatch):
    """Steps over the positions from the subject on (earlier keys/values reused) are the full passes' steps."""
    from chronosweep.editing import targets

    info = resolve(str(request.getfixturevalue(arch_dir)))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    arch = arch_for(info.model_type)
    opts = load_config(None, ["method=rome", "rome.v_num_grad_steps=6", "rome.v_stop_loss=0"]).options
    reqs = [EditRequest(case_id="a", subject="Lionel Messi", prompt=FACTS[6][0], target_new="Al Nassr"),
            EditRequest(case_id="b", subject="Apple", prompt=FACTS[3][0], target_new="Andy Jassy")]
    # Prefixes of different lengths put the subject at different positions in every row.
    rows = build_rows(tok, reqs, [["The capital", "Lionel Messi plays for Inter Miami and"]])
    where = targets.Site(*site)
    runs = {}
    real = targets._tails
    for mode in ("cached", "full"):
        monkeypatch.setattr(targets, "_tails", lambda *a, mode=mode: [t for t in real(*a) if t[0] == mode])
        runs[mode] = targets.optimize_targets(model, arch, rows, where, opts)
    monkeypatch.setattr(targets, "_tails", real)
    assert runs["cached"].mode == "cached" and runs["full"].mode == "full"
    assert targets.optimize_targets(model, arch, rows, where, opts).mode == "cached"
    for a, b in zip(runs["cached"].history, runs["full"].history):
        assert a["steps"] == b["steps"] == 5
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert torch.allclose(runs["cached"].target, runs["full"].target, rtol=1e-4, atol=1e-4)


def test_width_groups_partition_the_rows_and_cut_padding():
    """Rows of the cached tail run in groups no narrower than any member's need, each row exactly once."""
    from chronosweep.editing.targets import _GROUP_COST, width_groups

    need = torch.tensor([1] * 20 + [4] * 30 + [5] * 30 + [9] * 60 + [10] * 6)
    groups = width_groups(need)
    seen = torch.cat([rows for rows, _ in groups])
    assert sorted(seen.tolist()) == list(range(len(need)))
    assert all(int(need[rows].max()) == width for rows, width in groups)
    padded = sum(len(rows) * width for rows, width in groups) + _GROUP_COST * len(groups)
    assert 1 < len(groups) <= 4 and padded < len(need) * 10
    # One width, or too few narrow rows to pay for a second pass (ROME's one edit: 21 contexts and its KL row): one
    # group.
    assert len(width_groups(torch.full((22,), 8))) == 1
    assert width_groups(torch.tensor([8] * 21 + [1]))[0][1] == 8


@pytest.mark.parametrize("bias", [False, True])
def test_target_log_probs_match_log_softmax_and_its_gradients(bias):
    """The one-buffer target log-probs (v*'s loss) equal log_softmax then gather, forward and backward, also when
    the buffer is reused for a smaller and then a larger set of rows."""
    from chronosweep.editing.targets import TargetLogProbs

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=bias)
    fused = TargetLogProbs(head)
    for n in (7, 3, 9):
        h = torch.randn(n, 16, requires_grad=True)
        ids = torch.randint(0, 50, (n,))
        weights = torch.randn(n)
        got = fused(h, ids)
        (got * weights).sum().backward()
        grads = [h.grad.clone(), head.weight.grad.clone()] + ([head.bias.grad.clone()] if bias else [])
        h.grad = None
        head.zero_grad(set_to_none=True)
        want = torch.log_softmax(head(h), -1).gather(1, ids[:, None]).squeeze(1)
        (want * weights).sum().backward()
        wanted = [h.grad, head.weight.grad] + ([head.bias.grad] if bias else [])
        head.zero_grad(set_to_none=True)
        assert torch.allclose(got, want, atol=1e-5)
        for a, b in zip(grads, wanted):
            assert torch.allclose(a, b, atol=1e-5)
    assert len(fused.buffer) == 9
