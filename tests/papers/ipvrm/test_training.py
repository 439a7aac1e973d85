"""Does it learn: a few SFT steps on the toy world lower the NLL and move every parameter; an IPVRM copy
starts at softplus(m) (pi_phi = pi_ref) and its loss falls; Part A's pieces on a trained-looking RM."""

import math

import pytest
import torch

from common.models import build_tiny_causal_lm
from papers.ipvrm.stages import auc, step_score_lists
from papers.ipvrm.training import RMTrain, encode, rm_train, sft_train
from papers.ipvrm.world import WorldSpec, eval_set, training_set, world_tokenizer

SPEC = WorldSpec()


@pytest.fixture(scope="module")
def sft():
    torch.manual_seed(0)
    tok = world_tokenizer()
    model = build_tiny_causal_lm("tiny-student", len(tok), seed=0, tokenizer=tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = sft_train(model, tok, training_set(1, 60 * 32, SPEC), SPEC, 60, 32, 3e-3, seed=0)
    return tok, model, before, losses


def test_sft_learns_the_format(sft):
    tok, model, before, losses = sft
    assert losses[0] > math.log(len(tok)) - 0.5  # starts near uniform over the vocabulary
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5  # the format (STEP, digits, ANS tag) is learnt
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)


def test_ipvrm_copy_starts_at_softplus_margin_and_learns(sft):
    tok, model, _, _ = sft
    rm = build_tiny_causal_lm("tiny-student", len(tok), seed=0, tokenizer=tok)
    rm.load_state_dict(model.state_dict())
    data = training_set(100, 256, SPEC)
    losses = rm_train(rm, model, tok, data, SPEC, "IPVRM", RMTrain(25, 32, 3e-3, 0, beta=1.0, margin=0.5))
    assert losses[0] == pytest.approx(math.log1p(math.exp(0.5)), abs=1e-5)  # invariant 1 at pi_phi = pi_ref
    assert sum(losses[-5:]) / 5 < losses[0] - 0.05


def test_step_scores_and_auc(sft):
    tok, model, _, _ = sft
    rows = eval_set(2, 20, SPEC)
    zero = step_score_lists(model, model, tok, rows, SPEC, 1.0, "process")  # the RM is its own reference
    assert all(len(s) == SPEC.digits and all(x == 0 for x in s) for s in zero)
    ids, _, resp = encode(tok, rows, SPEC, eos=False)
    assert int(resp.sum(1)[0]) == 2 * SPEC.digits
    assert auc([0.1, 0.9, 0.8, 0.2], [0, 1, 1, 0]) == 1.0
    assert auc([1.0, 1.0], [0, 1]) == 0.5
    with pytest.raises(ValueError, match="needs both labels"):
        auc([0.1], [1])
