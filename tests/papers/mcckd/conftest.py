"""Fixtures of the MCC-KD tests: a tiny T5 builder and a toy-world task with released rationales."""

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import DEFAULT_WORLD, make_splits, valid_rationales
from papers.mcckd.data import EvalSet, Task, heldout_pairs, toy_prompt
from papers.mcckd.rationales import ANSWER_SENTENCE


@pytest.fixture
def tiny_t5():
    """A builder of a randomly initialised one-layer T5 (a FlanT5-style student) for a tokenizer, seeded 0."""

    def build(tok) -> T5ForConditionalGeneration:
        config = T5Config(
            vocab_size=len(tok),
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=tok.pad_token_id,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        torch.manual_seed(0)
        return T5ForConditionalGeneration(config)

    return build


def _row(p, rationales: bool = False) -> dict:
    row = {"id": p.uid, "question": p.question, "answer": str(p.answer)}
    if rationales:
        row["rationales"] = [t for t in valid_rationales(p, 3, seed=0)]
    return row


@pytest.fixture(scope="session")
def world_task() -> Task:
    """A small toy-world task whose 12 train questions carry 3 valid rationales each (no teacher), and a
    from-scratch tiny student: the stages run on it in seconds, without the toy base models."""
    splits = make_splits(DEFAULT_WORLD)
    rows = lambda ps, r=False: [_row(p, r) for p in ps]  # noqa: E731
    return Task(
        name="world",
        kind="number",
        setting="arith",
        model_label="tiny-student",
        train=rows(splits["train"][:12], True),
        dev=rows(splits["validation"][:4]),
        tests=[
            EvalSet("toy-arith", "toy-arith", "toy", "number", rows(splits["test"][:4])),
            EvalSet("toy-arith-ood", "toy-arith-ood", "toy", "number", rows(splits["test"][4:7])),
        ],
        prompt_fn=toy_prompt,
        tokenizer=world_tokenizer(DEFAULT_WORLD),
        teacher_model="none",
        teacher_prompts=[],
        student_model="toy-student-scratch",
        target_prefix=" ",
        heldout=heldout_pairs(
            splits["test"][:6], world_tokenizer(DEFAULT_WORLD), "answer_tokens", ANSWER_SENTENCE
        ),
        key={"teacher": "released", "fixture": 1},
    )
