"""The toy world (papers/ipvrm/world.py): seeded, the two formats, the verifier, first-error labels."""

from __future__ import annotations

import random

import pytest

from papers.ipvrm.world import (
    WorldSpec,
    correct_chain,
    eval_set,
    first_error,
    is_correct,
    parse_steps,
    prompt_text,
    training_set,
    training_trajectory,
    world_tokenizer,
)

SPEC = WorldSpec()


def test_same_seed_same_data():
    assert training_set(3, 50, SPEC) == training_set(3, 50, SPEC)
    assert eval_set(3, 50, SPEC) == eval_set(3, 50, SPEC)
    assert training_set(3, 50, SPEC) != training_set(4, 50, SPEC)


def test_training_format_first_error_and_retries():
    rows = training_set(0, 2000, SPEC)
    for r in rows:
        steps = parse_steps(" ".join(r.response), SPEC)
        assert steps is not None
        assert first_error(r.operands, steps) == r.first_error
        retries = r.response.count("RETRY")
        assert retries == (SPEC.retries if r.first_error >= 0 else 0)
        assert r.response[-2] == "ANS" and r.response[-1] == ("OK" if r.label else "BAD")
    clean = [r for r in rows if r.first_error < 0]
    # P(clean) = 0.85^6 = 0.377; the outcome is 0.95 / 0.05 correlated with it
    assert abs(len(clean) / len(rows) - 0.85**6) < 0.04
    assert sum(r.label for r in clean) / len(clean) > 0.9
    erred = [r for r in rows if r.first_error >= 0]
    assert sum(r.label for r in erred) / len(erred) < 0.1


def test_errors_propagate():
    """After a wrong step the chain continues from the written digit (so the final answer is wrong)."""
    rng = random.Random(0)
    for _ in range(500):
        r = training_trajectory(rng, SPEC)
        steps = parse_steps(" ".join(r.response), SPEC)
        d = 0
        wrong = 0
        for a, got in zip(r.operands, steps):
            wrong += got != (d + a) % 10
            d = got
        if r.first_error >= 0 and wrong == 1:
            assert not is_correct(r.operands, " ".join(r.response), SPEC)


def test_eval_set_balanced_and_labelled():
    rows = eval_set(1, 400, SPEC)
    assert sum(r.first_error < 0 for r in rows) == 200
    for r in rows:
        steps = parse_steps(" ".join(r.response), SPEC)
        assert len(r.response) == 2 * SPEC.digits and "RETRY" not in r.response
        assert first_error(r.operands, steps) == r.first_error
        assert is_correct(r.operands, " ".join(r.response), SPEC) == (r.first_error < 0)
        assert r.label == int(r.first_error < 0)
    assert {r.first_error for r in rows if r.first_error >= 0} == set(range(SPEC.digits))


def test_verifier():
    ops = (3, 5, 1, 2, 0, 9)
    chain = correct_chain(ops)
    good = " ".join(f"STEP {d}" for d in chain)
    assert is_correct(ops, good, SPEC)
    assert is_correct(ops, good + " ANS OK", SPEC)
    with_retry = good.replace(f"STEP {chain[2]}", f"RETRY 7 STEP {chain[2]}", 1)
    assert is_correct(ops, with_retry, SPEC)
    assert not is_correct(ops, good[:-1] + str((chain[-1] + 1) % 10), SPEC)
    assert not is_correct(ops, " ".join(good.split()[:-2]), SPEC)  # too short
    assert not is_correct(ops, "RETRY 1 " + good, SPEC)  # RETRY before any step
    assert not is_correct(ops, good.replace("STEP", "STEP2", 1), SPEC)  # wrong marker
    indexed = WorldSpec(step_tokens="indexed")
    assert is_correct(ops, " ".join(f"STEP{k + 1} {d}" for k, d in enumerate(chain)), indexed)
    assert not is_correct(ops, good, indexed)


def test_interleaved_prompt_puts_each_operand_at_one_distance_from_its_step():
    """The interleaved prompt's point: a_k sits 2n tokens before step k's STEP token, for every k."""
    tok = world_tokenizer()
    clean = eval_set(0, 2, SPEC)[0]
    words = (prompt_text(clean.operands, SPEC) + " " + " ".join(clean.response)).split()
    steps = [i for i, w in enumerate(words) if w == "STEP"]
    for k, pos in enumerate(steps):
        assert words[pos - 2 * SPEC.digits] == str(clean.operands[k])
    assert len(tok(" ".join(words))["input_ids"]) == len(words)
    plain = WorldSpec(prompt_format="plain")
    assert prompt_text((1, 2), plain) == "<s> 1 2 SEP" and prompt_text((1, 2), SPEC) == "<s> + 1 + 2 SEP"


def test_retries_follow_the_last_step_or_the_error():
    for spec in (SPEC, WorldSpec(retry_position="error")):
        for r in training_set(5, 300, spec):
            if r.first_error < 0:
                continue
            first_retry = r.response.index("RETRY")
            expected = 2 * spec.digits if spec.retry_position == "end" else 2 * (r.first_error + 1)
            assert first_retry == expected


def test_tokenizer_round_trip():
    tok = world_tokenizer()
    r = training_set(0, 1, SPEC)[0]
    text = prompt_text(r.operands, SPEC) + " " + " ".join(r.response)
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.split()) and tok.unk_token_id not in ids
    assert tok.decode(ids[1:], skip_special_tokens=True) == text.split(" ", 1)[1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"digits": 0},
        {"digits": 12},
        {"p_err": 1.5},
        {"retries": -1},
        {"step_tokens": "fancy"},
        {"prompt_format": "csv"},
        {"retry_position": "start"},
    ],
)
def test_bad_spec_one_line(kwargs):
    with pytest.raises(ValueError, match=r"^WorldSpec\.\w+: [^\n]+$"):
        WorldSpec(**kwargs)
