"""The probable authors' answer extraction (spec "Invariants": GSM8K numbers, the last letter) and both accuracies."""

import pytest

from papers.proxykd.grading import bbh_answer, gsm8k_answer, letter_answer, mmlu_answer, score


def test_gsm8k_examples_of_the_spec():
    assert gsm8k_answer("She has 3.\nTherefore, the answer is 1,234.") == "1234"
    assert gsm8k_answer("The answer is 18.0") == "18"
    assert gsm8k_answer("So she keeps twelve.") == "12"  # number words one..twelve
    assert gsm8k_answer("line 7\nno digits here") == "7"  # the last line that has a number
    assert gsm8k_answer("It costs 5 dollars. So the total is 20. Then 3 more.") == "20"  # Therefore/So first
    assert gsm8k_answer("no number") is None


def test_letters_take_the_last_match():
    assert letter_answer("A is wrong, the answer is C") == "C"
    assert letter_answer("nothing") is None
    assert mmlu_answer("B. no, D. yes") == "D"
    assert bbh_answer("True or False? It is False", "True") == "false"
    assert bbh_answer("so the answer is (B).", "(A)") == "b"
    assert bbh_answer("yes, that is valid", "Invalid") == "valid"


def test_strict_and_answered_accuracy():
    res = score(["Therefore, the answer is 4.", "no idea", "So 5."], ["4", "3", "6"], "number")
    assert res["accuracy"] == pytest.approx(1 / 3)
    assert res["accuracy (answered)"] == pytest.approx(1 / 2)  # the code leaves unparsed outputs out
    with pytest.raises(ValueError, match="unknown answer kind"):
        score(["x"], ["A"], "essay")
