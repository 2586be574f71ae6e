import pytest

from chronosweep.core.requests import EditRequest, EditSet, Hop, LocalityProbe, MultiHop
from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.evaluate import Measurement
from chronosweep.evaluation.probes import build_probes
from chronosweep.evaluation.scoring import score


def _edits():
    mh = MultiHop("c1", ("Who leads the city of TV Land?", "Who runs TV Land's city?"), "Eric Adams", ("Eric L. Adams",),
                  (Hop("TV Land is based in", "New York City", ("NYC",)), Hop("The mayor of New York City is", "Eric Adams")))
    return EditSet("t", [
        EditRequest("e1", "Italy", "The President of Italy is", "Sergio Mattarella", (), "Giorgio Napolitano",
                    ("Italy's president is", "The head of state of Italy is")),
        EditRequest("e2", "New York City", "The mayor of New York City is", "Eric Adams", (), "Bill de Blasio", (), multihop=mh),
    ], [LocalityProbe("The capital of France is", "Paris")])


def test_score_counts_by_the_documented_rules():
    edits = _edits()
    probes = build_probes(edits, EvalConfig())
    kinds = [p.kind for p in probes]
    assert kinds == ["rewrite", "paraphrase", "paraphrase", "rewrite", "locality", "multihop", "hop", "hop"]
    q = [p for p in probes if p.kind == "multihop"][0].questions
    pre_text = {p.prompt: " unknown" for p in probes}
    pre_text.update({x: " no idea" for x in q})
    pre_text["The capital of France is"] = " Paris, the city of light"
    post_text = dict(pre_text)
    post_text.update({
        "The President of Italy is": " Sergio Mattarella.",
        "Italy's president is": " Sergio Mattarellaz",  # not a word boundary: wrong
        "The head of state of Italy is": " sergio mattarella, since 2015",
        "The mayor of New York City is": " Eric Adams",
        q[0]: " I think Bill de Blasio", q[1]: " It is Eric L. Adams.",
        "TV Land is based in": " NYC, USA",
        "The capital of France is": " Paris, the city of love",
    })
    n = len(probes)
    tf_ids = [[1, 2] if p.tf_target else None for p in probes]
    pre = Measurement(pre_text, [[1, 9] if t else None for t in tf_ids], tf_ids)
    post = Measurement(post_text, [[1, 2] if t else None for t in tf_ids], tf_ids)
    metrics, pre_metrics, rows, _ = score(probes, pre, post)
    assert len(rows) == n
    assert metrics["reliability"] == 1.0 and pre_metrics["reliability"] == 0.0
    # e1 has 1 of 2 paraphrases right, e2 has none: per-edit mean first -> only e1 counts, at 0.5.
    assert metrics["generalization"] == pytest.approx(0.5)
    assert metrics["multihop_accuracy"] == 1.0 and pre_metrics["multihop_accuracy"] == 0.0
    assert metrics["hop_accuracy"] == pytest.approx(1.0)  # "NYC, USA" counts through the alias
    # ROUGE-1 F1 of "paris the city of light" vs "paris the city of love": 4 of 5 unigrams.
    assert metrics["locality"] == pytest.approx(0.8)
    assert metrics["rewrite_acc"] == 1.0 and pre_metrics["rewrite_acc"] == 0.5
    # Locality token agreement compares post top tokens [1, 2] with pre's [1, 9].
    assert metrics["locality_acc"] == 0.5
    mh_row = [r for r in rows if r["probe"] == "multihop"][0]
    assert mh_row["prompt"] == q[1] and mh_row["post_all"][0] == " I think Bill de Blasio"


# --- the metrics that separate damage from drift, propagation from leakage -------------------------------------------

def _measure(probes, texts: dict[str, str], default: str) -> Measurement:
    prompts = {q for p in probes for q in (p.questions or (p.prompt,))}
    return Measurement({q: texts.get(q, default) for q in prompts}, [None] * len(probes), [None] * len(probes))


def _sweden(locality=("Vinson Massif is located in the continent of",)) -> EditSet:
    """One MQuAKE-Remastered-style case: the edit, the changed hop, one unchanged hop, one multi-hop question."""
    case = MultiHop("c1", ("Who heads the government of Jussi Björling's country?",), "Ulf Kristersson", (),
                    (Hop("", "Sweden", question="What is the country of citizenship of Jussi Björling?"),
                     Hop("", "Ulf Kristersson", question="Who heads the Swedish government?", changed=True)))
    edit = EditRequest("e1", "Sweden", "The head of the Sweden government is", "Ulf Kristersson", cases=(case,))
    return EditSet("t", [edit], [LocalityProbe(p) for p in locality])


def test_a_model_saying_the_new_object_everywhere_has_multihop_accuracy_1_but_specific_0():
    edits = _sweden()
    probes = build_probes(edits, EvalConfig())
    pre = _measure(probes, {"Vinson Massif is located in the continent of": " Antarctica."}, " I do not know.")
    everywhere = _measure(probes, {}, " Ulf Kristersson.")
    metrics, pre_metrics, rows, units = score(probes, pre, everywhere)
    assert metrics["reliability"] == 1.0 and metrics["multihop_accuracy"] == 1.0
    # The multi-hop "hit" is the answer leaking: the unchanged hop (Sweden) is answered with it too.
    assert metrics["multihop_specific"] == 0.0
    assert metrics["hop_edited"] == 1.0 and metrics["hop_unchanged"] == 0.0 and metrics["hop_accuracy"] == 0.5
    # Leakage: the locality probe and the unchanged hop both gained the new object -> 2 of 2.
    assert metrics["leakage"] == 1.0 and units["leakage"] == {"locality/locality:0#0": 1.0, "hop/c1#0": 1.0}
    assert metrics["locality_exact"] == 0.0 and "leakage" not in pre_metrics
    assert pre_metrics["multihop_specific"] == 0.0  # the unedited model answers no multi-hop question

    # The model that propagates: the multi-hop answer, while the unchanged hop keeps its own answer.
    sweden = {"Q: What is the country of citizenship of Jussi Björling?\nA:": " Sweden. He was a tenor.",
              "Vinson Massif is located in the continent of": " Antarctica.\n\nIt is the highest"}
    propagates = _measure(probes, sweden, " Ulf Kristersson.")
    metrics, *_ = score(probes, pre, propagates)
    assert metrics["multihop_specific"] == 1.0 and metrics["hop_unchanged"] == 1.0 and metrics["leakage"] == 0.0
    assert metrics["locality_exact"] == 1.0 and metrics["locality_answer"] == 1.0 and metrics["locality"] < 1.0


def test_multihop_known_counts_only_chains_the_unedited_model_knows():
    edits = _sweden()
    other = MultiHop("c2", ("Who heads the government of Greta Garbo's country?",), "Ulf Kristersson", (),
                     (Hop("", "Sweden", question="What is the country of citizenship of Greta Garbo?"),))
    edits.requests[0] = EditRequest("e1", "Sweden", "The head of the Sweden government is", "Ulf Kristersson",
                                    cases=(edits.requests[0].cases[0], other))
    probes = build_probes(edits, EvalConfig())
    knows_bjorling = {"Q: What is the country of citizenship of Jussi Björling?\nA:": " Sweden."}
    pre = _measure(probes, knows_bjorling, " No idea.")
    # After the edit: c1's question answered, c2's not.
    post = _measure(probes, {**knows_bjorling, "Q: Who heads the government of Greta Garbo's country?\nA:": " Olof."},
                    " Ulf Kristersson.")
    metrics, pre_metrics, _, units = score(probes, pre, post)
    assert metrics["multihop_accuracy"] == 0.5
    assert units["multihop_known"] == {"c1": 1.0} and metrics["multihop_known"] == 1.0
    assert metrics["n_multihop_known"] == 1 and pre_metrics["multihop_known"] == 0.0


def test_locality_answer_separates_drift_from_damage():
    drift, damage = "Vinson Massif is located in the continent of", "Egypt's capital,"
    edits = EditSet("t", [EditRequest("e1", "X", "X is", "Y")], [LocalityProbe(drift), LocalityProbe(damage)])
    probes = build_probes(edits, EvalConfig())
    pre = _measure(probes, {drift: " Europe. It is a mountain range that is part of the",
                            damage: " Rome, is a city steeped in history and culture. It"}, " no")
    post = _measure(probes, {drift: " Europe.\n\nThe United States has a diverse range of",
                             damage: " St. Louis Daktakula."}, " Y")
    metrics, _, rows, _ = score(probes, pre, post)
    # Whole continuations: drift scores 5 shared unigrams of 11 and 9 -> F1 0.5; the damaged one shares none.
    assert [r["score"] for r in rows if r["probe"] == "locality"] == [pytest.approx(0.5), 0.0]
    assert metrics["locality"] == pytest.approx(0.25)
    # Cut at the answer's end: "Europe." = "Europe." (unchanged), "Rome, is a city ... culture." vs "St. Louis
    # Daktakula." (changed; the "St." abbreviation does not end the sentence).
    assert [r["post_answer"] for r in rows if r["probe"] == "locality"] == ["Europe.", "St. Louis Daktakula."]
    assert metrics["locality_answer"] == pytest.approx(0.5) and metrics["locality_exact"] == 0.5


def test_confusion_names_one_subjects_edits_overwriting_each_other():
    edits = EditSet("t", [
        EditRequest("pres", "Italy", "The President of Italy is", "Sergio Mattarella",
                    paraphrases=("Italy's head of state is",)),
        EditRequest("pm", "Italy", "The Prime Minister of Italy is", "Giorgia Meloni"),
        # Same new object as "pres": answering with it is not confusion.
        EditRequest("hos", "Italy", "The head of the Italian state is", "Sergio Mattarella"),
    ], [LocalityProbe("The capital of France is")])
    probes = build_probes(edits, EvalConfig())
    pre = _measure(probes, {"The capital of France is": " Paris, Giorgia Meloni's neighbour"}, " unknown")
    post = _measure(probes, {"The President of Italy is": " Giorgia Meloni.", "Italy's head of state is":
                             " Sergio Mattarella", "The Prime Minister of Italy is": " Giorgia Meloni",
                             "The head of the Italian state is": " Sergio Mattarella.",
                             "The capital of France is": " Paris, Giorgia Meloni's neighbour"}, " x")
    metrics, pre_metrics, _, units = score(probes, pre, post)
    # pres: rewrite confused (Meloni), paraphrase not -> 0.5; pm, hos: 0 -> mean 1/6.
    assert units["confusion"] == {"pres": 0.5, "pm": 0.0, "hos": 0.0}
    assert metrics["confusion"] == pytest.approx(1 / 6) and pre_metrics["confusion"] == 0.0
    # The locality continuation names Meloni before and after the edit: not a leak.
    assert metrics["leakage"] == 0.0


def test_single_scores_a_locality_probe_after_every_edit_and_averages_each_of_its_scores():
    """Under protocol single the locality probe is measured after each edit: leakage, locality_answer and
    locality_exact are its share over those evaluations, not its first one's."""
    from chronosweep.evaluation.scoring import aggregate, unit_values
    from chronosweep.trial import protocols

    place = "Vinson Massif is located in the continent of"
    edits = EditSet("t", [EditRequest("e1", "Sweden", "The head of the Sweden government is", "Ulf Kristersson"),
                          EditRequest("e2", "Italy", "The head of the Italy government is", "Giorgia Meloni")],
                    [LocalityProbe(place)])
    probes = build_probes(edits, EvalConfig())
    pre = _measure(probes, {place: " Antarctica."}, " I do not know.")
    evaluations = []
    for req, locality in zip(edits.requests, (" Antarctica.", " Giorgia Meloni.")):
        idx = sorted(protocols.edit_probes(probes, [req]) + protocols.locality_probes(probes))
        evaluations.append((idx, _measure([probes[i] for i in idx], {place: locality}, f" {req.target_new}.")))
    rows = protocols.merged_rows(probes, pre, evaluations)
    (row,) = [r for r in rows if r["probe"] == "locality"]
    assert row["post"] == " Antarctica." and row["post_all"] == [" Antarctica.", " Giorgia Meloni."]
    assert row["same_answer_all"] == [True, False] and row["same_answer"] == 0.5
    assert row["answer_score_all"][0] == 1.0 and row["answer_score"] == pytest.approx(row["answer_score_all"][1] / 2 + 0.5)
    metrics = aggregate(unit_values(rows))
    # The second edit's object leaks into the probe: one evaluation of two.
    assert metrics["leakage"] == 0.5 and metrics["locality_exact"] == 0.5
    assert metrics["locality_answer"] == pytest.approx(row["answer_score"]) and metrics["reliability"] == 1.0
