"""Dataset adapters on the real shared files, plus malformed input, root resolution and the missing-data error."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil

import pytest

import chronosweep.data.files as data_files
from chronosweep.data import BUNDLED, DataError, detect_layout, load_edits, read_edits, select, write_jsonl
from chronosweep.data import command as data_command
from chronosweep.data.config import DataConfig
from chronosweep.data.dyknow import edit_from_answers
from chronosweep.data.files import ORIGINS, sha256


def load(root, name, **kw):
    kw.setdefault("limit", None)
    kw.setdefault("locality", "none")
    return load_edits(DataConfig(name=name, root=str(root), **kw))


def by_id(edits, case_id):
    (hit,) = [r for r in edits.requests if r.case_id == case_id]
    return hit


def unsourced(requests):
    return [dataclasses.replace(r, source="") for r in requests]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty cache and a download that fails like an unreachable network; records the URLs it was asked for."""
    calls: list[str] = []

    def refuse(url, dest):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_files, "download", refuse)
    return calls


# --- DyKnow ---------------------------------------------------------------------------------------------


def test_dyknow_current_holder_is_new_and_latest_ended_other_holder_is_old(data_root):
    edits = load(data_root, "dyknow")
    italy = by_id(edits, "dyknow:countries_byGDP/Italy/President of Italy")
    # The file lists Ciampi (ended 2006) before Napolitano (ended 2015): the latest end wins, not file order.
    assert (italy.target_new, italy.target_true) == ("Sergio Mattarella", "Giorgio Napolitano")
    assert italy.prompt == "The head of state in Italy is"
    assert italy.paraphrases == ("The President of Italy is", "The name of the current President of Italy is",
                                 "The position of the President of Italy is currently held by")
    assert (italy.subject, italy.relation, italy.kind) == ("Italy", "President of Italy", "modification")
    assert (italy.time_start, italy.time_end) == ("+2015-02-03T00:00:00Z", None)

    # Flat categories (companies, athletes) have no relation level and phrasings rephrased_1..3.
    walmart = by_id(edits, "dyknow:companies_byRevenue/Walmart")
    assert (walmart.target_new, walmart.target_true, walmart.relation) == ("Doug McMillon", "Mike Duke", "companies_byRevenue")
    assert walmart.prompt == "The current Chief Executive Officer of Walmart is"
    assert len(walmart.paraphrases) == 3


def test_dyknow_counts_and_skips_on_the_real_file(data_root):
    edits = load(data_root, "dyknow")
    # 130 elements: 111 edits; one-holder histories and club + national-team pairs cannot form an edit.
    assert len(edits.requests) == 111
    assert edits.skipped == {"no earlier holder with another name": 11, "several current holders": 8}
    ids = {r.case_id for r in edits.requests}
    assert "dyknow:athletes_byPayment/Cristiano Ronaldo" not in ids
    assert "dyknow:countries_byGDP/Egypt/President of Egypt" not in ids
    assert len(ids) == len(edits.requests)
    for r in edits.requests:
        # Prompts end right before the object: no trailing space, object not already in the prompt.
        assert r.prompt == r.prompt.rstrip() and r.target_new not in r.prompt
        assert r.target_true and r.target_true != r.target_new


def test_dyknow_skip_reasons():
    ok = edit_from_answers(("B |S: +2010-00-00T00:00:00Z |E: +2015-00-00T00:00:00Z",
                            "C |S: +2015-00-00T00:00:00Z", "A |S: +2000-00-00T00:00:00Z |E: +2010-00-00T00:00:00Z"))
    assert ok == ("C", {"S": "+2015-00-00T00:00:00Z"}, "B")
    assert edit_from_answers(("A |S: +2000-00-00T00:00:00Z |E: +2001-00-00T00:00:00Z",)) == "no current holder"
    assert edit_from_answers(("A |S: +2000-00-00T00:00:00Z", "B |S: +2001-00-00T00:00:00Z")) == "several current holders"
    assert edit_from_answers(("A |S: +2020-00-00T00:00:00Z", "A |S: +2000-00-00T00:00:00Z |E: +2010-00-00T00:00:00Z")) \
        == "no earlier holder with another name"
    assert edit_from_answers(("A |S: yesterday", "B |S: +2000-00-00T00:00:00Z |E: +2010-00-00T00:00:00Z")) == "unparsable answer"


# --- MQuAKE ---------------------------------------------------------------------------------------------


def test_mquake_case_1_edit_and_multihop(data_root):
    edits = load(data_root, "mquake")
    assert [r.case_id for r in edits.requests] == ["mquake:1:0", "mquake:2:0", "mquake:1868:0"]
    r = edits.requests[0]
    assert r.prompt == "The name of the current head of the New York City government is"
    assert (r.subject, r.target_new, r.target_true, r.relation) == ("New York City", "Eric Adams", "Bill de Blasio", "P6")
    assert r.target_new_aliases == ("Eric L. Adams", "Eric Leroy Adams")
    assert r.paraphrases == ()  # the rewrite's question is not a cloze
    m = r.multihop
    assert m.case_id == "mquake:1" and m.answer == "Eric Adams" and m.aliases == r.target_new_aliases
    assert m.questions[0] == "Who is the head of government in the location of the headquarters of TV Land?"
    assert len(m.questions) == 3
    assert [(h.cloze, h.answer) for h in m.hops] == [
        ("The headquarters of TV Land is located in the city of", "New York City"),
        ("The name of the current head of the New York City government is", "Eric Adams"),
    ]
    assert "NYC" in m.hops[0].aliases


def test_mquake_limit_and_offset_keep_whole_cases(data_root):
    hard = load(data_root, "mquake-hard")
    assert len(hard.requests) == 429 * 4
    first = hard.requests[:4]
    assert len({id(r.multihop) for r in first}) == 1  # one shared object: evaluation counts the case once
    assert [r.case_id for r in load(data_root, "mquake-hard", limit=6).requests] == [r.case_id for r in first]
    assert len(load(data_root, "mquake-hard", limit=8).requests) == 8
    assert len(load(data_root, "mquake-hard", limit=3).requests) == 4  # at least one whole case
    shifted = load(data_root, "mquake-hard", limit=4, offset=1).requests
    assert [r.case_id for r in shifted] == [r.case_id for r in hard.requests[4:8]]
    # Plain edits are units of one: limit and offset count edits.
    assert len(select(load(data_root, "counterfact").requests, 5, 7)) == 7


# --- EasyEdit CounterFact and zsRE ----------------------------------------------------------------------


def test_counterfact_field_mapping(data_root):
    edits = load(data_root, "counterfact", limit=2, locality="dataset")
    r = edits.requests[0]
    assert r.case_id == "counterfact:3087"
    assert (r.subject, r.prompt) == ("David Robinson", "David Robinson professionally plays the sport")
    assert (r.target_new, r.target_true) == ("baseball", "basketball")
    assert r.paraphrases == ("David Robinson's greatest weakness is",)
    assert [(p.prompt, p.answer) for p in r.locality] == [("Shaquille O'Neal plays", "basketball")]
    # data.locality=dataset: the selected records' own probes.
    assert [p.prompt for p in edits.locality] == ["Shaquille O'Neal plays", edits.requests[1].locality[0].prompt]


def test_zsre_field_mapping_as_easyedit(data_root):
    edits = load(data_root, "zsre", limit=1, locality="dataset")
    r = edits.requests[0]
    assert (r.case_id, r.subject, r.prompt) == ("zsre:0", "UniFirst", "What is the product made by UniFirst?")
    assert (r.target_new, r.target_true) == ("unmanned aircraft", "uniform")
    assert r.paraphrases == ("What will be the product of UniFirst?",)
    # EasyEdit keeps the NQ prefix on the locality prompt.
    assert edits.locality[0].prompt == "nq question: john goodman's character in the big lebowski"
    assert edits.locality[0].answer == "Walter Sobchak"
    # Records with an empty alt are skipped (as EasyEdit does) and counted.
    assert edits.skipped == {"empty alt": 2}
    assert len(load(data_root, "zsre").requests) == 998


# --- locality --------------------------------------------------------------------------------------------


def test_known_1000_probes_are_deterministic_spread_and_avoid_edited_subjects(data_root):
    a = load_edits(DataConfig(name="dyknow", root=str(data_root), limit=None, locality_limit=40))
    b = load_edits(DataConfig(name="dyknow", root=str(data_root), limit=None, locality_limit=40))
    assert a.locality == b.locality and len(a.locality) == 40
    facts = json.loads((data_root / "known_1000" / "known_1000.json").read_text())
    by_prompt = {f["prompt"]: f for f in facts}
    chosen = [by_prompt[p.prompt] for p in a.locality]
    assert all(f["attribute"] == p.answer for f, p in zip(chosen, a.locality))
    assert len({f["relation_id"] for f in chosen}) >= 15  # spread over the file, not one relation's block
    assert max(facts.index(f) for f in chosen) > len(facts) * 0.9
    edited = {r.subject for r in a.requests}
    assert not edited & {f["subject"] for f in chosen}
    assert load(data_root, "dyknow", locality="none").locality == []


def test_dataset_locality_without_probes_is_an_error(data_root):
    with pytest.raises(DataError, match="carry no locality probes"):
        load(data_root, "dyknow", locality="dataset")


# --- chronosweep JSONL and layout detection -----------------------------------------------------------


def test_jsonl_round_trip(data_root, tmp_path):
    original = load(data_root, "dyknow", limit=5).requests + load(data_root, "mquake-hard", limit=8).requests \
        + load(data_root, "counterfact", limit=3).requests + load(data_root, "mquake-remastered-t", limit=4).requests \
        + load(data_root, "knowedit-recent", limit=40).requests
    path = write_jsonl(original, tmp_path / "edits.jsonl")
    back = load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    assert unsourced(back.requests) == unsourced(original)
    assert back.requests[5].multihop is back.requests[8].multihop  # regrouped into one case
    assert back.requests[0].source == "edits.jsonl:1"


def test_jsonl_minimal_injection_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"subject": "Acme", "prompt": "The CEO of Acme is ", "target_new": "Jane Doe", "time_start": 2024}\n\n')
    (r,) = load_edits(DataConfig(name=str(path), locality="none")).requests
    assert (r.case_id, r.kind, r.prompt, r.time_start) == ("mine:1", "injection", "The CEO of Acme is", "2024")


def test_layout_detected_from_keys(data_root, tmp_path):
    for name in ("counterfact", "zsre", "mquake-hard", "dyknow"):
        layout, rel = BUNDLED[name]
        copy = tmp_path / f"my-{name}.json"
        shutil.copy(data_root / rel, copy)
        found, parsed = read_edits(copy)
        assert found == layout
        named = load(data_root, name).requests
        assert [r.target_new for r in parsed.requests] == [r.target_new for r in named]
    assert detect_layout([{"subject": "a", "prompt": "b", "target_new": "c"}]) == "chronosweep"
    # Every name the config accepts has a file and a layout: the config takes its names from the catalog.
    for name in BUNDLED:
        problems: list[str] = []
        DataConfig(name=name).check("data", problems)
        assert problems == []
    problems = []
    DataConfig(name="no-such-set").check("data", problems)
    assert len(problems) == 1 and "neither a bundled dataset" in problems[0]


# --- malformed input ------------------------------------------------------------------------------------


def test_missing_field_and_wrong_type_name_file_record_and_field(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([
        {"case_id": 7, "prompt": "A plays", "subject": "A", "target_new": 5, "ground_truth": "x", "rephrase_prompt": "B"},
        {"case_id": 8, "subject": "A", "target_new": "y", "rephrase_prompt": "B"},
    ]))
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path)))
    text = str(err.value)
    assert str(path) in text and "2 problems" in text
    assert "record 0 (case_id 7), field 'target_new': expected a string, got an integer" in text
    assert "record 1 (case_id 8), field 'prompt': missing" in text


def test_jsonl_problems_name_line_and_nested_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"subject": "A", "promt": "A is", "target_new": "B",
                                "multihop": {"questions": "Who?", "answer": "B"}}) + "\n")
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path)))
    text = str(err.value)
    assert str(path) in text
    assert "line 1 (case_id bad:1), field 'promt': unknown field" in text
    assert "line 1 (case_id bad:1), field 'prompt': missing" in text
    assert "field 'multihop.questions': expected a list of strings, got a string" in text


def test_mquake_nested_problems(tmp_path):
    case = {"case_id": 5, "questions": ["q?"], "new_answer": "X",
            "requested_rewrite": [{"prompt": "The boss of {} is", "subject": "S", "target_new": {"id": "Q1"}},
                                  {"prompt": "no subject slot", "subject": "S", "target_new": {"str": "X"}}]}
    path = tmp_path / "mq.json"
    path.write_text(json.dumps([case]))
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path)))
    text = str(err.value)
    assert "record 0 (case_id 5), requested_rewrite[0], field 'target_new.str': missing" in text
    assert "requested_rewrite[1], field 'prompt': must contain exactly one {}" in text


def test_bad_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"subject": "A",}\n]')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON at line 2, column 19"):
        load_edits(DataConfig(name=str(path)))
    lines = tmp_path / "broken.jsonl"
    lines.write_text('{"subject": "A", "prompt": "A is", "target_new": "B"}\n{"subject": \n{]\n')
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(lines)))
    assert "2 bad lines" in str(err.value) and "line 2, column" in str(err.value) and "line 3, column" in str(err.value)


def test_empty_results_are_errors(tmp_path, data_root):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no edits in the file"):
        load_edits(DataConfig(name=str(empty)))
    with pytest.raises(DataError, match="no edits left after data.offset=111"):
        load(data_root, "dyknow", offset=111)
    with pytest.raises(DataError, match="neither a bundled dataset"):
        load_edits(DataConfig(name=str(tmp_path / "absent.json")))


# --- data root, cache, download -------------------------------------------------------------------------


def test_root_from_env_var_and_data_root_wins(data_root, tmp_path, monkeypatch, offline):
    env_root = tmp_path / "env"
    (env_root / "dyknow").mkdir(parents=True)
    shutil.copy(data_root / "dyknow" / "grc_generated.json", env_root / "dyknow")
    monkeypatch.setenv("CHRONOSWEEP_DATA", str(env_root))
    edits = load_edits(DataConfig(name="dyknow", locality="none"))
    assert edits.files == [str(env_root / "dyknow" / "grc_generated.json")]
    assert load_edits(DataConfig(name="dyknow", root=str(data_root), locality="none")).files[0].startswith(str(data_root))
    # The env root is the only one looked at: zsRE is not there, and is not taken from the shared copy.
    with pytest.raises(DataError, match=r"\$CHRONOSWEEP_DATA"):
        load_edits(DataConfig(name="zsre", locality="none"))
    assert offline == [ORIGINS["zsre/zsre_mend_train-1k.json"].url]


def test_missing_data_says_where_to_put_it(tmp_path, offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name="dyknow", root=str(empty)))
    text = str(err.value)
    assert f"{empty}/dyknow/grc_generated.json (data.root)" in text
    assert "network is unreachable" in text and "raw.githubusercontent.com/sislab-unitn/DyKnow" in text
    assert "CHRONOSWEEP_DATA" in text and "--root" in text and "--path" in text
    assert list(empty.iterdir()) == []  # the data root is never written to
    # The MQuAKE-T sample has no public copy: no download is tried, and the error says so.
    offline.clear()
    with pytest.raises(DataError, match="no public copy of its own") as err:
        load_edits(DataConfig(name="mquake", root=str(empty)))
    assert offline == [] and "princeton-nlp/MQuAKE" in str(err.value)


def test_download_is_verified_and_cached(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    served = {"file": data_root / "dyknow" / "grc_generated.json"}
    monkeypatch.setattr(data_files, "download", lambda url, dest: shutil.copy(served["file"], dest))
    cached = tmp_path / "cache" / "data" / "dyknow" / "grc_generated.json"

    served["file"] = data_root / "zsre" / "zsre_mend_train-1k.json"  # wrong bytes: rejected, nothing cached
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        load_edits(DataConfig(name="dyknow", root=str(empty), locality="none"))
    assert not cached.exists() and list(cached.parent.iterdir()) == []

    served["file"] = data_root / "dyknow" / "grc_generated.json"
    edits = load_edits(DataConfig(name="dyknow", root=str(empty), locality="none"), progress=lambda msg: None)
    assert edits.files == [str(cached)] and sha256(cached) == ORIGINS["dyknow/grc_generated.json"].sha256
    monkeypatch.setattr(data_files, "download", lambda url, dest: pytest.fail("the cached copy should be used"))
    assert len(load_edits(DataConfig(name="dyknow", root=str(empty), locality="none", limit=None)).requests) == 111


# --- command --------------------------------------------------------------------------------------------


def test_data_command_summary(data_root, capsys, tmp_path):
    parser = argparse.ArgumentParser()
    data_command.register(parser.add_subparsers())
    out_file = tmp_path / "out.jsonl"
    args = parser.parse_args(["data", "mquake-hard", "--root", str(data_root), "--limit", "8", "--export", str(out_file)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "edits: 8 (modification 8, injection 0" in out
    assert "multi-hop: 2 cases (8 edits), 8 hops (8 edited, 0 unchanged), 6 questions" in out
    assert "locality probes: 50" in out
    assert len(out_file.read_text().splitlines()) == 8

    args = parser.parse_args(["data", "dyknow", "--root", str(data_root), "--locality", "none"])
    args.func(args)
    out = capsys.readouterr().out
    assert "edits: 111 (modification 111, injection 0" in out
    assert "  several current holders: 8" in out and "  no earlier holder with another name: 11" in out
    assert "  President of Italy  " in out


def test_dyknow_structure_problems(tmp_path):
    path = tmp_path / "dk.json"
    path.write_text(json.dumps({"countries": {
        "Atlantis": {"King of Atlantis": {"questions": {"generic": "The king of Atlantis is"}}},
        "Lemuria": {"questions": {"generic": "The ruler of Lemuria is"}, "answers": "Mu |S: +2000-00-00T00:00:00Z"},
        "Oz": {"questions": {"rephrased_1": "The wizard of Oz is"}, "answers": []},
    }}))
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path)))
    text = str(err.value)
    assert str(path) in text and "3 problems" in text
    assert "record countries/Atlantis/King of Atlantis, field 'answers': missing" in text
    assert "record countries/Lemuria, field 'answers': expected a list of strings, got a string" in text
    assert "record countries/Oz, field 'questions.generic': missing" in text


# --- duplicates and what the selection kept -------------------------------------------------------------------

def test_duplicate_edits_are_counted_reported_and_dropped_on_request(tmp_path):
    from chronosweep.data.hygiene import describe

    same = {"subject": "Amazon", "prompt": "The CEO of Amazon is", "target_new": "Andy Jassy"}
    # Case and spacing do not make an edit new.
    twin = {**same, "prompt": "The CEO of  amazon is", "target_new": "andy jassy"}
    other = {"subject": "Apple", "prompt": "The CEO of Apple is", "target_new": "Tim Cook"}
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [same] * 4 + [twin, other]))
    edits = load_edits(DataConfig(name=str(path), limit=None, locality="none"))
    assert len(edits.requests) == 6 and edits.duplicates == 4 and edits.total == 6
    assert describe(edits) == (f"6 edits from {path} (0 skipped records), 4 duplicate edit(s) (same prompt and "
                               "target as an earlier one; data.dedupe: true drops them)")
    kept = load_edits(DataConfig(name=str(path), limit=None, locality="none", dedupe=True))
    assert [r.prompt for r in kept.requests] == [same["prompt"], other["prompt"]]
    assert kept.duplicates == 0 and kept.dropped_duplicates == 4
    assert describe(kept) == f"2 of 6 edits from {path} (data.dedupe dropped 4 duplicate edit(s); 0 skipped records)"
    # The limit applies after dedupe: two distinct edits, not the first two copies of one.
    assert len(load_edits(DataConfig(name=str(path), limit=2, locality="none", dedupe=True)).requests) == 2


def test_a_limit_that_cuts_the_file_is_said_on_every_run(data_root, capsys):
    from chronosweep.cli import main
    from chronosweep.data.hygiene import describe

    assert describe(load(data_root, "dyknow", limit=20)) == "20 of 111 edits from dyknow (data.limit 20; 19 skipped records)"
    assert describe(load(data_root, "dyknow")) == "111 edits from dyknow (19 skipped records)"
    # What `chronosweep edit` prints before it loads the model (here its --check form).
    assert main(["edit", "--check", "--out", "unused", "--set", f"data.root={data_root}"]) == 0
    assert "20 of 111 edits from dyknow (data.limit 20; 19 skipped records)" in capsys.readouterr().out


def test_dedupe_keeps_every_multihop_case_asked(data_root):
    full = load(data_root, "mquake-hard")
    deduped = load(data_root, "mquake-hard", dedupe=True)
    cases = {r.multihop.case_id for r in full.requests}
    assert full.duplicates > 0 and deduped.dropped_duplicates > 0
    # A shared edit is trained once, yet each case keeps an edit that carries its questions.
    assert {r.multihop.case_id for r in deduped.requests} == cases
    assert len(deduped.requests) == len(full.requests) - deduped.dropped_duplicates
