"""Token rewards of the RL arms, as `reward_fn(rollout) -> [batch, seq]`: Q-RM, ORM, DPO-RM, implicit PRM, oracle.

Each arm's rewards follow the official code (spec `shared/papers/qrm.md`, "Using Q-RM in RL" and
"Baselines as implemented"):
- Q-RM, REINFORCE: r_t = Z_t / std_chunk(Z), last token := the sequence mean (`qrm_reinforce_rewards`).
- Q-RM, PPO: r_t = Z_t / std_chunk(Z) - kl_coef |log pi_old - log pi_ref| (`qrm_ppo_rewards`).
- ORM: the last-token score S copied to every response token and divided by the std over all response
  tokens of the chunk, as the code's buffer does (`outcome_token_rewards`); PPO keeps the last token only
  (minus KL).
- DPO-RM / implicit PRM: r_t = beta (log pi_dpo(a_t|s_t) - log pi_ref(a_t|s_t)) (`DPORewardModel.token_rewards`,
  correct alignment; `official_shift` = the repo's one-token-early reading), then through the same buffer as
  Q-RM's Z (our reading of the code: its RolloutBuffer normalises every verifier's scores alike, UNCONFIRMED
  for the DPO-RM runs).
- Oracle (ours, calibration only): 1 if the final answer is right, else 0, on every response token,
  normalised like the ORM's score: "could any outcome reward help?"
Before any normalisation or baseline, `reward_fn` records on the rollout (`Rollout.metrics`, logged by the
RL loop each chunk) `reward_raw` (the mean raw sequence score: the oracle's 1/0, the ORM's S, the mean token
score of Q-RM / DPO-RM) and `correct` (the fraction of right answers, whenever the problems are given).
Optional, ours (`baseline="group"`; "none" = the code): the leave-one-out group baseline over the samples of
one prompt (`common.rl.loo_group_baseline`). The RM runs `forward_batch_size` rows at a time (`RowBatched`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from common.rl import Rollout, kl_abs, loo_group_baseline
from papers.qrm.config import METHODS, PPOConfig, QRMConfig, ReinforceConfig
from papers.qrm.data import Problems
from papers.qrm.qrm import (
    last_token_scores,
    masked_mean,
    normalize_token_rewards,
    orm_token_rewards,
    qrm_ppo_rewards,
    qrm_reinforce_rewards,
)
from papers.qrm.reward_models import response_token_scores

KINDS = ("qrm", "orm", "dpo", "implicit", "oracle")


class RowBatched(torch.nn.Module):
    """A reward model or critic run `batch_size` rows at a time: `forward(input_ids, attention_mask)`
    (a TokenScorer's scores) and `token_rewards(...)` (a DPORewardModel's), both [batch, seq]."""

    def __init__(self, model: torch.nn.Module, batch_size: int):
        super().__init__()
        self.model, self.batch_size = model, batch_size

    def _rows(self, fn, *tensors) -> torch.Tensor:
        b = self.batch_size
        return torch.cat([fn(*(t[s : s + b] for t in tensors)) for s in range(0, len(tensors[0]), b)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._rows(self.model, input_ids, attention_mask)

    def token_rewards(self, input_ids, attention_mask, response_mask, beta: float, official_shift: bool):
        fn = lambda i, a, m: self.model.token_rewards(i, a, m, beta, official_shift)  # noqa: E731
        return self._rows(fn, input_ids, attention_mask, response_mask)


def outcome_token_rewards(
    s: torch.Tensor, mask: torch.Tensor, mode: str = "broadcast", sub_mean: bool = False
) -> torch.Tensor:
    """A sequence score (the ORM's last-token score, the oracle's 1/0) as token rewards, as the code's
    buffer does it: copied to every response token, divided by the std over all response tokens of the
    chunk (`normalize_token_rewards`; centred first with `sub_mean`), then kept on the last token only
    for PPO (`mode="last"`). Long responses weigh more in that std than short ones, as in the code. A chunk
    whose response tokens all score alike carries no signal: its rewards are 0."""
    if s.dim() != 1 or s.shape[0] != mask.shape[0]:
        raise ValueError(
            f"outcome_token_rewards: scores {tuple(s.shape)} do not fit mask {tuple(mask.shape)}"
        )
    r = orm_token_rewards(s.float(), mask, "broadcast")
    values = r[mask.bool()]
    if values.numel() < 2 or not values.std(unbiased=False) > 0:
        return torch.zeros_like(r)
    r = normalize_token_rewards(r, mask, sub_mean)
    return r if mode == "broadcast" else orm_token_rewards(last_token_scores(r, mask), mask, "last")


def oracle_token_rewards(correct: torch.Tensor, mask: torch.Tensor, sub_mean: bool = False) -> torch.Tensor:
    """1[answer right] on every response token, normalised like the ORM's score (`outcome_token_rewards`)."""
    if correct.dim() != 1 or correct.shape[0] != mask.shape[0]:
        raise ValueError(f"oracle_token_rewards: correct {tuple(correct.shape)} does not fit mask")
    return outcome_token_rewards(correct.float(), mask, "broadcast", sub_mean)


def problem_lookup(tokenizer, problems: Problems) -> Callable[[list[int]], int]:
    """prompt token ids -> the index of its problem (to grade a rollout's rows for the oracle reward)."""
    table = {tuple(tokenizer(p)["input_ids"]): i for i, p in enumerate(problems.prompts)}

    def lookup(prompt_ids: list[int]) -> int:
        key = tuple(prompt_ids)
        if key not in table:
            raise KeyError("oracle reward: a rollout prompt is not one of the training problems")
        return table[key]

    return lookup


def make_reward_fn(
    method: str,
    cfg: QRMConfig,
    model: torch.nn.Module | None,
    tokenizer=None,
    train: Problems | None = None,
) -> Callable[[Rollout], torch.Tensor]:
    """reward_fn of one arm of `METHODS`. `model`: the TokenScorer (qrm / orm) or DPORewardModel (dpo,
    implicit); None for the oracle, which grades each row against its training problem (`train`)."""
    if method not in METHODS:
        raise ValueError(f"make_reward_fn: unknown method {method!r}; valid: {', '.join(METHODS)}")
    algorithm, kind = METHODS[method]
    reward_cfg: ReinforceConfig | PPOConfig = cfg.reinforce if algorithm == "reinforce" else cfg.ppo
    baseline = getattr(reward_cfg, "baseline", "none")
    if baseline not in ("none", "group"):
        raise ValueError(f"reward baseline must be one of none, group, got {baseline!r}")
    if model is not None and cfg.forward_batch_size:
        model = RowBatched(model, cfg.forward_batch_size)
    lookup = problem_lookup(tokenizer, train) if train is not None and tokenizer is not None else None
    if kind == "oracle" and lookup is None:
        raise ValueError("make_reward_fn: the oracle reward needs the tokenizer and the training problems")

    def token_scores(ro: Rollout) -> torch.Tensor:
        if kind in ("dpo", "implicit"):
            beta, shift = cfg.rm.dpo_beta, cfg.rm.dpo_official_shift
            return model.token_rewards(ro.input_ids, ro.attention_mask, ro.response_mask, beta, shift)
        return response_token_scores(model, ro.input_ids, ro.attention_mask, ro.response_mask)

    def reward_fn(ro: Rollout) -> torch.Tensor:
        mask, sub_mean = ro.response_mask, reward_cfg.sub_mean
        ok = None
        if lookup is not None:  # the answers' correctness, logged for every arm (the oracle's reward)
            ok = torch.tensor([train.grade(lookup(p), t) for t, p in zip(ro.texts, ro.prompt_ids)]).float()
            ro.metrics["correct"] = float(ok.mean())
        if kind == "oracle":
            ro.metrics["reward_raw"] = float(ok.mean())
            r = oracle_token_rewards(ok, mask, sub_mean)
        elif kind != "orm":
            z = token_scores(ro)
            # the trajectory reward (1/T) sum_t r_t of the raw scores (spec notation), before normalisation
            ro.metrics["reward_raw"] = float(masked_mean(z.float(), mask).mean())
            if algorithm == "reinforce":
                r = qrm_reinforce_rewards(z, mask, sub_mean, reward_cfg.eos_overwrite)
            else:
                r = qrm_ppo_rewards(z, mask, ro.logp_old, ro.logp_ref, reward_cfg.kl_coef, sub_mean)
        else:
            s = last_token_scores(token_scores(ro), mask)
            ro.metrics["reward_raw"] = float(s.float().mean())
            if algorithm == "reinforce":
                r = outcome_token_rewards(s, mask, "broadcast", sub_mean)
            else:
                kl = reward_cfg.kl_coef * kl_abs(ro.logp_old, ro.logp_ref) * mask
                r = outcome_token_rewards(s, mask, "last", sub_mean) - kl
        return loo_group_baseline(r, mask, ro.prompt_index) if baseline == "group" else r

    return reward_fn
