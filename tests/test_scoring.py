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
