"""Edits that stay local, generalise and cost little: the locality KL, retain prompts and their disjointness from
evaluation probes, augmented training prompts, early stopping, and frozen-prefix caching (equal to the uncached path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from chronosweep.core.requests import EditRequest, EditSet, LocalityProbe
from chronosweep.core.tokens import collate, edit_examples
from chronosweep.core.typed import ConfigError
from chronosweep.data import DataError, load_edits
from chronosweep.data.config import DataConfig
from chronosweep.editing import kl as kl_term
from chronosweep.editing.registry import get_method
from chronosweep.editing.retain import HeldOut, HeldSubjects, build_pool, subject_prompts
from chronosweep.editing.training import edit_loss, train_on_edits
from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.probes import Probe, build_probes
from chronosweep.trial.config import load_config
from chronosweep.trial.run import held_out_prompts, held_out_subjects, run_trial, training_overlaps
from tests.tiny_facts import one_thread  # noqa: F401 (autouse fixture)
from tests.trainkit import load_tiny, make_ctx, tiny_requests

LORA = ["method=lora", "lora.layer_start=1", "lora.layer_width=2", "lora.rank=4", "lora.lr=1e-2", "lora.batch_size=3"]
FREEZE = ["method=freeze", "freeze.layer_start=1", "freeze.layer_width=2", "freeze.lr=1e-3", "freeze.batch_size=3"]


def edit(model_dir, overrides, requests=None, held_out=()):
    cfg, ctx = make_ctx(model_dir, overrides)
    ctx.held_out = tuple(held_out)
    torch.manual_seed(0)
    model, tok = load_tiny(ctx)
    outcome = get_method(cfg.method).edit(model, tok, requests or tiny_requests(), cfg.options, ctx)
    return outcome, tok


# --- the KL term ---------------------------------------------------------------------------------------------------

def _retain(tok, requests):
    return kl_term.retain_rows(tok, subject_prompts(requests, ["{} is a", "{} is known for"]))


def _kl_now(model, reference, rows, pad) -> float:
    inputs, read = kl_term.batch(rows, pad)
    idx = list(range(len(rows)))
    with torch.no_grad():
        edited = kl_term.log_probs_at(model(**inputs).logits, read)
        return float(kl_term.kl(reference.log_probs(idx, inputs, read), edited, read))


def test_kl_is_zero_at_the_start_and_with_the_adapter_disabled(fact_llama_dir):
    cfg, ctx = make_ctx(fact_llama_dir, [*LORA, "lora.epochs=6"])
    model, tok = load_tiny(ctx)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"],
                                                  layers_to_transform=[1, 2], task_type="CAUSAL_LM"))
    requests = tiny_requests()
    rows = _retain(tok, requests)
    reference = kl_term.Reference(peft_model, rows, tok.pad_token_id, ctx.device)
    assert reference.live and reference.kind == "adapter disabled, every step"
    assert _kl_now(peft_model, reference, rows, tok.pad_token_id) == pytest.approx(0.0, abs=1e-7)
    train_on_edits(peft_model, tok, requests, cfg.options, ctx)
    moved = _kl_now(peft_model, reference, rows, tok.pad_token_id)
    assert moved > 1e-3, "six epochs at lr 1e-2 should move the retain distributions"
    with peft_model.disable_adapter():
        assert _kl_now(peft_model, reference, rows, tok.pad_token_id) == pytest.approx(0.0, abs=1e-7)
    assert _kl_now(peft_model, reference, rows, tok.pad_token_id) == pytest.approx(moved)


def test_in_place_methods_read_the_unedited_distributions_once_before_training(fact_llama_dir):
    cfg, ctx = make_ctx(fact_llama_dir, [*FREEZE, "freeze.epochs=4", "freeze.lr=1e-2"])
    model, tok = load_tiny(ctx)
    rows = _retain(tok, tiny_requests())
    reference = kl_term.Reference(model, rows, tok.pad_token_id, ctx.device)
    assert not reference.live and reference.kind == "precomputed before training"
    assert _kl_now(model, reference, rows, tok.pad_token_id) == pytest.approx(0.0, abs=1e-6)
    get_method("freeze").edit(model, tok, tiny_requests(), cfg.options, ctx)
    assert _kl_now(model, reference, rows, tok.pad_token_id) > 1e-3


@pytest.mark.parametrize("method, args", [("lora", LORA), ("freeze", FREEZE)])
def test_the_kl_weight_keeps_retain_distributions_closer(fact_llama_dir, method, args):
    finals = {}
    for weight in (0.0, 5.0):
        outcome, tok = edit(fact_llama_dir, [*args, f"{method}.epochs=8", f"{method}.lr=1e-2", f"{method}.kl_weight={weight}",
                                             f"{method}.retain_templates=['{{}} is a', '{{}} is known for']"])
        if weight:
            assert outcome.training["kl_reference"] == ("adapter disabled, every step" if method == "lora"
                                                        else "precomputed before training")
            assert all(r["kl"] is not None for r in outcome.history)
        else:
            assert all(r["kl"] is None for r in outcome.history) and "retain" not in outcome.training
        finals[weight] = outcome
    # Measure both edited models against the same unedited reference.
    _, ctx = make_ctx(fact_llama_dir, ["method=lora"])
    fresh, tok = load_tiny(ctx)
    rows = _retain(tok, tiny_requests())
    reference = kl_term.Reference(fresh, rows, tok.pad_token_id, ctx.device)
    kls = {w: _kl_now(o.model, reference, rows, tok.pad_token_id) for w, o in finals.items()}
    assert kls[5.0] < 0.5 * kls[0.0], kls


def test_a_reference_read_once_trains_as_the_live_one(fact_llama_dir):
    common = [*LORA, "lora.epochs=3", "lora.kl_weight=1", "lora.retain_templates=['{} is a']"]
    live, _ = edit(fact_llama_dir, [*common, "lora.kl_reference=live"])
    once, _ = edit(fact_llama_dir, [*common, "lora.kl_reference=once"])
    assert live.training["kl_reference"] == "adapter disabled, every step"
    assert once.training["kl_reference"] == "adapter disabled, once"
    for a, b in zip(live.history, once.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["kl"] == pytest.approx(b["kl"], abs=1e-5)
    with pytest.raises(ConfigError, match="freeze.kl_reference: live needs an adapter"):
        load_config(None, ["method=freeze", "freeze.kl_reference=live"])


def test_edit_loss_is_the_models_own_loss(fact_llama_dir):
    _, ctx = make_ctx(fact_llama_dir, ["method=lora"])
    model, tok = load_tiny(ctx)
    examples = edit_examples(tok, tiny_requests(), ".")
    batch = collate(examples, tok.pad_token_id)
    # The positions the targets need: from the shortest prompt's last token on (what the loop keeps).
    keep = batch["input_ids"].shape[1] - min(e["n_prompt"] for e in examples) + 1
    assert keep < batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**batch)
        ours, hit = edit_loss(out.logits, batch["labels"])
        short, short_hit = edit_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           logits_to_keep=keep).logits, batch["labels"])
    assert float(ours) == pytest.approx(float(out.loss), abs=1e-6)
    assert float(short) == pytest.approx(float(ours), abs=1e-6)
    assert hit.shape == (len(examples),) and torch.equal(hit, short_hit)


# --- frozen-prefix caching -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, args", [("lora", LORA), ("freeze", FREEZE)])
def test_cached_and_uncached_training_have_the_same_loss(fact_llama_dir, tmp_path, method, args):
    retain = tmp_path / "retain.txt"
    retain.write_text("Berlin is a city in\n# a comment\n\nThe weather today is\n")
    common = [*args, f"{method}.epochs=4", f"{method}.kl_weight=0.5", f"{method}.retain_file={retain}",
              f"{method}.n_prefixes=2", f"{method}.prefix_tokens=4"]
    cached, _ = edit(fact_llama_dir, [*common, f"{method}.prefix_cache=true"])
    plain, _ = edit(fact_llama_dir, [*common, f"{method}.prefix_cache=false"])
    assert cached.training["prefix_cache"]["layer"] == 1
    assert plain.training["prefix_cache"] == {"layer": None, "status": "off"}
    assert cached.training["examples"] == plain.training["examples"] == {"prompt": 6, "prefix": 12,
                                                                           "train_paraphrase": 0}
    for epoch, (a, b) in enumerate(zip(cached.history, plain.history, strict=True)):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        # The KL is a mean of values near 0: equal in the first epoch; after it, fp32 summation order (the cached
        # path multiplies fewer layers) compounds through the updates: measured up to 5e-5 by the third epoch.
        assert a["kl"] == pytest.approx(b["kl"], abs=1e-5 if epoch == 0 else 2e-4)
        assert a["tokens"] == b["tokens"]
    after = dict(cached.model.named_parameters())
    for name, p in plain.model.named_parameters():
        if p.requires_grad or "lora_" in name:
            assert torch.allclose(p, after[name], atol=1e-4), name


def test_prefix_cache_steps_aside_where_it_cannot_apply(fact_llama_dir):
    whole, _ = edit(fact_llama_dir, [*LORA, "lora.epochs=1", "lora.layer_start=0"])
    assert whole.training["prefix_cache"] == {"layer": None, "status": "not applicable: layer 0 trains"}
    full, _ = edit(fact_llama_dir, ["method=full", "full.epochs=1", "full.batch_size=3"])
    assert full.training["prefix_cache"]["layer"] is None
    assert "outside the decoder layers" in full.training["prefix_cache"]["status"]
    # P-tuning has no window: its options do not offer the cache at all.
    with pytest.raises(ConfigError, match="ptuning.prefix_cache: unknown key"):
        load_config(None, ["method=ptuning", "ptuning.prefix_cache=true"])


# --- retain prompts and evaluation probes ------------------------------------------------------------------------------

def test_retain_prompts_are_disjoint_from_evaluation_probes(data_root, tmp_path):
    edits = load_edits(DataConfig(root=str(data_root), limit=20, locality_limit=50))
    probes = build_probes(edits, EvalConfig())
    held_out = held_out_prompts(probes)
    locality = [p.prompt for p in probes if p.kind == "locality"]
    paraphrase = [p.prompt for p in probes if p.kind == "paraphrase"]
    retain = tmp_path / "retain.txt"
    retain.write_text("\n".join([locality[0], f"As everyone knows, {locality[1]} something", paraphrase[3].upper(),
                                 "The weather in spring is", edits.requests[0].prompt]))
    cfg = load_config(None, ["lora.kl_weight=1", f"lora.retain_file={retain}"])
    pool = build_pool(edits.requests, cfg.options, ["A sampled text about nothing much"], held_out)
    texts = {p.text for p in pool.prompts}
    assert "The weather in spring is" in texts and "A sampled text about nothing much" in texts
    assert len(pool.dropped) == 4, pool.dropped
    guard = HeldOut([*held_out, *(r.prompt for r in edits.requests)])
    assert all(guard.hit(t) is None for t in texts)
    # Every subject keeps its subject prompts on this data (known_1000 avoids edited subjects).
    subjects = {r.subject for r in edits.requests}
    assert pool.by_source()["subject"] == len(subjects) * len(cfg.options.retain_templates)


def test_retain_texts_naming_a_probe_subject_are_dropped_even_as_paraphrases(tmp_path):
    requests = [EditRequest("a", "Italy", "The President of Italy is", "X")]
    locality = [LocalityProbe("Sachimi Iwao is a citizen of", "Japan", "Sachimi Iwao"),
                LocalityProbe("Paris is the capital of", "France", "Paris")]
    edits = EditSet("t", requests, locality)
    subjects = held_out_subjects(edits)
    assert subjects == ("Sachimi Iwao", "Paris")
    retain = tmp_path / "retain.txt"
    # A paraphrase of a probe's fact (the prompt check lets it through), the subject in other case and spacing,
    # and two that only share letters with a subject.
    retain.write_text("Sachimi Iwao holds a citizenship from\nIn  PARIS, the river\nParisian cafes are\n"
                      "Sachimi Iwaoka wrote\nThe weather in spring is\n")
    cfg = load_config(None, ["lora.kl_weight=1", f"lora.retain_file={retain}"])
    held = held_out_prompts(build_probes(edits, EvalConfig()))
    assert HeldOut(held).hit("Sachimi Iwao holds a citizenship from") is None
    pool = build_pool(requests, cfg.options, ["A text on Sachimi Iwao", "A text on nothing"], held, subjects)
    assert {p.text for p in pool.prompts if p.source != "subject"} == {
        "Parisian cafes are", "Sachimi Iwaoka wrote", "The weather in spring is", "A text on nothing"}
    assert sorted(hit for _, hit in pool.dropped) == ["subject: paris", "subject: sachimi iwao",
                                                       "subject: sachimi iwao"]
    assert pool.dropped_for_subjects() == 3
    # The edited subject's own prompts are about it by design, even when it has neighbourhood probes.
    near = EditSet("n", [EditRequest("a", "Italy", "The President of Italy is", "X",
                                     neighborhood=(LocalityProbe("The capital of Italy is"),))], [])
    pool = build_pool(near.requests, cfg.options, ["Italy is famous for pasta"], (), held_out_subjects(near))
    assert "Italy is a" in {p.text for p in pool.prompts}
    assert [p.text for p, _ in pool.dropped] == ["Italy is famous for pasta"]
    # run_trial's own check after the edit says the same.
    record = {"retain": [{"source": "file", "text": "In Paris, the river"},
                         {"source": "subject", "text": "Paris is a"}]}
    assert training_overlaps(record, (), subjects) == [("In Paris, the river", "subject: paris")]


def test_counterfact_prompts_restating_known_1000_probes_are_kept_out(data_root, tmp_path):
    edits = load_edits(DataConfig(root=str(data_root), limit=20, locality_limit=50))
    subjects = held_out_subjects(edits)
    assert len(subjects) == 50
    prompts = [r["prompt"] for r in json.loads((data_root / "counterfact" / "counterfact-edit-1k.json").read_text())]
    retain = tmp_path / "cf.txt"
    retain.write_text("\n".join(prompts))
    cfg = load_config(None, ["lora.kl_weight=1", f"lora.retain_file={retain}"])
    held = held_out_prompts(build_probes(edits, EvalConfig()))
    pool = build_pool(edits.requests, cfg.options, [], held, subjects)
    names = HeldSubjects(subjects)
    kept = [p.text for p in pool.prompts if p.source == "file"]
    assert kept and all(names.hit(t) is None for t in kept)
    by_subject = [p.text for p, hit in pool.dropped if hit.startswith("subject: ")]
    # Such texts exist in this data and the prompt check alone keeps them.
    assert by_subject and all(HeldOut(held).hit(t) is None for t in by_subject)


def test_held_out_prompts_cover_every_probe_kind_but_the_edit_prompts():
    probes = [Probe("rewrite", "a", "The CEO of X is"), Probe("paraphrase", "a", "X's chief is"),
              Probe("locality", "l", "Paris is in"), Probe("neighborhood", "a", "The CEO of Y is"),
              Probe("multihop", "m", "Q: who?\nA:", questions=("Q: who?\nA:", "Q: which?\nA:"))]
    held = held_out_prompts(probes)
    assert "The CEO of X is" not in held
    assert {"X's chief is", "Paris is in", "The CEO of Y is", "Q: who?\nA:", "Q: which?\nA:"} == set(held)


def _edits_file(path: Path) -> Path:
    rows = [
        {"subject": "Italy", "prompt": "The President of Italy is", "target_new": "Giorgia Meloni",
         "paraphrases": ["Italy's head of state is"], "train_paraphrases": ["Italy is led by its president,"]},
        {"subject": "Amazon", "prompt": "The CEO of Amazon is", "target_new": "Tim Cook",
         "paraphrases": ["Amazon's chief executive is"],
         # The other edit's evaluation paraphrase: must be left out of training.
         "train_paraphrases": ["Amazon is run by", "Italy's head of state is"]},
        {"subject": "France", "prompt": "The capital of France is", "target_new": "Berlin",
         "paraphrases": ["France's capital city is"]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_run_trains_on_no_evaluation_probe_and_says_so(fact_llama_dir, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    edits = _edits_file(tmp_path / "edits.jsonl")
    probe_probe = load_edits(DataConfig(name=str(edits), root=str(data_root), locality_limit=4)).locality[0].prompt
    retain = tmp_path / "retain.txt"
    retain.write_text(f"{probe_probe}\nThe weather in spring is\n")
    cfg = load_config(None, [f"model={fact_llama_dir}", "device=cpu", "threads=1", *LORA, "lora.epochs=2",
                             "lora.kl_weight=1", f"lora.retain_file={retain}", "lora.retain_sampled=2",
                             "lora.retain_sampled_tokens=4", "lora.n_prefixes=2", "lora.prefix_tokens=4",
                             f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                             "eval.max_new_tokens=4", "save_artifacts=false"])
    run = tmp_path / "run"
    metrics = run_trial(cfg, run, progress=lambda _: None)
    training = metrics["training"]
    assert training["disjoint_from_eval"] is True and training["eval_prompts_checked"] > 0
    assert training["eval_subjects_checked"] == 4 == training["retain"]["held_out_subjects_checked"]
    assert training["retain"]["dropped_as_overlap"] >= 1
    assert metrics["epochs_run"] == training["epochs_run"] == len(metrics["history"]) == 2
    record = json.loads((run / "training_prompts.json").read_text())
    trained = [e["prompt"] for e in record["examples"]] + [r["text"] for r in record["retain"]]
    assert probe_probe not in trained and "The weather in spring is" in trained
    # Training paraphrases are trained; evaluation paraphrases (and another edit's) never are.
    sources = {(e["case_id"].split(":")[-1], e["source"], e["prompt"]) for e in record["examples"]}
    assert ("1", "train_paraphrase", "Italy is led by its president,") in sources
    assert ("2", "train_paraphrase", "Amazon is run by") in sources
    assert training["examples"] == {"prompt": 3, "prefix": 6, "train_paraphrase": 2}
    assert training["examples_dropped_as_eval_overlap"] == 1
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    guard = HeldOut([r["prompt"] for r in rows if r["probe"] != "rewrite"])
    assert {r["prompt"] for r in rows if r["probe"] == "paraphrase"} == {
        "Italy's head of state is", "Amazon's chief executive is", "France's capital city is"}
    assert all(guard.hit(t) is None for e in record["examples"] if e["source"] != "prompt" for t in [e["prompt"]])
    assert all(guard.hit(t) is None for t in (r["text"] for r in record["retain"]))


def test_train_paraphrases_off_trains_the_bare_prompts_only(fact_llama_dir, data_root, tmp_path):
    edits = load_edits(DataConfig(name=str(_edits_file(tmp_path / "e.jsonl")), root=str(data_root), locality="none"))
    outcome, _ = edit(fact_llama_dir, [*LORA, "lora.epochs=1", "lora.train_paraphrases=false"], edits.requests)
    assert outcome.training["examples"] == {"prompt": 3, "prefix": 0, "train_paraphrase": 0}


def test_a_training_paraphrase_that_is_an_evaluation_paraphrase_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"subject": "Italy", "prompt": "The President of Italy is", "target_new": "X",
                                "paraphrases": ["Italy's head of state is"],
                                "train_paraphrases": ["Italy's  head of state is"]}) + "\n")
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path), locality="none"))
    assert "bad.jsonl" in str(err.value) and "line 1" in str(err.value) and "train_paraphrases[0]" in str(err.value)


def test_retain_overlaps_with_an_edit_prompt_are_dropped_even_without_probes():
    requests = [EditRequest("a", "Italy", "Italy is a", "republic")]
    cfg = load_config(None, ["lora.kl_weight=1", "lora.retain_templates=['{} is a', 'The flag of {}']"])
    pool = build_pool(requests, cfg.options, [], held_out=())
    assert [p.text for p in pool.prompts] == ["The flag of Italy"]
    assert [p.text for p, _ in pool.dropped] == ["Italy is a"]


def test_no_retain_prompt_left_is_an_error(fact_llama_dir):
    from chronosweep.editing.training import NoRetainPrompts

    held = [f"{s} is a" for s in ("Italy", "Amazon", "France", "Lionel Messi", "Apple", "Germany")]
    with pytest.raises(NoRetainPrompts, match="no retain prompt is left"):
        edit(fact_llama_dir, [*LORA, "lora.epochs=1", "lora.kl_weight=1", "lora.retain_templates=['{} is a']"],
             held_out=held)


# --- early stopping ---------------------------------------------------------------------------------------------------

def test_early_stopping_ends_training_once_every_edit_is_learned(fact_llama_dir):
    outcome, _ = edit(fact_llama_dir, [*LORA, "lora.lr=3e-2", "lora.epochs=60", "lora.patience=2"])
    history = outcome.history
    assert outcome.training["stopped_early"] is True and "argmax for 2 epoch" in outcome.training["stop_reason"]
    assert outcome.training["epochs_run"] == len(history) < 60
    assert history[-1]["learned"] == history[-2]["learned"] == 1.0
    assert len(history) < 3 or history[-3]["learned"] < 1.0


def test_early_stopping_on_a_loss_threshold(fact_llama_dir):
    outcome, _ = edit(fact_llama_dir, [*LORA, "lora.epochs=60", "lora.stop_loss=0.5"])
    losses = [r["loss"] for r in outcome.history]
    assert losses[-1] < 0.5 and all(x >= 0.5 for x in losses[:-1]) and len(losses) < 60


def test_without_patience_every_epoch_runs(fact_llama_dir):
    outcome, _ = edit(fact_llama_dir, [*LORA, "lora.lr=3e-2", "lora.epochs=5"])
    assert outcome.training["epochs_run"] == 5 and outcome.training["stopped_early"] is False


# --- options ------------------------------------------------------------------------------------------------------------

def test_local_edit_options_are_validated_together(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["lora.kl_weight=1", "lora.retain_templates=[]", "lora.patience=-1",
                           "lora.retain_per_step=0", "lora.stop_loss=0"])
    text = str(err.value)
    for key in ("lora.kl_weight", "lora.patience", "lora.retain_per_step", "lora.stop_loss"):
        assert key in text, text
    missing = tmp_path / "nope.txt"
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method=full", f"full.retain_file={missing}", "full.retain_templates=['no subject']",
                           f"ptuning.retain_file={empty}"])
    text = str(err.value)
    assert f"full.retain_file: {missing}: no such file" in text
    assert "full.retain_templates[0]" in text and "ptuning.retain_file" in text and "holds no prompt" in text


def test_ptuning_takes_the_kl_term_against_its_base_model(fact_llama_dir):
    outcome, _ = edit(fact_llama_dir, ["method=ptuning", "ptuning.num_virtual_tokens=4", "ptuning.encoder_hidden_size=16",
                                       "ptuning.epochs=2", "ptuning.batch_size=3", "ptuning.kl_weight=1",
                                       "ptuning.n_prefixes=1", "ptuning.prefix_tokens=3"])
    assert outcome.training["kl_reference"] == "adapter disabled, every step"
    assert outcome.training["prefix_cache"] == {"layer": None, "status": "off"}
    assert all(r["kl"] is not None and r["kl"] >= 0 for r in outcome.history)


def test_locality_probes_of_the_dataset_are_held_out_too(data_root):
    edits = EditSet("t", [EditRequest("a", "Italy", "The President of Italy is", "X",
                                      locality=(LocalityProbe("Italy is a country in", "Europe"),))],
                    [LocalityProbe("Italy is a country in", "Europe")])
    held = held_out_prompts(build_probes(edits, EvalConfig()))
    cfg = load_config(None, ["lora.kl_weight=1"])
    pool = build_pool(edits.requests, cfg.options, [], held)
    assert "Italy is a" in {p.text for p, _ in pool.dropped}


# --- the key-statistics penalty ---------------------------------------------------------------------------------------

KEY = ["lora.key_samples=2048", "freeze.key_samples=2048"]


def _penalty(model, tok, ctx):
    from chronosweep.editing.key_penalty import KeyPenalty

    return KeyPenalty(model, tok, corpus="model", samples=2048, fingerprint=ctx.info.fingerprint,
                      cache_dir=ctx.cache_dir, device=ctx.device)


def test_the_key_penalty_is_the_mean_squared_output_change_on_corpus_inputs(fact_llama_dir):
    """tr(dW C dW^T) / tr(W C W^T) equals mean ||dW x||^2 / mean ||W x||^2 over the corpus's inputs, read directly."""
    from chronosweep.editing.stats import corpus_tokens, stats_dir

    cfg, ctx = make_ctx(fact_llama_dir, LORA)
    model, tok = load_tiny(ctx)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"],
                                                  layers_to_transform=[1, 2], task_type="CAUSAL_LM"))
    penalty = _penalty(peft_model, tok, ctx)
    assert len(penalty.terms) == 6
    assert float(penalty().detach()) == 0.0  # LoRA's B starts at zero
    torch.manual_seed(1)
    loras = {name: m for name, m in peft_model.named_modules() if hasattr(m, "lora_B") and "default" in m.lora_B}
    for m in loras.values():
        m.lora_B["default"].weight.data.normal_(std=0.05)
    value = penalty()
    value.backward()
    assert all(m.lora_A["default"].weight.grad.abs().sum() > 0 for m in loras.values())

    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in loras}

    def keep(name):
        return lambda module, args: inputs[name].append(args[0].reshape(-1, args[0].shape[-1]))

    handles = [m.register_forward_pre_hook(keep(name)) for name, m in loras.items()]
    folder = stats_dir(ctx.cache_dir, ctx.info.fingerprint, "model", 2048)
    tokens = corpus_tokens(peft_model, tok, "model", 2048, folder, ctx.device)
    rows = tokens[: len(tokens) // 128 * 128].reshape(-1, 128).long()
    with torch.no_grad(), peft_model.disable_adapter():
        peft_model(input_ids=rows, attention_mask=torch.ones_like(rows))
    for h in handles:
        h.remove()
    ratios = []
    for name, m in loras.items():
        x = torch.cat(inputs[name]).double()
        d = m.get_delta_weight("default").detach().double()
        w = m.get_base_layer().weight.detach().double()
        ratios.append(float(((x @ d.T) ** 2).sum(1).mean() / ((x @ w.T) ** 2).sum(1).mean()))
    assert float(value.detach()) == pytest.approx(sum(ratios) / len(ratios), rel=1e-3)


@pytest.mark.parametrize("method, args", [("lora", LORA), ("freeze", FREEZE)])
def test_the_key_weight_keeps_corpus_outputs_closer(fact_llama_dir, method, args):
    finals = {}
    for weight in (0.0, 50.0):
        outcome, tok = edit(fact_llama_dir, [*args, *KEY, f"{method}.epochs=8", f"{method}.lr=1e-2",
                                             f"{method}.key_weight={weight}"])
        if weight:
            assert outcome.training["key_penalty"]["modules"] > 0
            assert all(r["key"] is not None and r["key"] >= 0 for r in outcome.history)
        else:
            assert all(r["key"] is None for r in outcome.history) and "key_penalty" not in outcome.training
        finals[weight] = outcome
    _, ctx = make_ctx(fact_llama_dir, ["method=lora"])
    if method == "lora":
        changes = {w: float(_penalty(o.model, tok, ctx)().detach()) for w, o in finals.items()}
    else:
        # Full and freeze: the change of each trained weight against the unedited model's, on the same statistics.
        fresh, tok = load_tiny(ctx)
        for p in fresh.parameters():
            p.requires_grad_(False)
        for name, p in fresh.named_parameters():
            p.requires_grad_(name in {n for n, q in finals[0.0].model.named_parameters() if q.requires_grad})
        penalty = _penalty(fresh, tok, ctx)
        changes = {}
        for w, o in finals.items():
            trained = dict(o.model.named_parameters())
            with torch.no_grad():
                for t in penalty.terms:
                    t.weight = trained[f"{t.name}.weight"]
            changes[w] = float(penalty().detach())
    assert changes[50.0] < 0.5 * changes[0.0], changes
    assert finals[50.0].history[-1]["loss"] < finals[50.0].history[0]["loss"]


def test_the_key_penalty_refuses_ptuning_up_front():
    with pytest.raises(ConfigError, match="ptuning.key_weight: P-tuning trains a prompt encoder"):
        load_config(None, ["method=ptuning", "ptuning.key_weight=1"])
    with pytest.raises(ConfigError, match="lora.key_corpus: '/no/such.txt' is neither"):
        load_config(None, ["lora.key_weight=1", "lora.key_corpus=/no/such.txt"])
