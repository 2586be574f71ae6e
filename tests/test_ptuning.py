"""P-tuning: training touches only the prompt encoder, and the edited model generates and scores correctly."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel, get_peft_model

from chronosweep.core.tokens import collate, encode_example
from chronosweep.core.typed import ConfigError
from chronosweep.editing.methods.ptuning.method import VirtualPromptLM, prompt_encoder_config
from chronosweep.editing.methods.ptuning.options import PtuningOptions
from chronosweep.editing.registry import get_method
from tests.trainkit import load_tiny, make_ctx, tiny_requests

PROMPTS = ["The President of Italy is", "The CEO of Amazon is the person who", "Lionel Messi plays for the"]
NEW = 8


@pytest.fixture
def prompted(tiny_model_dir):
    """A tiny model with weights large enough to produce varied tokens, and a fresh prompt encoder."""
    _, ctx = make_ctx(tiny_model_dir, ["method=ptuning"])
    model, tokenizer = load_tiny(ctx)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)  # the default 0.02 init makes a random model repeat one token
    peft_model = get_peft_model(model, prompt_encoder_config(PtuningOptions(num_virtual_tokens=5, encoder_hidden_size=32)))
    peft_model.eval()
    return peft_model, tokenizer


def stepwise(peft_model, tokenizer, prompt: str, n: int = NEW) -> list[int]:
    """Greedy decoding the slow way: one unpadded forward pass per new token, argmax of the last logit."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def generated(model, tokenizer, prompts: list[str], **kwargs) -> list[list[int]]:
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id, **kwargs)
    rows = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        # generate pads after EOS; the stepwise decode stops there.
        rows.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    return rows


def test_generation_matches_stepwise_argmax_decode(prompted):
    peft_model, tokenizer = prompted
    expected = [stepwise(peft_model, tokenizer, p) for p in PROMPTS]
    assert len({tuple(e) for e in expected}) == len(PROMPTS) and all(len(set(e)) > 2 for e in expected)
    # peft's own generate agrees for one unpadded prompt once the KV cache is off ...
    assert generated(peft_model, tokenizer, PROMPTS[:1], use_cache=False) == expected[:1]
    # ... and the wrapper agrees for a left-padded batch, with and without the cache.
    wrapped = VirtualPromptLM(peft_model)
    assert generated(wrapped, tokenizer, PROMPTS) == expected
    assert generated(wrapped, tokenizer, PROMPTS, use_cache=False) == expected
    # The wrapper returns prompt + new tokens like any generate(), so callers slice it the usual way.
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = wrapped.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(out[:, : enc["input_ids"].shape[1]], enc["input_ids"])


def test_teacher_forced_logits_skip_the_virtual_positions(prompted):
    """Right-padded batch, keep the last input-length logits: the same as each example scored alone."""
    peft_model, tokenizer = prompted
    examples = [encode_example(tokenizer, p, " Giorgia Meloni") for p in PROMPTS]
    batch = collate(examples, tokenizer.pad_token_id)
    length = batch["input_ids"].shape[1]
    wrapped = VirtualPromptLM(peft_model)
    with torch.no_grad():
        logits = wrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert logits.shape[1] == length + 5
        logits = logits[:, -length:]
        for row, e in enumerate(examples):
            ids = torch.tensor([e["input_ids"]])
            alone = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 5:]
            torch.testing.assert_close(logits[row, : len(e["input_ids"])], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("engine", ["torch", "deepspeed"])
def test_ptuning_trains_only_the_prompt_encoder_and_saves_it(tiny_model_dir, tmp_path, engine):
    cfg, ctx = make_ctx(tiny_model_dir, ["method=ptuning", "ptuning.num_virtual_tokens=4", "ptuning.encoder_hidden_size=16",
                                         "ptuning.epochs=8", "ptuning.lr=1e-2", "ptuning.batch_size=3", f"engine={engine}"])
    model, tokenizer = load_tiny(ctx)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outcome = get_method("ptuning").edit(model, tokenizer, tiny_requests(), cfg.options, ctx)
    losses = [h["loss"] for h in outcome.history]
    assert len(losses) == 8 and losses[-1] < losses[0]
    encoder = outcome.model.peft_model.prompt_encoder["default"]
    assert outcome.trainable_params == sum(p.numel() for p in encoder.parameters()) > 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    outcome.save(tmp_path)
    fresh, _ = load_tiny(ctx)
    loaded = VirtualPromptLM(PeftModel.from_pretrained(fresh, tmp_path / "adapter")).eval()
    assert generated(loaded, tokenizer, PROMPTS) == generated(outcome.model, tokenizer, PROMPTS)


def test_ptuning_options_are_checked(tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        make_ctx(tiny_model_dir, ["method=ptuning", "ptuning.num_virtual_tokens=0", "ptuning.encoder_num_layers=3",
                                  "ptuning.encoder_type=gru"])
    text = str(err.value)
    assert "ptuning.num_virtual_tokens: must be >= 1" in text
    assert "ptuning.encoder_type: must be one of 'mlp' | 'lstm'" in text
    make_ctx(tiny_model_dir, ["method=ptuning", "ptuning.encoder_type=lstm", "ptuning.encoder_num_layers=3"])
    with pytest.raises(ConfigError, match="encoder_num_layers: peft's MLP encoder has exactly 2"):
        make_ctx(tiny_model_dir, ["method=ptuning", "ptuning.encoder_num_layers=3"])


@pytest.mark.slow
def test_default_model_batched_generation_equals_one_prompt_at_a_time():
    """On SmolLM2 a padded batch through peft's own generate changes most continuations; the wrapper's do not."""
    from chronosweep.core.models import load, resolve

    model, tokenizer = load(resolve("smollm2-135m"), torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, prompt_encoder_config(PtuningOptions(num_virtual_tokens=10)))
    wrapped = VirtualPromptLM(peft_model).eval()
    prompts = ["The capital of France is", "The name of the current Prime Minister of the United Kingdom is",
               "The CEO of Apple is", "Lionel Messi plays for the football club called"]
    alone = [generated(wrapped, tokenizer, [p])[0] for p in prompts]
    assert alone == [stepwise(peft_model, tokenizer, p) for p in prompts]
    assert generated(wrapped, tokenizer, prompts) == alone
