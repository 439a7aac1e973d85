"""The spec's calibrated GRU check: task generator, pair data, and a reduced run (1 seed, 30 iterations)."""

import torch

from papers.qrm import gru_check
from papers.qrm.gru_check import make_pairs, plot_gru_check, run_gru_check, target_tokens


def test_task_generator_matches_the_spec_formula():
    y = target_tokens()
    assert y.shape == (16, 5)
    for c in range(16):
        for t in range(5):
            assert int(y[c, t]) == (3 * c + 5 * t + (c * t) % 3) % 8


def test_pairs_are_seeded_untied_and_ordered_by_quality():
    train, heldout = make_pairs()
    again, _ = make_pairs()
    assert all(torch.equal(train[k], again[k]) for k in train)  # Generator seeded 0: same data
    assert 6000 < len(train["prompt"]) < 7500 and len(heldout["prompt"]) == 1000
    y = target_tokens()
    for pairs in (train, heldout):
        right_w = (pairs["chosen"] == y[pairs["prompt"]]).sum(1)
        right_l = (pairs["rejected"] == y[pairs["prompt"]]).sum(1)
        assert (right_w > right_l).all()


def test_reduced_run_rms_clear_085_and_curves_have_the_documented_shape(tmp_path):
    result = run_gru_check(seeds=(0,), iterations=30, progress=False)
    assert result["rm_accuracy"]["qrm"] >= 0.85 and result["rm_accuracy"]["orm"] >= 0.85
    assert result["criteria"]["rm_accuracy"]["passed"]
    assert result["iterations"] == [0, 10, 20, 30]
    assert set(result["curves"]) == set(gru_check.ARMS)
    for per_seed in result["curves"].values():
        assert list(per_seed) == [0] and len(per_seed[0]) == 4
        assert all(0.0 <= x <= 1.0 for x in per_seed[0])
    assert set(result["criteria"]) == {"rm_accuracy", "early_gain", "final_not_worse"}
    assert result["criteria"]["early_gain"]["iterations"] == [30]
    # REINFORCE moved the policy away from its initial greedy accuracy in every arm
    assert all(per_seed[0][-1] != per_seed[0][0] for per_seed in result["curves"].values())
    assert plot_gru_check(result, tmp_path / "curves.png").stat().st_size > 1000
