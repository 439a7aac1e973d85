"""Token rewards of the toy RL arms: Q-RM, ORM, DPO-RM and the oracle, as `reward_fn(rollout) -> [batch, seq]`.

Each arm's rewards follow the official code (spec `shared/papers/qrm.md`, "Using Q-RM in RL" and
"Baselines as implemented"):
- Q-RM, REINFORCE: r_t = Z_t / std_chunk(Z), last token := the sequence mean (`qrm_reinforce_rewards`).
- Q-RM, PPO: r_t = Z_t / std_chunk(Z) - kl_coef |log pi_old - log pi_ref| (`qrm_ppo_rewards`).
- ORM: the last-token score S, std-normalised, on every token (REINFORCE) or the last one (PPO, minus KL).
- DPO-RM: r_t = beta (log pi_dpo(a_t|s_t) - log pi_ref(a_t|s_t)) (`DPORewardModel.token_rewards`, correct
  alignment; `official_shift` = the repo's one-token-early reading), then through the same buffer as Q-RM's
  Z (std-normalised, EOS overwrite in REINFORCE; our reading of the code: its RolloutBuffer normalises
  every verifier's scores alike, UNCONFIRMED for the DPO-RM runs).
- Oracle (ours, calibration only): sequence reward 1 if the final answer is right (GSM8K strict grader),
  else 0, on every response token, std-normalised like the ORM's score: "could any outcome reward help?"
Optional, ours (`baseline="group"`, default "none" = the code): with several samples per prompt, subtract
from every token reward the leave-one-out mean, over the other samples of the same prompt, of their
mean token reward (`loo_group_baseline`), a per-sequence constant, so token-level differences are kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from common.rl import Rollout
from common.scoring import gsm8k_is_correct
from papers.qrm.qrm import (
    kl_abs,
    last_token_scores,
    masked_mean,
    orm_token_rewards,
    qrm_ppo_rewards,
    qrm_reinforce_rewards,
)
from papers.qrm.reward_models import response_token_scores

BASELINES = ("none", "group")


def loo_group_baseline(rewards: torch.Tensor, mask: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """r_t - mean over the OTHER samples j of the same group of (mean_t r_j,t), on response tokens.

    A group of one sample keeps its rewards (no baseline can be estimated without itself).
    """
    if len(groups) != rewards.shape[0]:
        raise ValueError(f"loo_group_baseline: {len(groups)} group ids for {rewards.shape[0]} rows")
    seq = masked_mean(rewards, mask).double()
    g = torch.as_tensor(groups)
    base = torch.zeros_like(seq)
    for gid in g.unique():
        rows = (g == gid).nonzero().flatten()
        if len(rows) > 1:
            base[rows] = (seq[rows].sum() - seq[rows]) / (len(rows) - 1)
    out = rewards - base[:, None].to(rewards.dtype)
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def std_normalise(s: torch.Tensor, sub_mean: bool = False) -> torch.Tensor:
    """s / std(s) (population std), centred first when `sub_mean` (the paper's standardisation)."""
    s = s.double()
    if sub_mean:
        s = s - s.mean()
    return (s / s.std(unbiased=False).clamp_min(1e-8)).float()


def oracle_token_rewards(correct: torch.Tensor, mask: torch.Tensor, sub_mean: bool = False) -> torch.Tensor:
    """1[answer right], std-normalised over the chunk, on every response token (the ORM's REINFORCE form)."""
    if correct.dim() != 1 or correct.shape[0] != mask.shape[0]:
        raise ValueError(f"oracle_token_rewards: correct {tuple(correct.shape)} does not fit mask")
    return orm_token_rewards(std_normalise(correct.float(), sub_mean), mask, "broadcast")


def answer_lookup(tokenizer, problems) -> Callable[[list[int]], str]:
    """prompt token ids -> the problem's answer (for the oracle reward on a rollout's rows)."""
    table = {tuple(tokenizer(p.prompt())["input_ids"]): str(p.answer) for p in problems}

    def lookup(prompt_ids: list[int]) -> str:
        key = tuple(prompt_ids)
        if key not in table:
            raise KeyError("oracle reward: a rollout prompt is not one of the training problems")
        return table[key]

    return lookup


def make_reward_fn(
    algorithm: str,
    kind: str,
    reward_cfg,
    model,
    answers: Callable[[list[int]], str] | None = None,
    dpo_beta: float = 0.1,
    official_shift: bool = False,
) -> Callable[[Rollout], torch.Tensor]:
    """reward_fn for one arm. `algorithm`: reinforce | ppo; `kind`: qrm | orm | dpo | implicit | oracle;
    `model`: the TokenScorer (qrm / orm) or DPORewardModel (dpo, implicit PRM: the same beta * log-ratio
    token rewards); `reward_cfg`: ReinforceConfig / PPOConfig."""
    if kind not in ("qrm", "orm", "dpo", "implicit", "oracle"):
        raise ValueError(f"make_reward_fn: unknown reward kind {kind!r}")
    baseline = getattr(reward_cfg, "baseline", "none")
    if baseline not in BASELINES:
        raise ValueError(f"reward baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")

    def token_scores(ro: Rollout) -> torch.Tensor:
        if kind in ("dpo", "implicit"):
            return model.token_rewards(
                ro.input_ids, ro.attention_mask, ro.response_mask, dpo_beta, official_shift
            )
        return response_token_scores(model, ro.input_ids, ro.attention_mask, ro.response_mask)

    def reward_fn(ro: Rollout) -> torch.Tensor:
        mask = ro.response_mask
        sub_mean = reward_cfg.sub_mean
        if kind == "oracle":
            ok = [gsm8k_is_correct(t, answers(p)) for t, p in zip(ro.texts, ro.prompt_ids)]
            r = oracle_token_rewards(torch.tensor(ok, dtype=torch.float32), mask, sub_mean)
        elif kind in ("qrm", "dpo", "implicit") and algorithm == "reinforce":
            r = qrm_reinforce_rewards(token_scores(ro), mask, sub_mean, reward_cfg.eos_overwrite)
        elif kind in ("qrm", "dpo", "implicit"):
            r = qrm_ppo_rewards(
                token_scores(ro), mask, ro.logp_old, ro.logp_ref, reward_cfg.kl_coef, sub_mean
            )
        else:
            s = std_normalise(last_token_scores(token_scores(ro), mask), sub_mean)
            if algorithm == "reinforce":
                r = orm_token_rewards(s, mask, "broadcast")
            else:
                kl = reward_cfg.kl_coef * kl_abs(ro.logp_old, ro.logp_ref) * mask
                r = orm_token_rewards(s, mask, "last") - kl
        return loo_group_baseline(r, mask, ro.prompt_index) if baseline == "group" else r

    return reward_fn
