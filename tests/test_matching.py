from chronosweep.evaluation.matching import contains_answer, normalize, starts_with_answer


def test_normalize_ignores_case_space_and_edge_punctuation():
    assert normalize("  “Sergio   Mattarella.”\n") == "sergio mattarella"


def test_starts_with_answer_needs_a_word_boundary():
    assert starts_with_answer(" Sergio Mattarella, who", ["Sergio Mattarella"])
    assert starts_with_answer(" sergio mattarella", ["X", "Sergio Mattarella"])
    assert not starts_with_answer(" Li Qiangonglao", ["Li Qiang"])
    assert not starts_with_answer(" The president is Sergio Mattarella", ["Sergio Mattarella"])
    assert starts_with_answer(" Eric L. Adams.", ["Eric Adams", "Eric L. Adams"])


def test_contains_answer_whole_words():
    assert contains_answer(" The mayor is Eric Adams.", ["Eric Adams"])
    assert not contains_answer(" The mayor is Eric Adamson.", ["Eric Adams"])
    assert not contains_answer("", ["Eric Adams"])
