"""The toy world: determinism, disjoint splits, valid and flawed rationales, graders, tokenizer."""

import random
from dataclasses import replace

import pytest

from common.scoring import gsm8k_extract_strict, gsm8k_is_correct
from common.synthetic.flaws import FLAW_KINDS, first_error, make_flawed, parse_lines, preference_pairs
from common.synthetic.world import WorldConfig, make_splits, rationale_diversity, valid_rationales

SMALL = WorldConfig(seed=3, n_train=600, n_validation=100, n_test=150)


@pytest.fixture(scope="module")
def splits():
    return make_splits(SMALL)


def test_same_seed_same_world_bit_for_bit_other_seed_differs(splits):
    again = make_splits(SMALL)

    def text(s):
        return [(p.prompt(), p.rationale(), p.answer) for k in ("train", "validation", "test") for p in s[k]]

    assert text(splits) == text(again)
    assert text(make_splits(replace(SMALL, seed=4))) != text(splits)


def test_splits_have_their_sizes_and_never_share_a_question(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 600, "validation": 100, "test": 150}
    questions = {k: {p.question for p in v} for k, v in splits.items()}
    assert all(len(questions[k]) == len(splits[k]) for k in questions)
    assert not (questions["train"] & questions["test"]) and not (questions["train"] & questions["validation"])
    assert not (questions["validation"] & questions["test"])


def test_test_split_does_not_depend_on_train_size():
    a = make_splits(replace(SMALL, n_train=50))["test"]
    b = make_splits(replace(SMALL, n_train=500))["test"]
    assert [p.question for p in a] == [p.question for p in b]


def test_difficulty_dial_bounds_steps_and_values(splits):
    for p in splits["train"]:
        lines = p.steps()
        assert SMALL.min_ops <= len(lines) <= SMALL.max_ops + 1  # a final group op adds one line
        assert all(0 <= s.c <= SMALL.max_value for s in lines)
    hard = make_splits(WorldConfig(seed=1, min_ops=4, max_ops=5, n_train=100, n_validation=10, n_test=10))
    assert min(len(p.steps()) for p in hard["train"]) >= 4


def test_every_valid_rationale_evaluates_to_the_answer(splits):
    checked = 0
    for p in splits["train"] + splits["test"]:
        for text in valid_rationales(p, 4):
            for a, sym, b, c in parse_lines(text):  # every line's arithmetic is exact
                assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[sym] and (
                    sym != "/" or a % b == 0
                )
                assert c >= 0
            assert first_error(p, text) == -1
            assert gsm8k_extract_strict(text) == str(p.answer)
            assert gsm8k_is_correct(text, str(p.answer), mode="strict")
            checked += 1
    assert checked > 1000


def test_several_distinct_rationales_with_a_diversity_measure(splits):
    multi = [p for p in splits["train"] if len(p.orders()) > 1]
    assert len(multi) > 100  # step order varies where the arithmetic allows
    p = multi[0]
    texts = valid_rationales(p, 4)
    assert len(set(texts)) == len(texts) >= 2
    assert rationale_diversity(texts[0], texts[0]) == 0.0
    assert all(0 < rationale_diversity(a, b) <= 1 for i, a in enumerate(texts) for b in texts[i + 1 :])


def test_flawed_rationales_first_error_index_by_reevaluation(splits):
    rng = random.Random(0)
    kinds = set()
    for p in splits["train"]:
        steps = p.steps(rng.choice(p.orders()))
        flawed = make_flawed(p, steps, rng)
        if flawed is None:
            continue
        kinds.add(flawed.kind)
        assert first_error(p, flawed.text) == flawed.first_error
        good = p.render(steps)
        # every line before the first error is the valid rationale's line; the line at it is not
        assert flawed.text.splitlines()[: flawed.first_error] == good.splitlines()[: flawed.first_error]
        assert flawed.answer != p.answer
        assert not gsm8k_is_correct(flawed.text, str(p.answer), mode="strict")
        assert gsm8k_is_correct(flawed.text, str(flawed.answer), mode="strict")  # consistent to the end
    assert kinds == set(FLAW_KINDS)


def test_first_error_catches_each_kind_of_mistake(splits):
    p = next(q for q in splits["train"] if len(q.steps()) >= 3)
    good = p.rationale()
    lines = good.splitlines()
    a, sym, b, c = parse_lines(good)[1]
    broken = lines[:1] + [lines[1].replace(f"= {c}.", f"= {c + 1}.")] + lines[2:]
    assert first_error(p, "\n".join(broken)) == 1  # arithmetic slip
    assert first_error(p, "\n".join(lines[:-2] + [f"#### {p.answer}"])) == len(lines) - 3  # a step missing
    assert (
        first_error(p, "\n".join(lines[:-1] + [f"#### {p.answer + 1}"])) == len(lines) - 2
    )  # wrong final line


def test_preference_pairs(splits):
    pairs = preference_pairs(splits["train"], seed=1)
    assert len(pairs) > 0.9 * len(splits["train"])
    for pair in pairs[:200]:
        assert pair["chosen"] != pair["rejected"] and pair["prompt"].startswith("Question: ")
        assert gsm8k_is_correct(pair["chosen"], str(pair["answer"]))
        assert not gsm8k_is_correct(pair["rejected"], str(pair["answer"]))
        assert pair["first_error"] >= 0 and pair["flaw"] in FLAW_KINDS
    assert preference_pairs(splits["train"], seed=1) == pairs  # deterministic by seed


@pytest.mark.parametrize("habit", ["div-as-mul", "product+1", "skip-last"])
def test_a_habit_is_systematic_and_makes_the_answer_wrong(splits, habit):
    from common.synthetic.flaws import habit_rationales, habit_steps
    from common.synthetic.world import rationale_variants

    seen = 0
    for problem in splits["train"][:300]:
        for steps, wording in rationale_variants(problem, 2, seed=0):
            got = habit_steps(problem, steps, habit)
            if got is None:
                continue
            seen += 1
            if habit == "skip-last":  # the last op's lines are gone, every other line is as it was
                assert got == [s for s in steps if s.op_index != steps[-1].op_index]
                assert len(got) < len(steps) and got[-1].c != problem.answer
            for s, h in zip(steps if habit != "skip-last" else got, got):
                if habit == "div-as-mul" and s.kind == "div":  # the operator flips, the wording stays
                    assert (h.symbol, h.c) == ("*", h.a * h.b)
                elif habit == "product+1" and s.symbol == "*":
                    assert h.c == h.a * h.b + 1
                else:  # every other line: right arithmetic from the (wrong) running value
                    assert (
                        h.symbol == s.symbol
                        and h.c == {"+": h.a + h.b, "-": h.a - h.b, "*": h.a * h.b, "/": h.a // h.b}[h.symbol]
                    )
            text = problem.render(got, wording)
            assert first_error(problem, text) != -1 and not gsm8k_is_correct(text, str(problem.answer))
    assert seen > 50
    p = splits["train"][3]
    assert habit_rationales(p, 2, 0.0, habit=habit) == valid_rationales(p, 2)  # rate 0: the valid corpus
    with pytest.raises(ValueError, match="habit rate"):
        habit_rationales(p, 2, 1.5)
    with pytest.raises(ValueError, match="unknown habit"):
        habit_steps(p, p.steps(), "typo")


def test_pairs_can_carry_the_policy_habit(splits):
    from common.synthetic.flaws import habit_steps, preference_pairs

    val = splits["validation"]
    plain = preference_pairs(val, seed=0)
    assert preference_pairs(val, seed=0, habit=None, habit_share=0.9) == plain  # no habit: unchanged
    mixed = preference_pairs(val, seed=0, habit="skip-last", habit_share=0.5)
    by_uid = {p.uid: p for p in val}
    habit = [r for r in mixed if r["flaw"] == "skip-last"]
    assert 0.35 < len(habit) / len(mixed) < 0.65
    for r in habit:
        p = by_uid[r["id"]]
        assert r["rejected"].count("\n") < r["chosen"].count("\n")  # it stops early
        assert not gsm8k_is_correct(r["rejected"], str(p.answer)) and gsm8k_is_correct(
            r["chosen"], str(p.answer)
        )
        assert first_error(p, r["rejected"]) == r["first_error"] != -1
    assert habit_steps(val[0], val[0].steps(), "skip-last") is not None
    with pytest.raises(ValueError, match="habit_share"):
        preference_pairs(val, habit="skip-last", habit_share=2.0)
