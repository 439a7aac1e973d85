"""Spec invariants 9-10 (Jaccard filter, answer extraction) and the data pipeline on the real SVAMP rationales."""

from pathlib import Path

import pytest

from common.data import load_rows
from common.models import load_tokenizer, smollm2_dir
from papers.mcckd.data import DATASETS, svamp_prompt
from papers.mcckd.rationales import (
    TooFewRationales,
    build_record,
    build_records,
    correct_rationales,
    deduplicate_texts,
    encode_example,
    encode_records,
    extract_choice_flexible,
    extract_choice_strict,
    extract_flexible,
    extract_strict,
    is_correct,
    jaccard,
    normalise_rationale,
)

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def test_jaccard_properties():
    a, b = "the cat sat on the mat", "a cat sat on a hat"
    assert jaccard(a, a) == 1.0 and jaccard(a, b) == jaccard(b, a)
    assert jaccard(a, b) == pytest.approx(3 / 7)  # {cat, sat, on} of 7 distinct whitespace tokens


def test_deduplicate_release_semantics():
    texts = ["x y z w", "p q r s", "x y z w v", "u v"]
    # text 0 and text 2 share 4 of 5 tokens (0.8): the EARLIER one is dropped
    assert deduplicate_texts(texts, 0.8) == ["p q r s", "x y z w v", "u v"]
    assert deduplicate_texts(texts, 1.0) == texts  # distinct texts all kept at threshold 1
    source = texts + ["u v"]
    out = deduplicate_texts(source, 0.5)
    rest = iter(source)
    assert all(any(t == u for u in rest) for t in out)  # an order-preserving subsequence of the input
    assert out == ["p q r s", "x y z w v", "u v"]


def test_answer_extraction_examples():
    text = "He had 600 + 400 = 1,000 coins.\nTherefore, the answer is 1,000 ."
    assert extract_flexible(text) == "1000" and extract_strict(text) == "1,000"
    assert extract_flexible("She has eighteen left.") is None  # only one..twelve are mapped
    assert extract_flexible("She has eight left.") == "8"
    assert extract_flexible("She has eighteen, so she keeps twelve.") == "12"
    assert extract_flexible("So the answer is 7.\nWe check: 3 + 4 = 7.0") == "7"
    assert extract_flexible("Therefore 5 apples and 2 pears, 12 in all") == "12"
    assert extract_choice_flexible("Birds fly, so the answer is (C).") == "c"
    assert extract_choice_strict("It is B or\nTherefore, the answer is D .") == "D"
    assert is_correct("Therefore, the answer is 32 .", "32") and not is_correct("answer 32.5", "32")
    assert is_correct("x\nTherefore, the answer is 1,000 .", "1000", "flexible")
    with pytest.raises(ValueError, match="extraction mode"):
        is_correct("1", "1", "loose")


def test_normalise_and_too_few():
    assert normalise_rationale("2 + 3 = 5.\n#### 5", "5") == "2 + 3 = 5.\nTherefore, the answer is 5 ."
    with pytest.raises(TooFewRationales, match="needs >= 2"):
        build_record("q?", ["so 4", "so 5", "so 4 4"], "5", k=3)


@pytest.fixture(scope="module")
def svamp():
    return load_rows(DATASETS["mcckd-svamp"], "train", SHARED)


def test_filters_on_real_svamp(svamp):
    assert len(svamp) == 700 and all(len(r["rationales"]) == 10 for r in svamp)
    correct = [len(correct_rationales(r["rationales"], r["answer"])) for r in svamp]
    assert sum(correct) / 700 == pytest.approx(6.7, abs=0.05)  # spec: ~6.7 of 10
    assert sum(c >= 2 for c in correct) == 642  # spec: 642/700 with >= 2 correct
    records, stats = build_records(svamp, k=3)
    assert stats["records"] == 642 and stats["dropped"] == 58
    assert all(2 <= len(r["output"]) <= 3 for r in records)
    assert all(o.endswith(f"Therefore, the answer is {r['label']} .") for r in records for o in r["output"])


@pytest.mark.parametrize("mode", ["answer_tokens", "answer_sentence"])
def test_spans_point_at_the_answer_with_smollm2_tokenizer(svamp, mode):
    tok = load_tokenizer(smollm2_dir())
    records, _ = build_records(svamp[:40], k=3)
    questions = encode_records(tok, records, svamp_prompt, mode)
    assert len(questions) >= 0.9 * len(records)
    for record, examples in zip(records, questions):
        lengths = {ex["span"][1] - ex["span"][0] for ex in examples}
        assert len(lengths) == 1  # position-aligned KL
        for ex in examples:
            s, e = ex["span"]
            piece = tok.decode(ex["input_ids"][s:e]).strip()
            want = (
                record["label"]
                if mode == "answer_tokens"
                else f"Therefore, the answer is {record['label']} ."
            )
            assert piece == want
            assert ex["labels"][s:e] == ex["input_ids"][s:e] and ex["labels"][-1] == tok.eos_token_id


def test_encode_example_rejects_a_rationale_without_the_sentence():
    tok = load_tokenizer(smollm2_dir())
    with pytest.raises(ValueError, match="does not end with the answer sentence"):
        encode_example(tok, "q\n", "no answer here", "3", "answer_tokens")
