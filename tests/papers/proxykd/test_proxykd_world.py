"""The toy chain: text-only interface, BOS never emitted, exact KL 0 for a model that is the teacher."""

import pytest
import torch

from papers.proxykd.world import BOS, GRULM, LMOutput, MarkovChain, WordTokenizer


def test_texts_round_trip_and_bos_is_never_emitted():
    chain = MarkovChain(vocab=10, length=6, seed=3)
    texts = chain.sample_texts(50, seed=1)
    tok = WordTokenizer(10)
    ids = torch.tensor([tok.encode(t) for t in texts])
    assert ids.shape == (50, 7) and (ids[:, 0] == BOS).all() and (ids[:, 1:] != BOS).all()
    assert [tok.decode(row.tolist()) for row in ids] == texts
    assert chain.sample_texts(50, seed=1) == texts  # same seed, same data
    with pytest.raises(ValueError, match="not a token of the toy chain: 'x9'"):
        tok.encode("t1 x9")


class _Oracle(torch.nn.Module):
    def __init__(self, chain):
        super().__init__()
        self.chain = chain

    def forward(self, input_ids, **_):
        return LMOutput(self.chain.next_logits(input_ids).clamp(min=-1e4))


def test_exact_kl_is_zero_for_the_teacher_and_positive_for_a_fresh_gru():
    chain = MarkovChain(vocab=10, length=6, seed=4)
    test = chain.sample_ids(40, seed=2)
    assert chain.kl_to(_Oracle(chain), test)["kl"] == pytest.approx(0.0, abs=1e-6)
    assert chain.kl_to(_Oracle(chain), test)["top1_agreement"] == 1.0
    assert chain.kl_to(GRULM(10, seed=0), test)["kl"] > 0.1


def test_sampling_follows_the_chain():
    chain = MarkovChain(vocab=5, length=2, seed=5)
    ids = chain.sample_ids(20_000, seed=0)
    first = torch.bincount(ids[:, 1], minlength=5).double() / len(ids)
    want = torch.softmax(chain.logits[BOS, BOS], -1)
    assert torch.allclose(first, want, atol=0.015)
