"""The official letter extractor (all the spec's test vectors), per-item scores and the aggregation."""

import random

import pytest

from papers.socialbench.prompts import ItemError
from papers.socialbench.scoring import (
    Graded,
    aggregate,
    average,
    column_score,
    extract_letters,
    format_table,
    keyword_recall,
    score_choice,
    score_item,
    summarize,
)

# Spec "Output parsing": input -> letters, checked by the spec's author against the official function.
VECTORS = {
    "A": "A",
    "B.": "B",
    "(C)": "C",
    "Answer: D": "D",
    "**B**": "B",
    "D) anger": "D",
    "Option G: neutral": "G",
    "E": "E",
    "H": "H",
    "答案是B": "B",
    "选B": "B",
    "我选择：C。": "C",
    "AB": "AB",
    "A,B": "AB",
    "A、C": "AC",
    "ABD": "ABD",
    "A and C": "AC",
    "BC.": "BC",
    "ACE": "AE",
    "A good answer is C": "AC",
    "B\n\nExplanation: A is wrong": "BA",
    "A. fear\nB. sadness": "AB",
    "I think B": "B",
    "b": "",
    "": "",
    " ": "",
}


@pytest.mark.parametrize("text,want", list(VECTORS.items()))
def test_extract_letters_matches_the_official_vectors(text, want):
    assert extract_letters(text) == list(want)


def test_extractor_ignores_lowercase_and_letters_past_h_and_has_no_duplicates():
    assert extract_letters("a b c d") == []
    assert extract_letters("I J K Z") == []
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice("ABCDEFGHIJ abc,.:、选") for _ in range(rng.randint(0, 12)))
        got = extract_letters(text)
        assert len(got) == len(set(got))
        assert set(got) <= set("ABCDEFGH")
        assert all(c in text for c in got)


def mc(label, category="Individual-EP-DialogueEmotionDetect"):
    return {"label": label, "meta": {"category": category}, "choices": {k: k for k in "ABCDEFGH"}}


def test_single_answer_uses_only_the_first_letter():
    assert score_item(mc(["B"]), "B") == 1.0
    assert score_item(mc(["B"]), "B because A is wrong") == 1.0  # appended text never lowers the score
    assert score_item(mc(["B"]), "A, or maybe B") == 0.0
    assert score_item(mc(["B"]), "no idea") is None  # nothing parsed: undefined, not 0


def test_multi_answer_partial_credit_and_zero_on_any_wrong_letter():
    gold = ["A", "B", "D"]
    item = mc(gold, "Individual-EP-SituationUnderstanding")
    assert score_item(item, "A,B,D") == 1.0
    assert score_item(item, "D B A") == 1.0
    assert score_item(item, "A") == pytest.approx(1 / 3)
    assert score_item(item, "A, B") == pytest.approx(2 / 3)
    assert score_item(item, "A, B, C") == 0.0
    assert score_item(item, "") is None


def test_multi_answer_invariants_on_random_subsets():
    rng = random.Random(1)
    for _ in range(500):
        gold = rng.sample("ABCDE", rng.randint(2, 5))
        pred = rng.sample("ABCDE", rng.randint(1, 5))
        s = score_choice(pred, gold)
        assert 0.0 <= s <= 1.0
        assert (s == 1.0) == (set(pred) == set(gold))
        if not set(pred) <= set(gold):
            assert s == 0.0
        else:
            assert s == pytest.approx(len(pred) / len(gold))


def test_memory_keyword_recall():
    item = {"label": ["drive", "party"], "meta": {"category": "Individual-MEM-Short"}}
    assert score_item(item, "I plan to go for a drive and meet Nick.") == 0.5  # the README figure
    assert score_item(item, "DRIVE to the Party") == 1.0
    assert score_item(item, "nothing") == 0.0
    assert score_item(item, "") is None
    # the legacy single category takes the memory path too
    assert score_item({**item, "meta": {"category": "Individual-MEM"}, "dialogue": []}, "a party") == 0.5
    rng = random.Random(2)
    for _ in range(200):
        words = ["alpha", "beta", "gamma", "delta"]
        keywords = rng.sample(words, rng.randint(1, 4))
        reply = " ".join(rng.sample(words, rng.randint(1, 4)))
        base = keyword_recall(reply, keywords)
        assert 0 <= base <= 1
        assert keyword_recall(reply.upper(), [k.upper() for k in keywords]) == base
        assert keyword_recall(reply + " " + rng.choice(words), keywords) >= base


def test_score_item_bad_inputs_name_the_field():
    with pytest.raises(ItemError, match="label"):
        score_item({"label": [], "meta": {"category": "Group-SAP-Positive"}}, "A")
    with pytest.raises(ItemError, match="label"):
        score_item({"label": "A", "meta": {"category": "Group-SAP-Positive"}}, "A")
    with pytest.raises(ItemError, match="unknown category 'Group-SAP-Angry'"):
        score_item({"label": ["A"], "meta": {"category": "Group-SAP-Angry"}}, "A")
    with pytest.raises(ItemError, match="meta.category"):
        score_item({"label": ["A"], "meta": {}}, "A")


def test_column_score_official_excludes_undefined_strict_counts_it_as_zero():
    graded = [Graded("EP Emo.", "c", "en", s) for s in (1.0, 0.0, None, 1.0)]
    graded.append(Graded("EP Emo.", "c", "en", None, failed=True))
    s = column_score(graded)
    assert (s.n, s.n_defined, s.n_failed) == (4, 3, 1)
    assert s.official == pytest.approx(200 / 3)
    assert s.strict == pytest.approx(50.0)
    assert s.parse_failure_rate == pytest.approx(25.0)
    # a failed call is never scored: adding more failures changes nothing but the count
    more = column_score(graded + [Graded("EP Emo.", "c", "en", None, failed=True)] * 5)
    assert (more.official, more.strict, more.n_failed) == (s.official, s.strict, 6)


def test_avg_is_the_unweighted_mean_of_the_nine_columns():
    columns = [
        "SA Style",
        "SA Know",
        "EP Situ.",
        "EP Emo.",
        "CM Short",
        "CM Long",
        "SP Pos.",
        "SP Neu.",
        "SP Neg.",
    ]
    published = [83.87, 90.64, 53.10, 52.89, 83.29, 73.15, 91.53, 73.44, 63.82]  # Qwen-72B-Chat, Avg 73.97
    graded = []
    for i, (col, value) in enumerate(zip(columns, published)):
        # different item counts per column: Avg must not weight by items
        graded += [Graded(col, col, "en", value / 100)] * (i + 1)
    summary = summarize(graded)
    assert summary["avg_complete"]
    assert list(summary["columns"]) == columns
    assert summary["avg"]["official"] == pytest.approx(73.97, abs=0.006)
    assert "Avg " in format_table(summary)


def test_summary_per_language_and_category():
    graded = [
        Graded("EP Emo.", "Individual-EP-HumorSarcasmDetect", "zh", 1.0),
        Graded("EP Emo.", "Individual-EP-DialogueEmotionDetect", "en", 0.0),
        Graded("EP Situ.", "Individual-EP-SituationUnderstanding", "en", 0.5),
    ]
    summary = summarize(graded)
    assert summary["columns"]["EP Emo."]["official"] == 50.0
    assert summary["languages"]["zh"]["EP Emo."]["official"] == 100.0
    assert summary["languages"]["en"]["EP Emo."]["official"] == 0.0
    assert summary["categories"]["Individual-EP-HumorSarcasmDetect"]["n"] == 1
    assert not summary["avg_complete"]
    assert summary["avg"]["official"] == pytest.approx(50.0)
    assert "Avg(2/9)" in format_table(summary)
    assert average(aggregate([])) is None
