"""The temporal multi-hop and injection adapters (MQuAKE-Remastered-T, KnowEdit recent, DyKnow's per-model sets) and
neighborhood probes: every record of the real files becomes an edit or is counted, bad input names where it is."""

from __future__ import annotations

import json

import pytest

from chronosweep.data import DataError, load_edits
from chronosweep.data.config import DataConfig
from chronosweep.data.files import ORIGINS, sha256
from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.probes import build_probes


def load(root, name, **kw):
    kw.setdefault("limit", None)
    kw.setdefault("locality", "none")
    return load_edits(DataConfig(name=name, root=str(root), **kw))


# --- MQuAKE-Remastered-T ----------------------------------------------------------------------------------------

def test_remastered_every_case_becomes_a_case_of_one_shared_edit(data_root):
    edits = load(data_root, "mquake-remastered-t")
    assert edits.skipped == {}
    cases = [m for r in edits.requests for m in r.multihop_cases]
    # 150 blocks, 53 distinct edits (the README's counts): each edit trained once, with all of its cases.
    assert len(cases) == 150 and len({m.case_id for m in cases}) == 150 and len(edits.requests) == 53
    assert all(r.kind == "injection" and r.multihop is None for r in edits.requests)
    unchanged = [sum(not h.changed for h in m.hops) for m in cases]
    assert (unchanged.count(1), unchanged.count(2)) == (115, 35)  # two-hop and three-hop cases
    assert all(sum(h.changed for h in m.hops) == 1 and len(m.questions) == 3 for m in cases)

    first = edits.requests[0]
    assert first.case_id == "mquake-remastered-t:edit:1"
    assert first.prompt == "The name of the current head of the South Korea government is"
    assert first.target_new == "Yoon Suk-yeol"
    # The subject is the unchanged hop's answer that occurs in the edit sentence (K-pop -> South Korea -> ...).
    assert first.subject == "South Korea"
    assert first.relation == "The name of the current head of the {} government is"
    case = first.cases[0]
    assert case.case_id == "mquake-remastered-t:1" and case.answer == "Yoon Suk-yeol" and not case.cloze
    assert case.questions[0].startswith("What is the name of the leader of the government in the country where")
    assert [(h.question, h.answer, h.changed) for h in case.hops] == [
        ("What type of music does Kim Junsu play?", "K-pop", False),
        ("Which country was K-pop created in?", "South Korea", False),
        ("What is the name of the current head of the South Korea government?", "Yoon Suk-yeol", True)]
    # Google's edit: the subject is the answer of "Who is the developer of Chromecast?".
    google = next(r for r in edits.requests if r.target_new == "Googleplex")
    assert google.subject == "Google" and len(google.cases) == 2


def test_remastered_is_registered_with_its_public_origin_and_digest(data_root):
    origin = ORIGINS["mquake-remastered/mquake-T.txt"]
    assert origin.url == ("https://raw.githubusercontent.com/leo-liuzy/mend/96c5d60729e2ce3a5b2918f3a12df44af92e84b5/"
                          "spotcheck/mquake-T.txt")
    assert sha256(data_root / "mquake-remastered" / "mquake-T.txt") == origin.sha256
    knowedit = ORIGINS["knowedit/recent_train.json"]
    assert knowedit.url.endswith("/5456es/Edit_Evaluation/61fbce928af13bd89cb3586e20ee712ed4ddff7d/"
                                 "KnowEdit/benchmark/wiki_recent/recent_train.json")
    assert sha256(data_root / "knowedit" / "recent_train.json") == knowedit.sha256
    sums = dict(line.split()[::-1] for line in (data_root / "SHA256SUMS").read_text().splitlines())
    assert sums["mquake-remastered/mquake-T.txt"] == origin.sha256 and sums["knowedit/recent_train.json"] == knowedit.sha256


def test_remastered_limit_keeps_an_edit_with_all_its_cases_and_probes_ask_questions(data_root):
    edits = load(data_root, "mquake-remastered-t", limit=2)
    assert [len(r.cases) for r in edits.requests] == [4, 3]  # South Korea's 4 cases, Sweden's 3
    probes = build_probes(edits, EvalConfig())
    hops = [p for p in probes if p.kind == "hop"]
    assert hops[0].prompt == "Q: What type of music does Kim Junsu play?\nA:" and hops[0].match == "contains"
    assert [p.changed for p in hops[:3]] == [False, False, True]
    assert sum(p.kind == "multihop" for p in probes) == 7 and sum(p.kind == "rewrite" for p in probes) == 2


BLOCK = """**Edit**: The name of the current head of the Sweden government is Ulf Kristersson
**Single-hop Queries (changed)**:
What is the name of the current head of the Sweden government? Ulf Kristersson
**Single-hop Queries (unchanged)**:
What is the country of citizenship of Jussi Björling? Sweden
**Multi-hop Queries**:
Who is the current head of the government in the country of citizenship of Jussi Björling? Ulf Kristersson
"""
SEP = "=" * 30


def test_remastered_separator_glued_to_a_line_and_the_subject_fallbacks(tmp_path):
    # No unchanged answer in the sentence: the capitalised span shared with the changed question is the subject;
    # with neither, the case is skipped and counted.
    shared = BLOCK.replace("Jussi Björling? Sweden", "Jussi Björling? Kingdom of Sweden")
    neither = (BLOCK.replace("Sweden government is", "government of that country is")
               .replace("Jussi Björling? Sweden", "Jussi Björling? Kingdom of Sweden")
               .replace("head of the Sweden government?", "head of the government?"))
    path = tmp_path / "t.txt"
    path.write_text(BLOCK + SEP + "\n" + shared + SEP + "\n" + neither.rstrip("\n") + SEP)
    edits = load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    assert edits.skipped == {"no subject found in the edit sentence": 1}
    (edit,) = edits.requests  # the first two blocks share one edit
    assert edit.subject == "Sweden" and [m.case_id for m in edit.cases] == ["t:1", "t:2"]


def test_remastered_problems_name_block_line_and_part(tmp_path):
    bad_qa = BLOCK.replace("Jussi Björling? Sweden", "Jussi Björling - Sweden")
    wrong_end = BLOCK.replace("government is Ulf Kristersson", "government is Magdalena Andersson")
    missing = BLOCK.split("**Multi-hop Queries**")[0]
    path = tmp_path / "bad.txt"
    path.write_text("".join(part + SEP + "\n" for part in (bad_qa, wrong_end, missing)))
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    text = str(err.value)
    assert f"invalid data in {path} (3 problems)" in text
    assert "block 1 (line 1), line 5, part '**Single-hop Queries (unchanged)**': expected 'question? answer'" in text
    assert "block 2 (line 9), part '**Edit**': the edit sentence" in text and "does not end with" in text
    assert "block 3 (line 17): missing part '**Multi-hop Queries**'" in text


# --- KnowEdit recent ------------------------------------------------------------------------------------------------

def test_knowedit_recent_every_record_is_an_injection_with_its_probes(data_root):
    edits = load(data_root, "knowedit-recent")
    assert len(edits.requests) == 570 and edits.skipped == {}
    assert all(r.kind == "injection" for r in edits.requests)
    first = edits.requests[0]
    assert (first.subject, first.prompt, first.target_new) == (
        "Ingrīda Amantova", "The gender of Ingrīda Amantova is", "female")
    # Relation_Specificity: the subject's other facts, to be left alone.
    assert [n.prompt for n in first.neighborhood][:2] == ["The place of birth of Ingrīda Amantova is",
                                                          "The name of the country of citizenship of Ingrīda Amantova is"]
    assert first.neighborhood[1].answer == "Soviet Union"
    lake = next(r for r in edits.requests if r.subject == "Lac Otelnuk")
    assert len(lake.cases) == 8 and all(c.cloze for c in lake.cases)
    assert lake.cases[0].questions == ("The name of the capital city of the country Lac Otelnuk is associated with is",)
    assert lake.cases[0].answer == "Ottawa" and "City of Ottawa" in lake.cases[0].aliases
    # 88 records carry the 476 two-hop probes (the README's counts).
    assert sum(len(r.cases) for r in edits.requests) == 476 and sum(bool(r.cases) for r in edits.requests) == 88
    museum = next(r for r in edits.requests if r.subject == "Royal Ontario Museum")
    assert "The name of the country which ROM is associated with is" in museum.paraphrases
    assert "Dominion of Canada" in museum.target_new_aliases
    assert edits.unused == {"portability.Logical_Generalization probes": 223, "locality.Forgetfulness probes": 298}
    probes = build_probes(load(data_root, "knowedit-recent", limit=1), EvalConfig())
    assert [p.kind for p in probes] == ["rewrite"] + ["neighborhood"] * 5


def test_knowedit_problems_name_record_and_field(tmp_path):
    path = tmp_path / "ke.json"
    path.write_text(json.dumps([
        {"subject": "A", "prompt": "The capital of A is", "target_new": "B",
         "locality": {"Relation_Specificity": [{"prompt": "The river of A is", "ground_truth": 5}]}},
        {"subject": "C", "prompt": "The capital of C is", "target_new": ["D"], "portability": []},
    ]))
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    text = str(err.value)
    assert "record 0, field 'locality.Relation_Specificity[0].ground_truth': expected a list of answer lists" in text
    assert "record 1, field 'target_new': expected a string, got a list" in text
    assert "record 1, field 'portability': expected an object of probe lists, got a list" in text


# --- DyKnow: per-model editing sets, neighborhood -----------------------------------------------------------------

EDITING_SET = [
    {"prompt": "The position of the Prime Minister of Italy is currently held by", "target": "Giorgia Meloni",
     "subject": "Prime Minister of Italy", "domain": "countries_byGDP", "element": "Italy",
     "attribute": "Prime Minister of Italy", "prompt_type": "rephrased_2",
     "questions": {"generic": "The head of government in Italy is", "contextualized": "The Prime Minister of Italy is",
                   "rephrased_2": "The position of the Prime Minister of Italy is currently held by"},
     "answers": ["Mario Draghi |S: +2021-02-13T00:00:00Z |E: +2022-10-22T00:00:00Z",
                 "Giorgia Meloni |S: +2022-10-22T00:00:00Z",
                 "Giuseppe Conte |S: +2018-06-01T00:00:00Z |E: +2021-02-13T00:00:00Z"]},
    {"prompt": "The President of Italy is", "target": "Sergio Mattarella", "subject": "President of Italy",
     "domain": "countries_byGDP", "element": "Italy", "attribute": "President of Italy", "prompt_type": "contextualized",
     "questions": {"generic": "The head of state in Italy is", "contextualized": "The President of Italy is"},
     "answers": ["Sergio Mattarella |S: +2015-02-03T00:00:00Z"]},
    {"prompt": "The current CEO of Amazon is", "target": "Andy Jassy", "subject": "CEO position at Amazon",
     "domain": "companies_byRevenue", "element": "Amazon", "attribute": None, "prompt_type": "rephrased_1",
     "questions": {"generic": "The current Chief Executive Officer of Amazon is",
                   "rephrased_1": "The current CEO of Amazon is"},
     "answers": ["Andy Jassy |S: +2021-07-06T00:00:00Z", "Jeff Bezos |S: +1996-05-00T00:00:00Z |E: +2021-07-05T00:00:00Z"]},
]


def test_dyknow_per_model_editing_set_is_read_by_the_dyknow_loader(tmp_path):
    path = tmp_path / "editing_dataset.json"
    path.write_text(json.dumps(EDITING_SET))
    edits = load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    # The President of Italy has one holder only: no old object, counted.
    assert edits.skipped == {"no earlier holder with another name": 1}
    pm, ceo = edits.requests
    assert pm.case_id == "editing_dataset:countries_byGDP/Italy/Prime Minister of Italy"
    assert (pm.prompt, pm.target_new, pm.target_true) == (
        "The position of the Prime Minister of Italy is currently held by", "Giorgia Meloni", "Mario Draghi")
    assert pm.subject == "Prime Minister of Italy" and pm.relation == "Prime Minister of Italy"
    assert pm.paraphrases == ("The head of government in Italy is", "The Prime Minister of Italy is")
    assert pm.time_start == "+2022-10-22T00:00:00Z"
    # The head of state is not edited: it is a neighborhood probe of Italy's edit; Amazon has no other element.
    assert [n.prompt for n in pm.neighborhood] == ["The head of state in Italy is"]
    assert ceo.subject == "Amazon" and ceo.relation == "companies_byRevenue" and ceo.neighborhood == ()
    assert ceo.paraphrases == ("The current Chief Executive Officer of Amazon is",)


def test_dyknow_editing_set_problems_name_record_and_field(tmp_path):
    bad = [dict(EDITING_SET[0], target=None), dict(EDITING_SET[2], questions=["x"], colour="red")]
    path = tmp_path / "editing_dataset.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    text = str(err.value)
    assert "record 0, field 'target': expected a string, got null" in text
    assert "record 1, field 'questions': expected an object, got a list" in text
    assert "record 1, field 'colour': unknown field" in text


def test_dyknow_neighbours_are_the_subjects_unedited_elements(data_root):
    # Italy's two elements are the first two edits: alone, each has the other as neighbour; together, neither.
    (president,) = load(data_root, "dyknow", limit=1).requests
    assert president.subject == "Italy" and [n.prompt for n in president.neighborhood] == \
        ["The head of government in Italy is"]
    both = load(data_root, "dyknow", limit=2).requests
    assert [r.subject for r in both] == ["Italy", "Italy"] and all(r.neighborhood == () for r in both)
    probes = build_probes(load(data_root, "dyknow", limit=1), EvalConfig())
    assert [p.kind for p in probes].count("neighborhood") == 1


def test_counterfact_neighborhood_prompts(data_root):
    first = load(data_root, "counterfact", limit=1).requests[0]
    assert [(n.prompt, n.answer) for n in first.neighborhood] == [("Shaquille O'Neal plays", "basketball")]
