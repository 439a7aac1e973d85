"""run_rl's additive seams: a `policy_loss` in place of the algorithm's actor loss, and `log_grad_norm`."""

import math

import torch

from common.models import build_tiny_causal_lm
from common.rl import reinforce_loss, sequence_logprobs
from common.rl_loop import RLConfig, run_rl
from tests.common.conftest import PROMPTS, target_reward


class ReinforceAsPolicyLoss:
    """REINFORCE written as a PolicyLoss: must train exactly as algorithm="reinforce"."""

    def __init__(self):
        self.prepared = []

    def prepare(self, policy, ro):
        assert not torch.is_grad_enabled() and ro.logp_old.abs().sum() > 0
        self.prepared.append(len(ro))

    def __call__(self, policy, ro, idx, advantages):
        logp = sequence_logprobs(policy, ro.input_ids[idx], ro.attention_mask[idx])
        return reinforce_loss(logp, advantages, ro.response_mask[idx])


def _run(tokenizer, out, **kwargs):
    policy = build_tiny_causal_lm("tiny-student", vocab_size=len(tokenizer), seed=0, tokenizer=tokenizer)
    log_grad_norm = kwargs.pop("log_grad_norm", False)
    cfg = RLConfig(
        output_dir=str(out),
        chunks=3,
        prompts_per_chunk=4,
        samples_per_prompt=2,
        minibatch_size=4,
        lr=1e-2,
        max_tokens=4,
        progress=False,
        report_to="none",
        log_grad_norm=log_grad_norm,
    )
    curve = run_rl(
        policy, tokenizer, PROMPTS, target_reward(tokenizer), cfg, evaluate=lambda m: {"x": 0.0}, **kwargs
    )
    return policy, curve


def test_policy_loss_replaces_the_actor_loss_and_is_prepared_once_per_chunk(tokenizer, tmp_path):
    plain, plain_curve = _run(tokenizer, tmp_path / "plain")
    loss = ReinforceAsPolicyLoss()
    seam, seam_curve = _run(tokenizer, tmp_path / "seam", policy_loss=loss)
    assert loss.prepared == [8, 8, 8]
    for a, b in zip(plain.parameters(), seam.parameters()):
        assert torch.equal(a, b)
    assert [r["loss"] for r in plain_curve[1:]] == [r["loss"] for r in seam_curve[1:]]
    assert all("grad_norm" not in r for r in plain_curve)  # off by default: today's curve


def test_log_grad_norm_logs_the_mean_pre_clip_norm(tokenizer, tmp_path):
    _, curve = _run(tokenizer, tmp_path / "norm", log_grad_norm=True)
    norms = [r["grad_norm"] for r in curve[1:]]
    assert len(norms) == 3 and all(math.isfinite(n) and n > 0 for n in norms)
