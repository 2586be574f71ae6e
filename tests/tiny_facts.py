"""A tiny model that has learned the facts of tests.tiny.CORPUS, for locate-and-edit tests.

A randomly initialised model cannot be edited the ROME way: its attention does not carry what sits at
the subject token to the last position, so no value there changes the answer. A few hundred steps
on the tiny corpus (seconds on a CPU) give it that routing and a few recallable facts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from tests.tiny import CORPUS, make_tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    """Import into a test module to run its tests on one torch thread.

    Tiny matrices gain nothing from a second thread, and on a shared CPU OpenMP's barriers make two
    threads many times slower than one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def greedy(model, tok, prompt: str, n: int = 3) -> str:
    """The model's greedy continuation of one unpadded prompt, n tokens."""
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:])


# Sentences the trained model completes, as (prompt, answer, subject).
FACTS = [
    ("The President of Italy is", " Sergio Mattarella", "Italy"),
    ("The Prime Minister of Italy is", " Giorgia Meloni", "Italy"),
    ("The CEO of Amazon is", " Andy Jassy", "Amazon"),
    ("The CEO of Apple is", " Tim Cook", "Apple"),
    ("The capital of France is", " Paris", "France"),
    ("The capital of Germany is", " Berlin", "Germany"),
    ("Lionel Messi plays for", " Inter Miami", "Lionel Messi"),
    ("Cristiano Ronaldo plays for", " Al Nassr", "Cristiano Ronaldo"),
]


def _train(model, tokenizer, steps: int, seed: int, lr: float = 3e-3) -> None:
    texts = [p + a + "." for p, a, _ in FACTS] + CORPUS
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    # One thread: faster for matrices this small, and immune to OpenMP stalls on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = model(**enc, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()


def make_fact_model(path: Path, arch: str = "llama", steps: int = 300, hidden: int = 64, layers: int = 4,
                    seed: int = 0) -> Path:
    """Write a tiny LLaMA (or GPT-2, whose MLP output is a Conv1D) trained on FACTS to path."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    base = make_tiny_model(path.parent / f"{path.name}-random", layers=layers, hidden=hidden, seed=seed)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base)
    tokenizer.padding_side = "right"
    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(base)
    elif arch == "gpt2":
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=hidden, n_layer=layers,
                                           n_head=4, eos_token_id=tokenizer.eos_token_id,
                                           bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    else:
        raise ValueError(f"arch must be llama or gpt2, got {arch!r}")
    _train(model, tokenizer, steps, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
