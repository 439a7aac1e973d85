"""Q-RM's maths as pure functions: the preference loss, its token rewards for RL, and the baselines' losses.

Spec: `shared/papers/qrm.md` ("Q-RM training loss", "Using Q-RM in RL", "Baselines as implemented").
Shapes: scores / rewards / log-probs are `[batch, seq]`; masks are bool `[batch, seq]` marking the response
tokens (prompt and padding are False). Every function rejects a shape mismatch and a row without any
response token with one `ValueError` line.

The loss, the masked means, DPO's loss, the aligned token log-probs and the chunk normalisation of token
rewards are `common.token_rm`'s (papers/lco trains its token reward models with them too); they are
re-exported here under their old names.

Paper vs official code (homzer/Q-RM @ 74fd338) vs here:
- Loss: identical in paper and code (`qrm_loss`).
- Token-reward normalisation: the paper standardises (mean 0, std 1); the code divides by the std only
  (`reward_sub_mean=False`, "empirically better"). Default here = code (`sub_mean=False`), flag = paper.
  std is numpy's population std (ddof 0), as in the code's RolloutBuffer.
- REINFORCE: the code overwrites the last response token's reward with the sequence mean
  ("re_scoring_eos_rewards"); `eos_overwrite=True` by default.
- DPO-RM: the code stores at token a_t the log-prob of a_{t+1}; `aligned_token_logprobs` is correct by
  default and reproduces the shift with `official_shift=True`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.rl import kl_abs
from common.token_rm import aligned_token_logprobs as aligned_token_logprobs
from common.token_rm import check_mask as _mask
from common.token_rm import dpo_loss as dpo_loss
from common.token_rm import dpo_token_rewards as dpo_token_rewards
from common.token_rm import last_index, masked_mean, normalize_token_rewards
from common.token_rm import last_token_scores as last_token_scores
from common.token_rm import masked_sum as masked_sum
from common.token_rm import qrm_loss as qrm_loss

ORM_MODES = ("broadcast", "last")


def orm_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry on last-token scores: mean of -log sigma(S_w - S_l) (code strategy "last-token")."""
    if s_chosen.dim() != 1 or s_chosen.shape != s_rejected.shape:
        raise ValueError(
            f"orm_loss: scores must be two [batch] tensors of one shape, got "
            f"{tuple(s_chosen.shape)} and {tuple(s_rejected.shape)}"
        )
    return F.softplus(s_rejected - s_chosen).mean()


def overwrite_last_with_mean(r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last response token's reward := mean of the row's response-token rewards (code "re_scoring_eos_rewards")."""
    mask = _mask(r, mask, "overwrite_last_with_mean")
    out = r.clone()
    out.scatter_(1, last_index(mask)[:, None], masked_mean(r, mask)[:, None])
    return out


def qrm_reinforce_rewards(
    z: torch.Tensor, mask: torch.Tensor, sub_mean: bool = False, eos_overwrite: bool = True
) -> torch.Tensor:
    """REINFORCE + Q-RM token rewards: Z / std_chunk(Z), then the EOS overwrite (spec, REINFORCE steps 1-2)."""
    r = normalize_token_rewards(z, mask, sub_mean)
    return overwrite_last_with_mean(r, mask) if eos_overwrite else r


def qrm_ppo_rewards(
    z: torch.Tensor,
    mask: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor,
    kl_coef: float = 0.01,
    sub_mean: bool = False,
) -> torch.Tensor:
    """PPO + Q-RM: r_t = Z_t / std_chunk(Z) - kl_coef * |log pi_old - log pi_ref| on response tokens (PPO step 1)."""
    mask = _mask(z, mask, "qrm_ppo_rewards")
    if logp_old.shape != z.shape:
        raise ValueError(f"qrm_ppo_rewards: logp shape {tuple(logp_old.shape)} != scores {tuple(z.shape)}")
    penalty = torch.where(mask, kl_abs(logp_old, logp_ref), torch.zeros_like(z))
    return normalize_token_rewards(z, mask, sub_mean) - kl_coef * penalty


def orm_token_rewards(s_last: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The ORM score as token rewards: "broadcast" on every response token (REINFORCE) or "last" only (PPO).

    Raw scores; the RL loop normalises them like any token reward (the code's buffer copies the last
    score to every token, divides by the std, then keeps only the last token for PPO).
    """
    if mode not in ORM_MODES:
        raise ValueError(f"orm_token_rewards: mode must be one of {', '.join(ORM_MODES)}, got {mode!r}")
    if s_last.dim() != 1 or s_last.shape[0] != mask.shape[0]:
        raise ValueError(f"orm_token_rewards: s_last shape {tuple(s_last.shape)} does not fit mask")
    mask = _mask(mask.float(), mask, "orm_token_rewards")
    if mode == "broadcast":
        return s_last[:, None] * mask.to(s_last.dtype)
    out = torch.zeros(mask.shape, dtype=s_last.dtype, device=s_last.device)
    return out.scatter(1, last_index(mask)[:, None], s_last[:, None])


# --- other baselines -------------------------------------------------------------------------------


def implicit_prm_loss(
    logp_policy: torch.Tensor,
    logp_ref: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0,
) -> torch.Tensor:
    """Implicit PRM (CE): BCE-with-logits of beta * (sum log pi - sum log pi_ref) against 0/1 labels.

    The code (ImplicitPRMLoss) never applies its beta, i.e. beta = 1.0 here; the implicit-PRM paper's
    scaled form is `beta=<value>`.
    """
    ratio = masked_sum(logp_policy, mask) - masked_sum(logp_ref, mask)
    if labels.shape != ratio.shape:
        raise ValueError(
            f"implicit_prm_loss: labels shape {tuple(labels.shape)} != batch {tuple(ratio.shape)}"
        )
    return F.binary_cross_entropy_with_logits(beta * ratio, labels.to(ratio.dtype))


def step_prm_loss(scores: torch.Tensor, step_end_mask: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
    """Step-level PRM: per row, mean of (tanh(score) - rating)^2 at step-end tokens; mean over rows.

    ratings: [batch, seq] in {-1, 0, 1}, read at the step-end positions (code PointwiseVerifierStrategyForStepPRM).
    """
    mask = _mask(scores, step_end_mask, "step_prm_loss", "step_end_mask")
    if ratings.shape != scores.shape:
        raise ValueError(
            f"step_prm_loss: ratings shape {tuple(ratings.shape)} != scores {tuple(scores.shape)}"
        )
    err = (torch.tanh(scores) - ratings.to(scores.dtype)) ** 2
    return masked_mean(err, mask).mean()


def pgtg_loss(
    z_chosen: torch.Tensor, mask_chosen: torch.Tensor, z_rejected: torch.Tensor, mask_rejected: torch.Tensor
) -> torch.Tensor:
    """PGTG: BT on c * mean_t sigmoid(Z_t), c = (N + M) / 2, the pair's average response length."""
    _mask(z_chosen, mask_chosen, "pgtg_loss", "mask_chosen")
    _mask(z_rejected, mask_rejected, "pgtg_loss", "mask_rejected")
    if z_chosen.shape[0] != z_rejected.shape[0]:
        raise ValueError("pgtg_loss: chosen and rejected batch sizes differ")
    c = (mask_chosen.sum(dim=1) + mask_rejected.sum(dim=1)).to(z_chosen.dtype) / 2
    rw = c * masked_mean(torch.sigmoid(z_chosen), mask_chosen)
    rl = c * masked_mean(torch.sigmoid(z_rejected), mask_rejected)
    return F.softplus(rl - rw).mean()
