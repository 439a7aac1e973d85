"""LCO's dense advantage sources: the DPO-RM / Q-RM top-k advantages against a hand computation, the
dense LCO-KLD loss on its support, and a miniature dense run (pairs, both RMs, both methods, one chunk)
writing results/toy-dense/ whose rows the dense claims read."""

import csv
import json
import math
from dataclasses import replace

import pytest
import torch

from common.claims import evaluate_claims
from common.rl import Rollout
from papers.lco import dense, pipeline
from papers.lco.arms import DenseLCOPolicyLoss, DenseSource
from papers.lco.config import DENSE_METHODS, DENSE_SOURCES, get_config
from papers.lco.lco import topk_advantages

POLICY_LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]  # the policy's top-5: tokens 0-4
LOG_RATIO = [0.3, -0.2, 0.1, 0.5, -0.4, 9.0, 9.0]  # log pi_dpo - log pi_ref; 5, 6 are off the support


def test_dpo_rm_topk_advantages_by_hand():
    adv, support = topk_advantages(torch.tensor([LOG_RATIO]), torch.tensor([POLICY_LOGITS]), k=5)
    # picked 0.3, -0.2, 0.1, 0.5, -0.4: mean 0.06, squared deviations sum 0.532, population std sqrt(0.1064)
    std = math.sqrt(0.532 / 5)
    expected = [0.3 / std, -0.2 / std, 0.1 / std, 0.5 / std, -0.4 / std, 0.0, 0.0]
    assert adv[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert support[0].tolist() == [True] * 5 + [False] * 2


def test_qrm_topk_advantages_use_the_reward_models_own_top_k():
    log_phi = torch.log_softmax(torch.tensor([[0.0, 3.0, -1.0, 2.0, 1.0, 2.5, -4.0]]), -1)
    adv, support = topk_advantages(log_phi, log_phi, k=5)
    assert support[0].tolist() == [True, True, False, True, True, True, False]
    picked = log_phi[0, support[0]]
    assert adv[0, support[0]].tolist() == pytest.approx((picked / picked.std(unbiased=False)).tolist())


class _FixedSource(DenseSource):
    """A DPO-RM source whose vocabulary scores are given (no model)."""

    def __init__(self, scores):
        super().__init__("dpo", torch.nn.Identity())
        self.scores = scores

    def vocab_scores(self, ro):
        return self.scores


class _FixedPolicy(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.logits.expand(input_ids.shape[0], -1, -1)})


def test_dense_kld_target_is_pi_old_tilted_by_the_dpo_advantage_on_the_policy_top5():
    old = torch.tensor(POLICY_LOGITS).reshape(1, 1, 7).repeat(1, 2, 1)  # [1, S=2, V=7]
    ro = Rollout(
        prompt_ids=[[0]],
        input_ids=torch.tensor([[0, 3]]),
        attention_mask=torch.ones(1, 2, dtype=torch.long),
        response_mask=torch.tensor([[False, True]]),
        logp_old=torch.zeros(1, 2),
        texts=["x"],
        prompt_index=[0],
    )
    policy = _FixedPolicy(old.clone())
    loss = DenseLCOPolicyLoss(_FixedSource(torch.tensor([[LOG_RATIO]])), beta=2.0, k=5)
    loss.prepare(policy, ro)
    value = loss(policy, ro, torch.tensor([0]), torch.zeros(1, 2))
    value.backward()
    # the hand target: pi_old over the top-5 times exp(A / beta), renormalised; grad = pi_theta - p*
    std = math.sqrt(0.532 / 5)
    tilt = [z + a / std / 2.0 for z, a in zip(POLICY_LOGITS[:5], LOG_RATIO[:5])]
    target = torch.softmax(torch.tensor(tilt), -1).tolist() + [0.0, 0.0]
    grad = policy.logits.grad[0, 0]
    assert (torch.softmax(old[0, 0], -1) - grad).tolist() == pytest.approx(target, abs=1e-6)


@pytest.fixture
def mini(mini_root, monkeypatch):
    tmp_path = mini_root
    task_of = dense.task_of  # an untrained policy is never right: a verifier by length gives both kinds

    def pseudo_task(rl, data_dir):
        task = task_of(rl, data_dir)
        return replace(task, is_correct=lambda text, answer: len(text) % 2 == 0)

    monkeypatch.setattr(dense, "task_of", pseudo_task)
    toy = get_config("toy")
    rl = replace(
        toy.rl,
        policy=str(tmp_path / "policy"),
        chunks=1,
        prompts_per_chunk=2,
        samples_per_prompt=2,
        max_tokens=6,
        val_problems=4,
        test_problems=4,
        warm_chunks=0,
        eval_every=1,
        sampled_n=1,
        enabled=False,
    )
    d = replace(toy.dense, pair_prompts=20, pair_samples=4, rm_steps=2, rm_batch_size=4, seeds=(0,))
    cfg = replace(toy, stability=replace(toy.stability, enabled=False), rl=rl, dense=d, workers=1)
    return cfg, tmp_path


@pytest.mark.slow
def test_miniature_dense_run_writes_its_own_results_the_dense_claims_read(mini):
    cfg, root = mini
    out = pipeline.reproduce(cfg)
    assert out == root / "papers" / "lco" / "results" / "toy-dense"
    assert not (root / "papers" / "lco" / "results" / "toy").exists()  # the other parts are untouched
    with open(out / "reproduced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows if r["benchmark"] == "toy-arith"}
    assert methods == {f"{m} ({s})" for m in DENSE_METHODS for s in DENSE_SOURCES} | {"SFT"}
    assert {r["method"] for r in rows if r["benchmark"] == "toy-arith pairs"} == set(DENSE_SOURCES)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["part"] == "dense" and set(prov["reward_models"]) == set(DENSE_SOURCES)
    curves = json.loads((out / "rl_curves.json").read_text())["runs"]
    assert all(r["curve"][-1]["grad_norm"] > 0 for r in curves)  # every arm trained the policy
    claims = evaluate_claims("lco", "toy-dense", root)
    assert claims and all(c.stats is not None and c.stats.n == 1 for c in claims)  # one seed each
    assert all(c.verdict == "inconclusive" for c in claims)
