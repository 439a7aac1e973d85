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

import torch
import torch.nn.functional as F

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
