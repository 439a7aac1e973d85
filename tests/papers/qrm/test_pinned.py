"""Pinned numbers (torchtune style): the first losses of seeded tiny toy stages, pinned to their values at
the refactor (equal on the pre-refactor code, 2b51fd1). A change here means the maths or the seeding moved."""

from dataclasses import replace

import pytest

from common.models import build_tiny_causal_lm, load_tokenizer
from common.synthetic.tokenizer import world_tokenizer
from papers.qrm.config import get_config
from papers.qrm.data import toy_task
from papers.qrm.stages import Sampler, rl_stage, rm_stage

QRM_LOSSES = [2.125354290008545, 2.1313514709472656, 2.1248669624328613, 2.132739543914795]
ORM_LOSSES = [0.7025782465934753, 0.7026629447937012, 0.6960271000862122, 0.7024484872817993]
REINFORCE_CHUNK = [0.01949121057987213, 0.004389211069792509]  # [mean loss, mean token reward]
PPO_CHUNK = [-0.05369064584374428, 0.05164302885532379]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pinned")
    tok = world_tokenizer()
    build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok).save_pretrained(
        root / "lm"
    )
    tok.save_pretrained(root / "lm")
    toy = get_config("toy")
    # the toy preset as pinned (before the RL testbed's regime, issue 15): plain pairs, the old lrs and
    # rollouts, so that the numbers pin the maths and the seeding, not the preset's choices
    old_rl = {"lr": 3e-5, "warm_lr_factor": 1.0, "warm_chunks": 0, "max_tokens": 8, "chunks": 1}
    cfg = replace(
        toy,
        policy=str(root / "lm"),
        rm=replace(toy.rm, backbone=str(root / "lm"), max_steps=4, batch_size=4),
        reinforce=replace(
            toy.reinforce, chunk_size=4, minibatch_size=8, samples_per_prompt=4, temperature=0.7, **old_rl
        ),
        ppo=replace(toy.ppo, chunk_size=8, minibatch_size=4, **old_rl),
        eval=replace(toy.eval, max_tokens=8, sampled_n=0, eval_every=2),
        data=replace(toy.data, train_problems=40, val_problems=4, test_problems=4, pair_habit=None),
    )
    task = toy_task(cfg)
    return cfg, task, root


def test_first_rm_losses_are_pinned(setup):
    cfg, task, root = setup
    got = {
        k: rm_stage(k, cfg, task, task.train_pairs, task.key, root / "runs", False)["first_losses"]
        for k in ("qrm", "orm")
    }
    assert got["qrm"] == pytest.approx(QRM_LOSSES, rel=1e-4)
    assert got["orm"] == pytest.approx(ORM_LOSSES, rel=1e-4)


def test_first_rl_chunk_losses_are_pinned(setup):
    """REINFORCE + Q-RM and PPO + Q-RM, one chunk each, on the Q-RM trained above: the chunk's mean loss and
    mean token reward."""
    cfg, task, root = setup
    rm = rm_stage("qrm", cfg, task, task.train_pairs, task.key, root / "runs", False)["dir"]
    sampler = Sampler(cfg, load_tokenizer(cfg.policy), root)
    got = {}
    for method in ("REINFORCE+Q-RM", "PPO+Q-RM"):
        row = rl_stage(method, 0, cfg, task, rm, rm, sampler, root / "runs", False)["curve"][-1]
        got[method] = [row["loss"], row["token_reward"]]
    assert got["REINFORCE+Q-RM"] == pytest.approx(REINFORCE_CHUNK, rel=1e-4)
    assert got["PPO+Q-RM"] == pytest.approx(PPO_CHUNK, rel=1e-4)
