"""DistRL's maths (Eqs. 10-14; the official step3_distrl/dl_core_algos.py) as pure torch functions, and
DistRL as a `common.rl_loop.PolicyLoss` (spec `shared/papers/ipvrm.md`). The reward model's maths (IPVRM
and its baselines, prefix values, TD rewards, the online update) is in `ipvrm.py`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from common.rl import Rollout, gae
from papers.ipvrm.ipvrm import (
    BETA_IPVRM,
    _check_groups,
    _check_positive,
    _same_shape,
    _shape,
    check_labels,
    check_response_mask,
)

# --- DistRL (Eqs. 10-14; step3_distrl/dl_core_algos.py) ----------------------------------------------

P_MIN = 0.1
CANDIDATE_TOP_K = 5  # the code's candidate_top_k for DistRL (1 = GRPO w/ IPVRM)
CLIP_LOW, CLIP_HIGH = 0.20, 0.28  # DAPO (paper); the code's candidate branch uses a symmetric 0.2
DUAL_CLIP = 3.0
ALPHA = 0.1  # L = L_tok + alpha L_dist
GAE_COEF_CODE = 0.05  # the code's reward_gae_coef; the paper's Eq. 13 has 1
STD_FLOOR = 1e-6  # the code clamps sigma_V and the group std at 1e-6
SAMPLED_VARIANTS = ("code", "paper")
CANDIDATE_AGGREGATIONS = ("paper", "code")


def grpo_outcome_advantages(labels: torch.Tensor, groups, eps: float = STD_FLOOR) -> torch.Tensor:
    """[B] float64 (r - mu(x)) / max(s(x), eps), s the population std of the group's outcomes (Eq. 13)."""
    r = check_labels("grpo_outcome_advantages", labels)
    groups = _check_groups("grpo_outcome_advantages", groups, r.shape[0])
    out = torch.zeros_like(r)
    for gid in groups.unique():
        rows = groups == gid
        x = r[rows]
        out[rows] = (x - x.mean()) / x.std(unbiased=False).clamp_min(eps)
    return out


def final_position_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool, True at each row's last response token."""
    mask = check_response_mask("final_position_mask", response_mask, response_mask.float())
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1)
    return torch.zeros_like(mask).scatter(1, last[:, None], True)


def prefix_value_std(sampled_td: torch.Tensor, response_mask: torch.Tensor, eps: float = STD_FLOOR):
    """sigma_V: the population std of the prefix values V_t = cumsum of the sampled TD over every response
    position of the batch (App. C, Eqs. 23-25), clamped at `eps`; no gradient."""
    mask = check_response_mask("prefix_value_std", response_mask, sampled_td)
    values = torch.where(mask, sampled_td.detach(), torch.zeros_like(sampled_td)).cumsum(dim=1)
    return values[mask].std(unbiased=False).clamp_min(eps)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """VeRL's masked_whiten: (x - mean) / sqrt(var + 1e-8) over the masked entries (Bessel-corrected
    variance), 0 outside the mask."""
    mask = mask.bool()
    x = values[mask]
    out = (values - x.mean()) * torch.rsqrt(x.var(unbiased=True) + 1e-8)
    return torch.where(mask, out, torch.zeros_like(out))


def discounted_suffix_sums(delta: torch.Tensor, response_mask: torch.Tensor, gamma_lambda: float = 1.0):
    """A^GAE_t = sum_{i>=t} (gamma lambda)^(i-t) delta_i over each row's response tokens (Eq. 13, zero
    intermediate reward and the TD as delta): `common.rl.gae` with V = 0, gamma 1, lambda = gamma lambda."""
    mask = check_response_mask("discounted_suffix_sums", response_mask, delta)
    adv, _ = gae(delta, torch.zeros_like(delta), mask, gamma=1.0, lam=gamma_lambda)
    return adv


def distrl_sampled_advantages(
    sampled_td: torch.Tensor,
    response_mask: torch.Tensor,
    labels: torch.Tensor,
    groups,
    variant: str = "code",
    gae_coef: float | None = None,
    gamma_lambda: float = 1.0,
    eps: float = STD_FLOOR,
) -> torch.Tensor:
    """Eq. 13's sampled-token advantage [B, T]: GRPO outcome advantage + gae_coef x GAE of the
    normalised TD delta-hat (0 outside the mask). `sampled_td` [B, T]: beta (log pi_phi - log pi_ref)
    of the sampled tokens (the code zeroes it at the final position: pass it so).

    "code" (dl_core_algos.py): delta-hat = (delta - batch mean) / sigma_V, the GAE whitened over the
    batch, gae_coef 0.05; "paper" (App. C): delta-hat = (delta - mu_TD(x)) / (sigma_TD(x) + eps) with the
    mean and population std over all tokens of the prompt's rollouts, gae_coef 1, no whitening."""
    if variant not in SAMPLED_VARIANTS:
        raise ValueError(f"distrl_sampled_advantages: variant {variant!r}; valid: code, paper")
    mask = check_response_mask("distrl_sampled_advantages", response_mask, sampled_td)
    groups = _check_groups("distrl_sampled_advantages", groups, mask.shape[0])
    outcome = grpo_outcome_advantages(labels, groups, eps).to(sampled_td.dtype)
    delta = sampled_td.detach()
    if variant == "code":
        delta_hat = (delta - delta[mask].mean()) / prefix_value_std(delta, mask, eps)
        coef = GAE_COEF_CODE if gae_coef is None else gae_coef
    else:
        delta_hat = torch.zeros_like(delta)
        for gid in groups.unique():
            rows = groups == gid
            x = delta[rows][mask[rows]]
            delta_hat[rows] = (delta[rows] - x.mean()) / (x.std(unbiased=False) + eps)
        coef = 1.0 if gae_coef is None else gae_coef
    delta_hat = torch.where(mask, delta_hat, torch.zeros_like(delta_hat))
    gae_adv = discounted_suffix_sums(delta_hat, mask, gamma_lambda)
    if variant == "code":
        gae_adv = masked_whiten(gae_adv, mask)
    out = outcome[:, None] + coef * gae_adv
    return torch.where(mask, out, torch.zeros_like(out))


def topk_with_forced_sampled(old_logits: torch.Tensor, sampled: torch.Tensor, k: int) -> torch.Tensor:
    """[B, T, k] token ids: the top-k of pi_old's logits [B, T, V] with the sampled token [B, T] in slot 0
    (code `topk_with_forced_top1`: swapped with slot 0 when in the top-k, else put first, the rest
    shifted right and the k-th dropped)."""
    if old_logits.dim() != 3 or sampled.shape != old_logits.shape[:2]:
        raise ValueError(
            f"topk_with_forced_sampled: old_logits {_shape(old_logits)} must be [B, T, V] and sampled "
            f"{_shape(sampled)} [B, T]"
        )
    if not 1 <= k <= old_logits.shape[-1]:
        raise ValueError(f"topk_with_forced_sampled: k must be in [1, {old_logits.shape[-1]}], got {k}")
    top = old_logits.topk(k, dim=-1).indices
    sampled = sampled.long()[..., None]
    present = top == sampled
    slot = present.int().argmax(dim=-1, keepdim=True)
    swapped = top.scatter(-1, slot, top[..., :1]).scatter(-1, torch.zeros_like(slot), sampled)
    inserted = torch.cat([sampled, top[..., :-1]], dim=-1)
    return torch.where(present.any(dim=-1, keepdim=True), swapped, inserted)


def candidate_mask(
    old_candidate_probs: torch.Tensor,
    response_mask: torch.Tensor,
    p_min: float = P_MIN,
    force_sampled: bool = True,
) -> torch.Tensor:
    """[B, T, K] bool over candidates (slot 0 = the sampled token): valid response positions except each
    row's last, and pi_old > p_min (the code's strict test); `force_sampled` keeps slot 0 at every valid
    position whatever its probability (the code; the paper's C_t has no such rule)."""
    if old_candidate_probs.dim() != 3 or old_candidate_probs.shape[:2] != response_mask.shape:
        raise ValueError(
            f"candidate_mask: old_candidate_probs {_shape(old_candidate_probs)} must be [B, T, K] over "
            f"response_mask {_shape(response_mask)}"
        )
    mask = check_response_mask("candidate_mask", response_mask, old_candidate_probs[..., 0])
    valid = (mask & ~final_position_mask(mask))[..., None]
    keep = old_candidate_probs > p_min
    if force_sampled:
        keep[..., 0] = True
    return valid & keep


def clipped_surrogate_loss(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = CLIP_LOW,
    clip_high: float = CLIP_HIGH,
    dual_clip: float | None = DUAL_CLIP,
) -> torch.Tensor:
    """Per-entry PPO loss max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high)), capped at -c A for
    A < 0 (dual clip, VeRL's; None = off). The advantages carry no gradient."""
    _check_positive("clipped_surrogate_loss", clip_low=clip_low, clip_high=clip_high)
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"clipped_surrogate_loss: dual_clip must be > 1 or None, got {dual_clip}")
    adv = advantages.detach()
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high))
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    return loss


def token_branch_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = CLIP_LOW,
    clip_high: float = CLIP_HIGH,
    dual_clip: float | None = DUAL_CLIP,
) -> torch.Tensor:
    """Eq. 12 on the sampled tokens: the clipped surrogate, token mean over the batch (the code's)."""
    mask = check_response_mask("token_branch_loss", response_mask, logp)
    _same_shape("token_branch_loss", logp=logp, logp_old=logp_old, advantages=advantages)
    ratio = torch.exp(torch.where(mask, logp - logp_old.detach(), torch.zeros_like(logp)))
    per_token = clipped_surrogate_loss(ratio, advantages, clip_low, clip_high, dual_clip)
    return per_token[mask].mean()


def candidate_td_advantages(
    rm_candidate_logprobs: torch.Tensor,
    ref_candidate_logprobs: torch.Tensor,
    beta: float,
    sigma_v: torch.Tensor | float,
) -> torch.Tensor:
    """Eq. 11's A(s_t, y') = beta (log pi_phi(y'|s_t) - log pi_ref(y'|s_t)) / sigma_V over [B, T, K]
    candidates (pi_ref := pi_old in DistRL; sigma_V already clamped, `prefix_value_std`); no gradient."""
    _same_shape("candidate_td_advantages", rm=rm_candidate_logprobs, ref=ref_candidate_logprobs)
    return (beta * (rm_candidate_logprobs - ref_candidate_logprobs) / sigma_v).detach()


def candidate_branch_loss(
    candidate_logp: torch.Tensor,
    candidate_logp_old: torch.Tensor,
    candidate_advantages: torch.Tensor,
    candidates: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = CLIP_LOW,
    clip_high: float = CLIP_HIGH,
    dual_clip: float | None = DUAL_CLIP,
    aggregation: str = "paper",
) -> torch.Tensor:
    """Eq. 11, L_Dist over candidates [B, T, K] (mask `candidates`, e.g. `candidate_mask`):
    "paper" the mean over sequences of (1/T) sum_t sum_{y' in C_t} pi_old(y') loss(y'), T = the row's
    response tokens; "code" sum pi_old(y') loss / sum pi_old(y') over every kept (t, y') of the batch.
    The code's own clip here is the symmetric 0.2: pass clip_high=0.2 for it."""
    if aggregation not in CANDIDATE_AGGREGATIONS:
        raise ValueError(f"candidate_branch_loss: aggregation {aggregation!r}; valid: paper, code")
    _same_shape(
        "candidate_branch_loss",
        candidate_logp=candidate_logp,
        candidate_logp_old=candidate_logp_old,
        candidate_advantages=candidate_advantages,
        candidates=candidates,
    )
    mask = check_response_mask("candidate_branch_loss", response_mask, candidate_logp[..., 0])
    keep = candidates.bool() & mask[..., None]
    old = candidate_logp_old.detach()
    ratio = torch.exp(torch.where(keep, candidate_logp - old, torch.zeros_like(old)))
    loss = clipped_surrogate_loss(ratio, candidate_advantages, clip_low, clip_high, dual_clip)
    weighted = torch.where(keep, old.exp() * loss, torch.zeros_like(loss))
    if aggregation == "code":
        return weighted.sum() / torch.where(keep, old.exp(), torch.zeros_like(old)).sum().clamp_min(1e-12)
    return (weighted.sum(dim=(1, 2)) / mask.sum(dim=1)).mean()


# --- DistRL as a `common.rl_loop.PolicyLoss` ------------------------------------------------------------


def _next_token_logprobs(model: torch.nn.Module, ro: Rollout, batch: int | None) -> torch.Tensor:
    """[B, S-1, V] float32 log-softmax; position t-1 is the distribution of input_ids[:, t]."""
    step = batch or len(ro)
    parts = []
    for s in range(0, len(ro), step):
        out = model(input_ids=ro.input_ids[s : s + step], attention_mask=ro.attention_mask[s : s + step])
        parts.append(out.logits[:, :-1].float().log_softmax(-1))
    return torch.cat(parts)


class DistRLPolicyLoss:
    """`run_rl(policy_loss=...)`: L = L_Tok-PPO (Eq. 12 on run_rl's advantages, e.g. `distrl_reward_fn`)
    + alpha L_Dist-PPO (Eq. 11 over the forced-sampled top-k candidates with pi_old > p_min).

    `prepare` (once per chunk, no gradient) calls `before_td(ro)` first when given (the code's online RM
    update, `update: before`, so the TD below comes from the updated RM), then records pi_old's
    candidates and log-probs, the RM's, the sampled TD beta (log pi_phi - log pi_old) (0 at each row's
    last token, as the code), sigma_V and the candidate advantages. pi_ref := pi_old (the code's
    reuse_ref). GRPO w/ IPVRM is alpha = 0, top_k = 1. The candidate branch clips at
    `candidate_clip_high` (None: `clip_high`; the code's symmetric 0.2: pass 0.2)."""

    def __init__(
        self,
        reward_model: torch.nn.Module,
        beta: float = BETA_IPVRM,
        top_k: int = CANDIDATE_TOP_K,
        p_min: float = P_MIN,
        alpha: float = ALPHA,
        clip_low: float = CLIP_LOW,
        clip_high: float = CLIP_HIGH,
        candidate_clip_high: float | None = None,
        dual_clip: float | None = DUAL_CLIP,
        aggregation: str = "paper",
        forward_batch_size: int | None = None,
        before_td: Callable[[Rollout], None] | None = None,
    ):
        _check_positive("DistRLPolicyLoss", beta=beta, top_k=top_k)
        if aggregation not in CANDIDATE_AGGREGATIONS:
            raise ValueError(f"DistRLPolicyLoss: aggregation {aggregation!r}; valid: paper, code")
        if alpha < 0:
            raise ValueError(f"DistRLPolicyLoss: alpha must be >= 0, got {alpha}")
        self.reward_model, self.beta, self.top_k, self.p_min, self.alpha = (
            reward_model,
            beta,
            top_k,
            p_min,
            alpha,
        )
        self.clip_low, self.clip_high, self.dual_clip = clip_low, clip_high, dual_clip
        self.candidate_clip_high = clip_high if candidate_clip_high is None else candidate_clip_high
        self.aggregation, self.batch, self.before_td = aggregation, forward_batch_size, before_td
        self.state: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def prepare(self, policy: torch.nn.Module, ro: Rollout) -> None:
        if self.before_td is not None:
            self.before_td(ro)
        old = _next_token_logprobs(policy, ro, self.batch)
        ids = topk_with_forced_sampled(old, ro.input_ids[:, 1:], self.top_k)
        old_cand = old.gather(-1, ids)
        del old
        rm_cand = _next_token_logprobs(self.reward_model, ro, self.batch).gather(-1, ids)
        mask = ro.response_mask[:, 1:]
        td = self.beta * (rm_cand[..., 0] - old_cand[..., 0])
        td = torch.where(mask & ~final_position_mask(mask), td, torch.zeros_like(td))
        sigma_v = prefix_value_std(td, mask)
        self.state = {
            "ids": ids,
            "logp_old": old_cand,
            "advantages": candidate_td_advantages(rm_cand, old_cand, self.beta, sigma_v),
            "candidates": candidate_mask(old_cand.exp(), mask, self.p_min),
            "sampled_td": torch.cat([torch.zeros_like(td[:, :1]), td], dim=1),  # [B, S] like input_ids
            "sigma_v": sigma_v,
        }

    def __call__(
        self, policy: torch.nn.Module, ro: Rollout, idx: torch.Tensor, advantages: torch.Tensor
    ) -> torch.Tensor:
        if not self.state:
            raise RuntimeError("DistRLPolicyLoss: prepare(policy, rollout) must run before the loss")
        idx = idx.to(ro.input_ids.device)
        out = policy(input_ids=ro.input_ids[idx], attention_mask=ro.attention_mask[idx])
        logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, self.state["ids"][idx])
        mask, old = ro.response_mask[idx, 1:], self.state["logp_old"][idx]
        loss = token_branch_loss(
            logp[..., 0],
            old[..., 0],
            advantages[:, 1:].float(),
            mask,
            self.clip_low,
            self.clip_high,
            self.dual_clip,
        )
        if self.alpha == 0:
            return loss
        dist = candidate_branch_loss(
            logp,
            old,
            self.state["advantages"][idx],
            self.state["candidates"][idx],
            mask,
            self.clip_low,
            self.candidate_clip_high,
            self.dual_clip,
            self.aggregation,
        )
        return loss + self.alpha * dist


def distrl_reward_fn(
    loss: DistRLPolicyLoss,
    verify: Callable[[Rollout], torch.Tensor],
    variant: str = "code",
    gae_coef: float | None = None,
) -> Callable[[Rollout], torch.Tensor]:
    """run_rl's reward_fn for DistRL / GRPO w/ IPVRM: Eq. 13's sampled-token advantage [B, S] from the
    verifier's outcomes `verify(ro)` [B] in {0, 1} and the sampled TD that `loss.prepare` recorded
    (run_rl calls prepare before reward_fn). `gae_coef` 0 with no RM is GRPO w/ VR."""

    def reward(ro: Rollout) -> torch.Tensor:
        if "sampled_td" not in loss.state:
            raise RuntimeError("distrl_reward_fn: the DistRLPolicyLoss has not prepared this rollout")
        labels = verify(ro)
        ro.metrics["correct"] = float(torch.as_tensor(labels, dtype=torch.float64).mean())
        adv = distrl_sampled_advantages(
            loss.state["sampled_td"], ro.response_mask, labels, ro.prompt_index, variant, gae_coef
        )
        return adv.float()

    return reward
