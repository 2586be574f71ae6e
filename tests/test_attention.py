"""sdpa_gqa: grouped key/value heads passed to the CPU kernel as they are, the same numbers as transformers' SDPA."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from chronosweep.core.models import load, resolve

TEXTS = ["The President of Italy is", "The CEO of Amazon is Andy", "Paris"]  # padded: a mask reaches attention


def _loss_and_grads(model, batch):
    model.zero_grad()
    logits = model(**batch).logits
    logits.pow(2).mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if "self_attn" in n}


def test_loaded_models_use_grouped_heads_and_match_transformers_sdpa(tiny_model_dir):
    ours, tok = load(resolve(str(tiny_model_dir)), torch.device("cpu"), torch.float32)
    assert ours.config.num_key_value_heads < ours.config.num_attention_heads
    assert ours.config._attn_implementation == "sdpa_gqa"
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert plain.config._attn_implementation == "sdpa"
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    assert not bool(batch["attention_mask"].all())

    got, got_grads = _loss_and_grads(ours, batch)
    want, want_grads = _loss_and_grads(plain, batch)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-5, atol=1e-7, msg=name)

    # A cached continuation (the path of v*'s cached steps and of generation) agrees too.
    with torch.no_grad():
        head = {k: v[:, :-2] for k, v in batch.items()}
        caches = [DynamicCache(), DynamicCache()]
        for model, cache in zip((ours, plain), caches):
            model(**head, cache=cache, use_cache=True)
        steps = [model(input_ids=batch["input_ids"][:, -2:], attention_mask=batch["attention_mask"],
                       cache=cache, use_cache=True).logits for model, cache in zip((ours, plain), caches)]
        torch.testing.assert_close(steps[0], steps[1], rtol=1e-6, atol=1e-6)
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        assert torch.equal(ours.generate(**batch, **kwargs), plain.generate(**batch, **kwargs))


def test_models_without_grouped_heads_keep_transformers_attention(fact_gpt2_dir):
    model, _ = load(resolve(str(fact_gpt2_dir)), torch.device("cpu"), torch.float32)
    assert model.config._attn_implementation == "sdpa"
