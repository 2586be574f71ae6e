"""The teacher-forced token accuracies (rewrite_acc, rephrase_acc, locality_acc) are EasyEdit's.

EasyEdit's test_prediction_acc tokenises `prompt + " " + target` as one text, takes the target tokens as
everything after len(tokenize(prompt)) tokens and compares them with the argmax predictions one position earlier;
its locality compares the post-edit predictions with the pre-edit ones the same way. _easyedit below is that
computation for one prompt, written from its definition; chronosweep's batched one must agree with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chronosweep.core.models import load, resolve
from chronosweep.evaluation.generation import teacher_forced_example, teacher_forced_top_tokens
from tests.tiny_facts import FACTS, one_thread  # noqa: F401 (autouse fixture)


def _easyedit(model, tok, prompt: str, target: str, locality: bool = False):
    """EasyEdit's test_prediction_acc for one prompt (no padding): the accuracy, or the predictions for locality."""
    ids = tok(prompt + " " + target, return_tensors="pt")["input_ids"]
    prompt_len = len(tok(prompt)["input_ids"])
    with torch.no_grad():
        answers = model(input_ids=ids).logits.argmax(-1)[0].tolist()[prompt_len - 1:-1]
    labels = ids[0].tolist()[prompt_len:]
    return answers if locality else float(np.mean(np.equal(answers, labels)))


def _ours(model, tok, prompts, targets):
    out = teacher_forced_top_tokens(model, tok, prompts, [" " + t for t in targets], batch_size=3,
                                    device=torch.device("cpu"))
    return [sum(a == b for a, b in zip(ids, top)) / len(ids) if ids else None for ids, top in out], out


def test_the_split_falls_where_easyedit_puts_it(fact_llama_dir):
    tok = load(resolve(str(fact_llama_dir)), torch.device("cpu"), torch.float32)[1]
    # A prompt ending inside a word: the joint text tokenises differently at the boundary ("Ama" + "zon").
    prompt, target = "The CEO of Ama", "zon is"
    assert tok(prompt + target)["input_ids"][: len(tok(prompt)["input_ids"])] != tok(prompt)["input_ids"]
    ex = teacher_forced_example(tok, prompt, target)
    ids = tok(prompt + target)["input_ids"]
    assert ex["input_ids"] == ids and ex["n_prompt"] == len(tok(prompt)["input_ids"])
    assert [t for t in ex["labels"] if t != -100] == ids[ex["n_prompt"]:]


def test_batched_accuracies_equal_easyedits(fact_llama_dir):
    model, tok = load(resolve(str(fact_llama_dir)), torch.device("cpu"), torch.float32)
    prompts = [p for p, _, _ in FACTS] + ["Q: Who is the head of government? A:", "The CEO of Ama"]
    targets = [a.strip() for _, a, _ in FACTS] + ["Eric Adams", "zon is Andy"]
    # Some right, some wrong: the tiny model knows FACTS, not these pairings.
    targets[1], targets[2] = "Andy Jassy", "Giorgia Meloni"
    ours, raw = _ours(model, tok, prompts, targets)
    theirs = [_easyedit(model, tok, p, t) for p, t in zip(prompts, targets)]
    assert ours == pytest.approx(theirs)
    assert 0 < np.mean(theirs) < 1
    # Locality: EasyEdit's agreement is between prediction lists, which are ours too.
    for (_ids, top), p, t in zip(raw, prompts, targets):
        assert top == _easyedit(model, tok, p, t, locality=True)


@pytest.mark.slow
def test_unedited_default_model_matches_easyedit_on_dyknow(data_root):
    """Issue 11 measured EasyEdit's compute_rewrite_or_rephrase_quality on SmolLM2-135M and the first 20 DyKnow
    edits: rewrite 0.442619, rephrase over all paraphrases 0.450899, every edit equal to chronosweep's."""
    from chronosweep.evaluation.probes import build_probes
    from chronosweep.trial.config import load_config
    from chronosweep.trial.run import plan

    cfg = load_config(None, ["data.limit=20", f"data.root={data_root}", "data.locality_limit=5"])
    _, info, edits = plan(cfg)
    info = resolve(cfg.model)
    model, tok = load(info, torch.device("cpu"), torch.float32)
    probes = [p for p in build_probes(edits, cfg.eval) if p.kind in ("rewrite", "paraphrase")]
    out = teacher_forced_top_tokens(model, tok, [p.prompt for p in probes], [p.tf_target for p in probes], 32,
                                    torch.device("cpu"))
    acc = [sum(a == b for a, b in zip(ids, top)) / len(ids) for ids, top in out]
    rewrite = [a for p, a in zip(probes, acc) if p.kind == "rewrite"]
    rephrase = [a for p, a in zip(probes, acc) if p.kind == "paraphrase"]
    assert (len(rewrite), len(rephrase)) == (20, 60)
    assert np.mean(rewrite) == pytest.approx(0.442619, abs=5e-7)
    assert np.mean(rephrase) == pytest.approx(0.450899, abs=5e-7)
    # And edit by edit, EasyEdit's own computation (unbatched) gives the same.
    for p, a in zip(probes, acc):
        assert a == pytest.approx(_easyedit(model, tok, p.prompt, p.tf_target.strip()))
