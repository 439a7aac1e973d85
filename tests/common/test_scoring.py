"""common.scoring: hand-written vectors for every extractor, and every gold answer of GSM8K test and
MATH-500 graded right against itself and wrong against another item's."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common import scoring

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize(
    "text, expected",
    [("1,000", "1000"), ("$18.00", "18"), ("18.", "18"), ("-3", "-3"), ("0.50", "0.5"), (" 2,125 ", "2125"),
     ("abc", None), ("", None), ("nan", None), ("inf", None), ("1/2", None)],
)  # fmt: skip
def test_normalize_number(text, expected):
    assert scoring.normalize_number(text) == expected


def test_numbers_equal():
    assert scoring.numbers_equal("18.0", "18") and scoring.numbers_equal("$1,000", "1000")
    assert not scoring.numbers_equal("18", "18.5")
    assert not scoring.numbers_equal(None, "1") and not scoring.numbers_equal("x", "x")


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("She makes 9 * 2 = $18.\n#### 18", "18", "18"),
        ("#### 1,000", "1000", "1000"),
        ("#### $5.", "5", "5"),
        ("#### -7", "-7", "-7"),
        ("first #### 3, then #### 4", "4", "4"),
        ("#### 18\nWait, it is 20", "18", "20"),
        ("The answer is 18.", None, "18"),
        ("It costs $1,250.50 in total", None, "1250.5"),
        ("we have 5-3 left", None, "3"),
        ("so x = -2", None, "-2"),
        ("#### none", None, None),
        ("no digits here, version x2", None, None),
    ],
)
def test_gsm8k_extractors(text, strict, flexible):
    assert scoring.gsm8k_extract_strict(text) == strict
    assert scoring.gsm8k_extract_flexible(text) == flexible


def test_gsm8k_modes_disagree_on_free_form_outputs():
    assert scoring.gsm8k_is_correct("#### 18\nor 20", "18", mode="strict")
    assert not scoring.gsm8k_is_correct("#### 18\nor 20", "18", mode="flexible")
    assert not scoring.gsm8k_is_correct("The answer is 18.", "#### 18", mode="strict")
    assert scoring.gsm8k_is_correct("The answer is 18.", "#### 18", mode="flexible")
    assert scoring.gsm8k_is_correct("#### 18.0", "18", mode="strict")
    assert (
        scoring.gsm8k_extract_strict("#### 18.0") == "18"
        and scoring.gsm8k_extract_flexible("#### 18.0") == "18"
    )


def test_gsm8k_bad_inputs():
    with pytest.raises(ValueError, match="unknown GSM8K extraction mode 'loose'; valid: strict, flexible"):
        scoring.gsm8k_is_correct("#### 1", "1", mode="loose")
    with pytest.raises(ValueError, match="holds no number"):
        scoring.gsm8k_is_correct("#### 1", "no answer here")


def test_every_gsm8k_test_gold_grades_itself_right_and_another_wrong():
    rows = _jsonl(DATA / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    golds = [scoring.gsm8k_gold_answer(r["answer"]) for r in rows]
    for i, row in enumerate(rows):
        assert scoring.gsm8k_is_correct(row["answer"], row["answer"], mode="strict"), i
        assert scoring.gsm8k_is_correct(row["answer"], golds[i], mode="flexible"), i
        # The next item whose final number differs (neighbours may share an answer).
        j = next(k % len(rows) for k in range(i + 1, i + len(rows)) if golds[k % len(rows)] != golds[i])
        for mode in ("strict", "flexible"):
            assert not scoring.gsm8k_is_correct(rows[j]["answer"], row["answer"], mode=mode), (i, j, mode)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{2}} and finally \boxed{\left( 3, \frac{\pi}{2} \right)}.", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\fbox{7}", "7"),
        (r"$\boxed 5$", "5"),
        (r"\boxed{a^{2}", None),
        ("no box", None),
        (r"\boxed", None),
    ],
)  # fmt: skip
def test_last_boxed(text, expected):
    assert scoring.last_boxed(text) == expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        (r"The answer is $\boxed{\frac12}$.", r"\frac{1}{2}", True),
        ("So it is 0.5", r"\frac{1}{2}", True),
        (r"$\boxed{\dfrac{1}{2}}$", r"\frac{1}{2}", True),
        (r"$\boxed{x = 5}$", "5", True),
        (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}$", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"$\boxed{3}$", r"\frac{1}{2}", False),
        ("I do not know.", r"\frac{1}{2}", False),
        (r"$\boxed{(3, \pi)}$", r"\left( 3, \frac{\pi}{2} \right)", False),
    ],
)
def test_math_is_correct_vectors(pred, gold, expected):
    assert scoring.math_is_correct(pred, gold) is expected


def test_math_verify_argument_order_is_gold_then_prediction():
    # math-verify is asymmetric: an interval prediction matches an inequality gold, not the reverse.
    assert scoring.math_is_correct(r"$\boxed{(1,2)}$", "1 < x < 2")
    assert not scoring.math_is_correct(r"$\boxed{1 < x < 2}$", "(1,2)")


def test_math_is_correct_works_off_the_main_thread():
    def grade(args):
        assert threading.current_thread() is not threading.main_thread()
        assert scoring._math_verify_timeout() is None
        return scoring.math_is_correct(*args)

    cases = [
        (r"$\boxed{\frac{2}{4}}$", r"\frac{1}{2}"),
        (r"$\boxed{7}$", r"\sqrt{49}"),
        (r"$\boxed{3}$", "4"),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(grade, cases)) == [True, True, False]
    assert scoring._math_verify_timeout() == scoring.MATH_VERIFY_TIMEOUT_S


def test_normalize_math_answer():
    assert scoring.normalize_math_answer(r"$\left( 3, \dfrac{\pi}{2} \right)$.") == r"(3,\frac{\pi}{2})"
    assert scoring.normalize_math_answer(r"\text{Evelyn}") == "Evelyn"
    assert scoring.normalize_math_answer(r"x = 5") == "5"
    assert scoring.normalize_math_answer(r"75^\circ") == "75"
    assert scoring.normalize_math_answer("x == 5") != "5"


def test_every_math500_gold_grades_itself_right_and_another_wrong():
    rows = _jsonl(DATA / "math500" / "test.jsonl")
    assert len(rows) == 500
    norm = [scoring.normalize_math_answer(r["answer"]) for r in rows]
    for i, row in enumerate(rows):
        assert scoring.math_is_correct(f"The final answer is $\\boxed{{{row['answer']}}}$.", row["answer"]), i
        assert scoring.math_is_correct(row["solution"], row["answer"]), i
        # Against the next item whose answer differs as a string AND after `normalize_math_answer`
        # (which, like math-verify, equates "x=5" with "5"): such pairs are genuinely different answers.
        j = next(
            k % len(rows)
            for k in range(i + 1, i + len(rows))
            if rows[k % len(rows)]["answer"] != row["answer"] and norm[k % len(rows)] != norm[i]
        )
        assert not scoring.math_is_correct(f"$\\boxed{{{rows[j]['answer']}}}$", row["answer"]), (i, j)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (B)", "B"),
        ("B.", "B"),
        ("B", "B"),
        ("**C**", "C"),
        ("Answer: D", "D"),
        ("**Answer:**\n\nB", "B"),
        ("The answer is: **D**", "D"),
        ("The correct option is C.", "C"),
        ("The answer is option E", "E"),
        ("The answer is B, because it fits.", "B"),
        ("Final answer: (D) 42", "D"),
        ("(B) because (B) is right", "B"),
        ("Let me think. A is wrong. So (C) fits.", "C"),
        ("The answer is A. Wait, no: the answer is C.", "C"),
        ("The answer is a bit unclear", None),
        ("A cat sat on the mat", None),
        ("(A) or (B)", None),
        ("The answer is A or B", None),
        ("So the answer is A, B or C", None),
        ("(A) is wrong, (C) is right", None),
        ("The answer is F", None),
        ("answer: (e)", None),
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert scoring.extract_choice(text) == expected


def test_extract_choice_custom_letters():
    assert scoring.extract_choice("The answer is (H).", choices="ABCDEFGH") == "H"
    assert scoring.extract_choice("The answer is (H).") is None
    assert scoring.extract_choice("The answer is (C).", choices="AB") is None


def test_extract_choice_ignores_echoed_option_lists_in_real_prompts():
    # CSQA options such as "B. choice\nC. will" must not read as "choice C".
    for path in (DATA / "proxykd" / "CSQA" / "test.json", DATA / "proxykd" / "ARC" / "test.json"):
        prompts = [r["instruction"] for r in json.loads(path.read_text(encoding="utf-8"))]
        assert prompts and all(scoring.extract_choice(p) is None for p in prompts), path
