"""Q-RM's maths as pure functions: the preference loss, its token rewards for RL, and the baselines' losses.

Spec: `shared/papers/qrm.md` ("Q-RM training loss", "Using Q-RM in RL", "Baselines as implemented").
Shapes: scores / rewards / log-probs are `[batch, seq]`; masks are bool `[batch, seq]` marking the response
tokens (prompt and padding are False). Every function rejects a shape mismatch and a row without any
response token with one `ValueError` line.

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

ORM_MODES = ("broadcast", "last")


def _mask(z: torch.Tensor, mask: torch.Tensor, where: str, name: str = "mask") -> torch.Tensor:
    """The mask as bool after checking it against z: same 2-D shape, >= 1 response token per row."""
    if z.dim() != 2:
        raise ValueError(f"{where}: scores must be [batch, seq], got shape {tuple(z.shape)}")
    if mask.shape != z.shape:
        raise ValueError(f"{where}: {name} shape {tuple(mask.shape)} != scores shape {tuple(z.shape)}")
    mask = mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{where}: {name} row {int(empty[0])} has no response token")
    return mask


def masked_mean(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch]: mean of z over each row's response tokens (1/N sum_t Z_t of the spec's training model)."""
    mask = _mask(z, mask, "masked_mean")
    return torch.where(mask, z, torch.zeros_like(z)).sum(dim=1) / mask.sum(dim=1)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """[batch]: position of each row's last response token."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def last_token_scores(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch]: the score at each row's last response token (the ORM's sequence score S)."""
    mask = _mask(z, mask, "last_token_scores")
    return z.gather(1, last_index(mask)[:, None]).squeeze(1)


def qrm_loss(
    z_chosen: torch.Tensor,
    mask_chosen: torch.Tensor,
    z_rejected: torch.Tensor,
    mask_rejected: torch.Tensor,
    beta: float = 0.2,
    gamma: float = 2.0,
) -> torch.Tensor:
    """L_QRM = mean over pairs of -log sigma(beta * (mean_w Z - mean_l Z) - gamma) (spec, "Q-RM training loss").

    = softplus(gamma - beta * Delta), Delta = mean over the chosen response tokens of Z minus the same
    over the rejected ones. beta 0.2 and gamma 2.0 are the paper's (scripts/train-q-rm.sh).
    """
    if z_chosen.shape[0] != z_rejected.shape[0]:
        raise ValueError(f"qrm_loss: {z_chosen.shape[0]} chosen rows but {z_rejected.shape[0]} rejected")
    _mask(z_chosen, mask_chosen, "qrm_loss", "mask_chosen")
    _mask(z_rejected, mask_rejected, "qrm_loss", "mask_rejected")
    delta = masked_mean(z_chosen, mask_chosen) - masked_mean(z_rejected, mask_rejected)
    return F.softplus(gamma - beta * delta).mean()


def orm_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry on last-token scores: mean of -log sigma(S_w - S_l) (code strategy "last-token")."""
    if s_chosen.dim() != 1 or s_chosen.shape != s_rejected.shape:
        raise ValueError(
            f"orm_loss: scores must be two [batch] tensors of one shape, got "
            f"{tuple(s_chosen.shape)} and {tuple(s_rejected.shape)}"
        )
    return F.softplus(s_rejected - s_chosen).mean()


def normalize_token_rewards(z: torch.Tensor, mask: torch.Tensor, sub_mean: bool = False) -> torch.Tensor:
    """r = Z / std(Z over every response token of the chunk); 0 at unmasked positions (invariant 7).

    Code default (RolloutBuffer, reward_sub_mean=False); `sub_mean=True` is the paper's standardisation
    (Z - mean) / std. std is the population std (np.std).
    """
    mask = _mask(z, mask, "normalize_token_rewards")
    values = z[mask]
    std = values.std(unbiased=False) if values.numel() > 1 else values.new_zeros(())
    if not std > 0:
        raise ValueError("normalize_token_rewards: the response-token scores have zero spread (std 0)")
    centred = values - values.mean() if sub_mean else values
    out = torch.zeros_like(z)
    out[mask] = centred / std
    return out


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


# --- DPO-RM ----------------------------------------------------------------------------------------


def aligned_token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, official_shift: bool = False
) -> torch.Tensor:
    """[batch, seq]: out[:, t] = log pi(a_t | s_t) = log_softmax(logits[:, t-1])[a_t]; out[:, 0] = 0.

    `official_shift=True` reproduces the repo's VerifierForDPO: out[:, t] = log-prob of a_{t+1} (read
    from logits[:, t]), the last position gets the log-prob of token id 0 (its pad) — one token early.
    """
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"aligned_token_logprobs: logits {tuple(logits.shape)} do not fit input_ids {tuple(input_ids.shape)}"
        )
    low_precision = logits.dtype in (torch.float16, torch.bfloat16)
    logp = torch.log_softmax(logits.float() if low_precision else logits, dim=-1)
    nxt = logp[:, :-1].gather(2, input_ids[:, 1:, None]).squeeze(2)  # log pi(a_{t+1} | s_{t+1})
    if official_shift:
        last = logp[:, -1, 0]
        return torch.cat([nxt, last[:, None]], dim=1)
    return torch.cat([torch.zeros_like(nxt[:, :1]), nxt], dim=1)


def dpo_token_rewards(
    logp_dpo: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """DPO-RM token reward r_t = beta * (log pi_dpo(a_t|s_t) - log pi_ref(a_t|s_t)) on response tokens."""
    mask = _mask(logp_dpo, mask, "dpo_token_rewards")
    if logp_ref.shape != logp_dpo.shape:
        raise ValueError("dpo_token_rewards: logp_dpo and logp_ref shapes differ")
    return torch.where(mask, beta * (logp_dpo - logp_ref), torch.zeros_like(logp_dpo))


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO on SUMMED response log-probs ([batch] each): mean -log sigma(beta * (ratio_w - ratio_l))."""
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return F.softplus(-beta * margin).mean()


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch]: sum of x over each row's response tokens (DPO's sequence log-prob)."""
    mask = _mask(x, mask, "masked_sum")
    return torch.where(mask, x, torch.zeros_like(x)).sum(dim=1)


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
