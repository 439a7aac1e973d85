"""IPVRM's and its baselines' reward-model maths as pure torch functions (spec `shared/papers/ipvrm.md`).

Shapes: `[B, T]` per-token tensors aligned with a bool `response_mask` [B, T] (prompt and padding
positions are False and never enter a loss); `labels` [B] in {0, 1} (the verifier's outcome r_o).
- Token log-ratio l_t = log pi_phi(y_t|s_t) - log pi_ref(y_t|s_t) on response tokens (0 elsewhere).
- Prefix value V_t = beta sum_{i<=t} l_i (inclusive cumsum, the code's); v̄_t = V_t / t with t counting
  response tokens only (Eq. 9).
- IPVRM (Eq. 9): per sequence -(1/T) sum_t log sigma(s v̄_t - m), s = 2 r_o - 1; mean over sequences.
  Margin m = 5 in the paper (App. C); the official README's command passes no `--gamma`, so the code
  trains with m = 0 (`MARGIN_OFFICIAL_README`). The code takes a token mean over the micro-batch
  (`reduction="token"`), equal to the paper's per-sequence mean at per-device batch 1.
- Temporal weightings (Eqs. 16-18, ablation): "late" sum_t (t/T) L_t / sum_t (t/T), "early" with
  weights 1 - t/T (a one-token response has all-zero early weights; it then gets its single L_1).
- Implicit PRM, CE variant (Eq. 4): BCE-with-logits on R = beta sum_t l_t, beta = 0.05.
- DPO-RM (Eqs. 1-3, code `bt_sum`): softplus(-(beta (sum l_w - sum l_l) - gamma)), beta = 0.05, gamma 0.
- TD token rewards (Eq. 10): A^TD(s_t, y_t) = beta l_t = V_t - V_{t-1}; step scores over ProcessBench
  steps: process-level beta sum_{i in step k} l_i (main Table 2), prefix-based V at the end of step k.
- Online update (Eq. 15): ADB adds V(x) = logit(mu(x)) inside the sigmoid, log sigma(s (v̄_t + V(x)) - m)
  (= the code's per-sample margin m -/+ logit(mu)); DLW weights each sequence by 1 - mu (correct) or mu
  (incorrect); the code renormalises the weights of each prompt group to sum to n (`renormalize`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from common.rl import Rollout, gae

BETA_IPVRM = 10.0
MARGIN_PAPER = 5.0  # paper App. C
MARGIN_OFFICIAL_README = 0.0  # the README's command leaves --gamma at its default 0.0
BETA_IMPLICIT_PRM = 0.05
BETA_DPO_RM = 0.05
WEIGHTINGS = ("uniform", "late", "early")
REDUCTIONS = ("sequence", "token")
MU_CLAMP = 1e-6  # the code clamps the prompt accuracy to [1e-6, 1 - 1e-6] before the logit


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _same_shape(where: str, **tensors: torch.Tensor) -> None:
    shapes = {name: _shape(t) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: shapes differ: {shapes}")


def check_response_mask(where: str, response_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`response_mask` as bool after checking: [B, T] like `like`, 0/1 values, a response token per row."""
    if like.dim() != 2:
        raise ValueError(f"{where}: log-probs must be [batch, seq], got shape {_shape(like)}")
    if response_mask.shape != like.shape:
        raise ValueError(
            f"{where}: response_mask shape {_shape(response_mask)} != log-probs shape {_shape(like)}"
        )
    if response_mask.dtype != torch.bool:
        if not ((response_mask == 0) | (response_mask == 1)).all():
            raise ValueError(f"{where}: response_mask must be bool or 0/1")
        response_mask = response_mask.bool()
    empty = (~response_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{where}: response_mask row(s) {empty} have no response token")
    return response_mask


def check_labels(where: str, labels: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """`labels` [B] as float64 after checking that they are 0 or 1 (callers cast to their dtype);
    `batch` None: any length."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or (batch is not None and labels.shape[0] != batch):
        want = "[batch]" if batch is None else f"[batch] = [{batch}]"
        raise ValueError(f"{where}: labels must be {want}, got shape {_shape(labels)}")
    bad = ~((labels == 0) | (labels == 1))
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"{where}: labels must be 0 or 1; rows {rows} hold {labels[bad].tolist()}")
    return labels.double()


def _check_positive(where: str, **values: float) -> None:
    for name, value in values.items():
        if not float(value) > 0:
            raise ValueError(f"{where}: {name} must be > 0, got {value}")


def token_log_ratios(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    where: str = "token_log_ratios",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(l [B, T] = log pi_phi - log pi_ref on response tokens, 0 elsewhere; the bool mask)."""
    if ref_logprobs.shape != policy_logprobs.shape:
        raise ValueError(
            f"{where}: ref_logprobs shape {_shape(ref_logprobs)} != policy_logprobs shape "
            f"{_shape(policy_logprobs)}"
        )
    mask = check_response_mask(where, response_mask, policy_logprobs)
    diff = policy_logprobs - ref_logprobs.detach()
    return torch.where(mask, diff, torch.zeros_like(diff)), mask


def prefix_values(log_ratios: torch.Tensor, response_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """V_t = beta sum_{i<=t} l_i over response tokens [B, T] (0 outside the mask)."""
    mask = check_response_mask("prefix_values", response_mask, log_ratios)
    values = beta * torch.where(mask, log_ratios, torch.zeros_like(log_ratios)).cumsum(dim=1)
    return torch.where(mask, values, torch.zeros_like(values))


def normalized_prefix_values(
    log_ratios: torch.Tensor, response_mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """v̄_t = V_t / t, t = the number of response tokens up to and including position t (0 outside)."""
    mask = check_response_mask("normalized_prefix_values", response_mask, log_ratios)
    count = mask.cumsum(dim=1).clamp_min(1).to(log_ratios.dtype)
    values = prefix_values(log_ratios, mask, beta) / count
    return torch.where(mask, values, torch.zeros_like(values))


def td_token_rewards(log_ratios: torch.Tensor, response_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 10 on the sampled path: A^TD(s_t, y_t) = beta l_t = V_t - V_{t-1} (0 outside the mask)."""
    mask = check_response_mask("td_token_rewards", response_mask, log_ratios)
    return torch.where(mask, beta * log_ratios, torch.zeros_like(log_ratios))


def temporal_weights(response_mask: torch.Tensor, weighting: str = "uniform") -> torch.Tensor:
    """Per-token weights [B, T] summing to 1 over each row's response tokens (Eqs. 9, 17, 18)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"temporal_weights: weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    mask = response_mask.bool()
    t = mask.cumsum(dim=1).double()  # float64, whatever the default dtype; callers cast
    length = mask.sum(dim=1, keepdim=True).to(t.dtype)
    raw = {"uniform": torch.ones_like(t), "late": t / length, "early": 1 - t / length}[weighting]
    raw = torch.where(mask, raw, torch.zeros_like(raw))
    total = raw.sum(dim=1, keepdim=True)
    # "early" on a one-token response: every weight is 0; fall back to that token alone
    raw = torch.where((total > 0) | ~mask, raw, torch.ones_like(raw))
    return raw / raw.sum(dim=1, keepdim=True)


def ipvrm_token_losses(
    normalized_values: torch.Tensor,
    labels: torch.Tensor,
    response_mask: torch.Tensor,
    margin: float = MARGIN_PAPER,
    value_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_t = -log sigma(s (v̄_t + V(x)) - m) [B, T], s = 2 r_o - 1; 0 outside the mask.

    `value_offset` [B]: the ADB boundary V(x) = logit(mu(x)) of each row's prompt (Eq. 15), None = 0."""
    mask = check_response_mask("ipvrm_token_losses", response_mask, normalized_values)
    labels = check_labels("ipvrm_token_losses", labels, mask.shape[0]).to(normalized_values.dtype)
    if not float(margin) >= 0:
        raise ValueError(f"ipvrm_token_losses: margin must be >= 0, got {margin}")
    sign = (2 * labels - 1)[:, None]
    shifted = normalized_values
    if value_offset is not None:
        if value_offset.shape != labels.shape:
            raise ValueError(
                f"ipvrm_token_losses: value_offset shape {_shape(value_offset)} != [{mask.shape[0]}]"
            )
        shifted = normalized_values + value_offset.detach().to(normalized_values.dtype)[:, None]
    losses = -F.logsigmoid(sign * shifted - margin)  # not F.softplus: its threshold 20 is linear
    return torch.where(mask, losses, torch.zeros_like(losses))


def ipvrm_sequence_losses(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    labels: torch.Tensor,
    beta: float = BETA_IPVRM,
    margin: float = MARGIN_PAPER,
    weighting: str = "uniform",
    value_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B] the per-sequence IPVRM loss sum_t w_t L_t (w from `temporal_weights`; uniform = Eq. 9)."""
    where = "ipvrm_sequence_losses"
    _check_positive(where, beta=beta)
    ratios, mask = token_log_ratios(policy_logprobs, ref_logprobs, response_mask, where)
    vbar = normalized_prefix_values(ratios, mask, beta)
    per_token = ipvrm_token_losses(vbar, labels, mask, margin, value_offset)
    weights = temporal_weights(mask, weighting).to(per_token.dtype)
    return (weights * per_token).sum(dim=1)


def ipvrm_loss(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    labels: torch.Tensor,
    beta: float = BETA_IPVRM,
    margin: float = MARGIN_PAPER,
) -> torch.Tensor:
    """Eq. 9: the mean over sequences of -(1/T) sum_t log sigma(s v̄_t - m) (module doc)."""
    return ipvrm_sequence_losses(policy_logprobs, ref_logprobs, response_mask, labels, beta, margin).mean()


def ipvrm_loss_token_mean(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    labels: torch.Tensor,
    beta: float = BETA_IPVRM,
    margin: float = MARGIN_OFFICIAL_README,
) -> torch.Tensor:
    """The official trainer's reduction: L_t averaged over every response token of the micro-batch
    (margin default: the README command's 0; pass `MARGIN_PAPER` for the paper's 5)."""
    where = "ipvrm_loss_token_mean"
    _check_positive(where, beta=beta)
    ratios, mask = token_log_ratios(policy_logprobs, ref_logprobs, response_mask, where)
    per_token = ipvrm_token_losses(normalized_prefix_values(ratios, mask, beta), labels, mask, margin)
    return per_token[mask].mean()


def implicit_prm_loss(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    labels: torch.Tensor,
    beta: float = BETA_IMPLICIT_PRM,
) -> torch.Tensor:
    """Eq. 4 (Implicit PRM, CE): mean over sequences of BCE-with-logits(R = beta sum_t l_t, r_o)."""
    where = "implicit_prm_loss"
    _check_positive(where, beta=beta)
    ratios, mask = token_log_ratios(policy_logprobs, ref_logprobs, response_mask, where)
    labels = check_labels(where, labels, mask.shape[0]).to(ratios.dtype)
    return F.binary_cross_entropy_with_logits(beta * ratios.sum(dim=1), labels)


def dpo_rm_loss(
    chosen_policy_logprobs: torch.Tensor,
    chosen_ref_logprobs: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_policy_logprobs: torch.Tensor,
    rejected_ref_logprobs: torch.Tensor,
    rejected_mask: torch.Tensor,
    beta: float = BETA_DPO_RM,
    margin: float = 0.0,
) -> torch.Tensor:
    """Eqs. 1-3 (code `bt_sum`): mean over pairs of softplus(-(beta (sum l_w - sum l_l) - margin)).

    Row i of the chosen tensors (a correct response) pairs with row i of the rejected ones."""
    where = "dpo_rm_loss"
    _check_positive(where, beta=beta)
    chosen, _ = token_log_ratios(chosen_policy_logprobs, chosen_ref_logprobs, chosen_mask, where)
    rejected, _ = token_log_ratios(rejected_policy_logprobs, rejected_ref_logprobs, rejected_mask, where)
    if chosen.shape[0] != rejected.shape[0]:
        raise ValueError(f"{where}: {chosen.shape[0]} chosen rows but {rejected.shape[0]} rejected rows")
    logits = beta * (chosen.sum(dim=1) - rejected.sum(dim=1)) - margin
    return -F.logsigmoid(logits).mean()


STEP_PROTOCOLS = ("process", "prefix")


def step_scores(token_rewards: torch.Tensor, step_ends: list[int], protocol: str = "process") -> torch.Tensor:
    """Pre-sigmoid step scores [K] from one response's token rewards [n] (e.g. `td_token_rewards`, or the
    evaluation code's coef * l_t) and the index of each step's last token, increasing.

    "process" (process-level, the main tables; code `sum_diff`): sum of the rewards inside step k =
    V_{end_k} - V_{end_{k-1}}; "prefix" (prefix-based, Table 14; code `sum`): V_{end_k}."""
    if protocol not in STEP_PROTOCOLS:
        raise ValueError(f"step_scores: protocol {protocol!r}; valid: {', '.join(STEP_PROTOCOLS)}")
    if token_rewards.dim() != 1:
        raise ValueError(f"step_scores: token_rewards must be [n], got shape {_shape(token_rewards)}")
    n = token_rewards.shape[0]
    if not step_ends or any(b <= a for a, b in zip(step_ends, step_ends[1:])):
        raise ValueError(f"step_scores: step_ends must be non-empty and increasing, got {step_ends}")
    if step_ends[0] < 0 or step_ends[-1] >= n:
        raise ValueError(f"step_scores: step_ends {step_ends} fall outside the {n} response tokens")
    prefix = token_rewards.cumsum(dim=0)[torch.as_tensor(step_ends)]
    if protocol == "prefix":
        return prefix
    return torch.cat([prefix[:1], prefix[1:] - prefix[:-1]])


# --- online RM update: Adaptive Difficulty Boundary + Dynamic Loss Weighting (Eq. 15) ---------------


def _check_groups(where: str, groups, batch: int) -> torch.Tensor:
    groups = torch.as_tensor(groups)
    if groups.dim() != 1 or groups.shape[0] != batch:
        raise ValueError(f"{where}: groups must hold one prompt id per row ({batch}), got {_shape(groups)}")
    return groups


def prompt_accuracy(labels: torch.Tensor, groups) -> torch.Tensor:
    """mu(x) [B] float64: each row's prompt accuracy over the rows of its group (the n rollouts)."""
    labels = check_labels("prompt_accuracy", labels)
    groups = _check_groups("prompt_accuracy", groups, labels.shape[0])
    mu = torch.zeros_like(labels)
    for gid in groups.unique():
        rows = groups == gid
        mu[rows] = labels[rows].mean()
    return mu


def adb_offsets(mu: torch.Tensor, clamp: float = MU_CLAMP) -> torch.Tensor:
    """V(x) = logit(mu(x)) with mu clamped to [clamp, 1 - clamp] (the code's), float64."""
    mu = torch.as_tensor(mu, dtype=torch.float64).clamp(clamp, 1 - clamp)
    return torch.log(mu) - torch.log1p(-mu)


def dlw_weights(labels: torch.Tensor, groups, renormalize: bool = True) -> torch.Tensor:
    """DLW weights [B] float64: 1 - mu for correct rows, mu for incorrect ones; `renormalize` (the code)
    rescales each group's weights to sum to its size n. All-correct / all-wrong groups get 0 either way."""
    labels = check_labels("dlw_weights", labels)
    groups = _check_groups("dlw_weights", groups, labels.shape[0])
    mu = prompt_accuracy(labels, groups)
    weights = torch.where(labels == 1, 1 - mu, mu)
    if renormalize:
        for gid in groups.unique():
            rows = groups == gid
            total = weights[rows].sum()
            weights[rows] = weights[rows] * rows.sum() / total if total > 0 else 0.0
    return weights


def ipvrm_online_loss(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    labels: torch.Tensor,
    groups,
    beta: float = BETA_IPVRM,
    margin: float = MARGIN_PAPER,
    use_adb: bool = True,
    use_dlw: bool = True,
    renormalize: bool = True,
) -> torch.Tensor:
    """Eq. 15: the mean over rows of w_i (1/T) sum_t -log sigma(s (v̄_t + V(x)) - m); `groups` [B] the
    prompt id of each row. use_adb False: V(x) = 0; use_dlw False: w = 1 (the offline loss, Eq. 9).
    In DistRL the reference is pi_old (the code's reuse_ref); that is the caller's choice of ref_logprobs."""
    labels_f = check_labels("ipvrm_online_loss", labels, policy_logprobs.shape[0])
    offset = adb_offsets(prompt_accuracy(labels_f, groups)) if use_adb else None
    if offset is not None:
        offset = offset.to(policy_logprobs.dtype)
    per_seq = ipvrm_sequence_losses(
        policy_logprobs, ref_logprobs, response_mask, labels_f, beta, margin, value_offset=offset
    )
    if not use_dlw:
        return per_seq.mean()
    return (dlw_weights(labels_f, groups, renormalize).to(per_seq.dtype) * per_seq).mean()


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
