"""LCO's maths as pure functions: the optimal target of the KL-regularised objective and the three losses.

Spec `shared/papers/lco.md` (section numbers below are the spec's; the paper's own equation numbers could
not be read). Shapes: `[..., V]` over the vocabulary at each position, `[...]` per position.
- Target (section 2, code `create_lco_log_target`): pi*(a|s) = pi_old(a|s) exp(A(s,a)/beta) / Z_s, i.e.
  log p* = log_softmax(log_softmax(z_old) + A/beta) over the supported tokens; unsupported tokens (the
  code's non-top-k logits, filled with -100) get a probability e^-100 below the least likely supported one.
- LCO-KLD (section 3): KL(p* || softmax(z)) per position, the mean over positions; convex in z with
  Hessian diag(pi) - pi pi^T (SFT's), gradient pi - p*.
- LCO-MSE / LCO-LCH (section 3): sum over the known tokens S of (z - z*)^2 / logcosh(z - z*), z* = z_old +
  A/beta (paper); `anchor="current"` builds z* from the detached current logits (the code's rule-RM
  trainers: a fixed-size logit push, section 6).
- Code variants (section 6): `beta_eff` (100 x beta for A <= 0), `topk_support` (pi_old truncated to its
  top-5 logits), `zero_mean_fill` (the older trainer's unknown-advantage fill), `topk_advantages` (Q-RM and
  DPO-RM dense advantages over k tokens, divided by their std).
- Theory contrasts (section 1): the SFT, policy-gradient and importance-sampled PG token losses, whose
  Hessians in z the tests take with torch.func.
"""

from __future__ import annotations

import torch

LCO_VARIANTS = ("kld", "mse", "lch")
ANCHORS = ("old", "current")  # MSE / LCH target z*: z_old + A/beta (paper) | z.detach() + A/beta (code)
FILL_GAP = 100.0  # log-probability gap of an unsupported token below the least likely supported one


def _check_same(where: str, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: shapes differ: {shapes}")


def _check_beta(where: str, beta: float | torch.Tensor) -> None:
    bad = (torch.as_tensor(beta) <= 0).any() or torch.as_tensor(beta).isnan().any()
    if bad:
        raise ValueError(f"{where}: beta must be > 0, got {beta}")


def _beta_per_token(beta: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """A per-position beta `[...]` broadcast over the vocabulary axis of `like` `[..., V]`."""
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:
        if beta.shape != like.shape[:-1]:
            raise ValueError(
                f"beta of shape {tuple(beta.shape)} must be a number or [...] = {tuple(like.shape[:-1])}"
            )
        return beta[..., None].to(like.dtype)
    return float(beta)


def _check_support(where: str, support: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if support is None:
        return torch.ones_like(like, dtype=torch.bool)
    if support.shape != like.shape:
        raise ValueError(f"{where}: support_mask shape {tuple(support.shape)} != {tuple(like.shape)}")
    support = support.bool()
    empty = int((~support.any(-1)).sum())
    if empty:
        raise ValueError(f"{where}: support_mask excludes every token at {empty} position(s)")
    return support


def lco_log_target(
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    beta: float | torch.Tensor,
    support_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[..., V] log p* = log_softmax(log_softmax(z_old) + A/beta) over the supported tokens (section 2).

    `advantages` [..., V] (a sparse advantage is 0 except at the sampled token); `beta` a number or a
    per-position [...] tensor (`beta_eff`); `support_mask` [..., V] bool, True = supported (None: all).
    Unsupported entries get (least supported log p*) - 100, then the row is renormalised, so their
    probability is e^-100 < 1e-30 of any supported token's. No gradient flows (it is a target).
    """
    where = "lco_log_target"
    if old_logits.dim() < 1:
        raise ValueError(f"{where}: old_logits must be [..., V], got a scalar")
    _check_same(where, old_logits=old_logits, advantages=advantages)
    _check_beta(where, beta)
    support = _check_support(where, support_mask, old_logits)
    z_old, adv = old_logits.detach(), advantages.detach().to(old_logits.dtype)
    neg_inf = torch.finfo(z_old.dtype).min
    log_old = torch.where(support, z_old, neg_inf).log_softmax(-1)
    logits = torch.where(support, log_old + adv / _beta_per_token(beta, z_old), neg_inf)
    log_target = logits.log_softmax(-1)
    floor = torch.where(support, log_target, torch.inf).amin(-1, keepdim=True) - FILL_GAP
    return torch.where(support, log_target, floor).log_softmax(-1)


def lco_kld_loss(logits: torch.Tensor, log_target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LCO-KLD: the mean over positions where `mask` [...] is True of KL(p* || softmax(logits)) =
    sum_a p*(a) (log p*(a) - log_softmax(logits)(a)) (section 3); the gradient goes into `logits` only."""
    where = "lco_kld_loss"
    _check_same(where, logits=logits, log_target=log_target)
    mask = _check_mask(where, mask, logits)
    log_target = log_target.detach()
    per_position = (log_target.exp() * (log_target - logits.log_softmax(-1))).sum(-1)
    return per_position[mask].mean()


def _check_mask(where: str, mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"{where}: mask shape {tuple(mask.shape)} != positions {tuple(logits.shape[:-1])}")
    mask = mask.bool()
    if not mask.any():
        raise ValueError(f"{where}: mask selects no position")
    return mask


def logcosh(x: torch.Tensor) -> torch.Tensor:
    """log cosh x = |x| + log(1 + e^{-2|x|}) - log 2, stable for large |x| (section 3, LCO-LCH)."""
    a = x.abs()
    return a + torch.nn.functional.softplus(-2 * a) - torch.log(torch.tensor(2.0, dtype=x.dtype))


def logit_targets(
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    beta: float | torch.Tensor,
    anchor: str = "old",
) -> torch.Tensor:
    """[..., V] the target logits z* = anchor + A/beta: anchor z_old (paper, section 2) or the detached
    current logits (code's rule-RM MSE / LCH trainers, section 6)."""
    if anchor not in ANCHORS:
        raise ValueError(f"logit_targets: anchor {anchor!r}; valid: {', '.join(ANCHORS)}")
    base = old_logits if anchor == "old" else logits
    return (base.detach() + advantages.detach() / _beta_per_token(beta, logits)).detach()


def _regression_loss(
    kind: str,
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    beta: float | torch.Tensor,
    mask: torch.Tensor,
    known: torch.Tensor | None,
    anchor: str,
) -> torch.Tensor:
    where = f"lco_{kind}_loss"
    _check_same(where, logits=logits, old_logits=old_logits, advantages=advantages)
    _check_beta(where, beta)
    mask = _check_mask(where, mask, logits)
    known = _check_support(where, known, logits)
    diff = logits - logit_targets(logits, old_logits, advantages, beta, anchor)
    per_token = diff**2 if kind == "mse" else logcosh(diff)
    return torch.where(known, per_token, torch.zeros_like(per_token)).sum(-1)[mask].mean()


def lco_mse_loss(
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    beta: float | torch.Tensor,
    mask: torch.Tensor,
    known: torch.Tensor | None = None,
    anchor: str = "old",
) -> torch.Tensor:
    """LCO-MSE: mean over positions of sum_{a in S} (z(a) - z*(a))^2 (section 3; no 1/2, as the code).

    `known` [..., V] bool marks S, the tokens whose advantage is known (the sampled token for a rule
    reward; None: all); z* = z_old + A/beta (`anchor="old"`, paper) or z.detach() + A/beta ("current")."""
    return _regression_loss("mse", logits, old_logits, advantages, beta, mask, known, anchor)


def lco_logcosh_loss(
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    beta: float | torch.Tensor,
    mask: torch.Tensor,
    known: torch.Tensor | None = None,
    anchor: str = "old",
) -> torch.Tensor:
    """LCO-LCH: mean over positions of sum_{a in S} logcosh(z(a) - z*(a)) (section 3); as `lco_mse_loss`."""
    return _regression_loss("lch", logits, old_logits, advantages, beta, mask, known, anchor)


def lco_loss(
    variant: str,
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    beta: float | torch.Tensor,
    mask: torch.Tensor,
    support: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    anchor: str = "old",
) -> torch.Tensor:
    """One of `LCO_VARIANTS`: "kld" (target over `support`), "mse" / "lch" (regression over `known`)."""
    if variant not in LCO_VARIANTS:
        raise ValueError(f"lco_loss: unknown variant {variant!r}; valid: {', '.join(LCO_VARIANTS)}")
    if variant == "kld":
        return lco_kld_loss(logits, lco_log_target(old_logits, advantages, beta, support), mask)
    fn = lco_mse_loss if variant == "mse" else lco_logcosh_loss
    return fn(logits, old_logits, advantages, beta, mask, known, anchor)


def sparse_advantages(tokens: torch.Tensor, advantages: torch.Tensor, vocab: int) -> torch.Tensor:
    """[..., V]: `advantages` [...] at the sampled `tokens` [...], 0 elsewhere (rule verifier, section 4)."""
    _check_same("sparse_advantages", tokens=tokens, advantages=advantages)
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"sparse_advantages: token ids must lie in [0, {vocab})")
    out = torch.zeros(*tokens.shape, vocab, dtype=advantages.dtype, device=advantages.device)
    return out.scatter(-1, tokens[..., None].long(), advantages[..., None])


def beta_eff(advantages: torch.Tensor, beta: float, negative_scale: float = 100.0) -> torch.Tensor:
    """[...] per-position beta of the code's rule-RM trainers: beta where A > 0, else negative_scale x beta
    (section 6: negative-advantage tokens pushed 100x more gently); negative_scale 1 is the paper's form."""
    _check_beta("beta_eff", beta)
    if not negative_scale > 0:
        raise ValueError(f"beta_eff: negative_scale must be > 0, got {negative_scale}")
    return torch.where(advantages > 0, beta, negative_scale * beta).to(advantages.dtype)


def topk_support(logits: torch.Tensor, k: int) -> torch.Tensor:
    """[..., V] bool: True at the k largest logits of each position (the code's top-5 pi_old, section 5)."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"topk_support: k must be in [1, {logits.shape[-1]}], got {k}")
    idx = logits.topk(k, dim=-1).indices
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)


def topk_advantages(
    values: torch.Tensor, rank_by: torch.Tensor, k: int = 5, center: bool = False, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense advantages over k tokens (section 4/6): (advantages [..., V], support [..., V] bool).

    The k tokens are the top-k of `rank_by` (Q-RM: the reward model's own logits; DPO-RM: the policy's);
    A = values / std over the k (the KLD trainers; `center=True`: (values - mean) / std, the MSE / LCH
    ones); 0 outside the support (the code's -100 advantage: `lco_log_target` gives those ~0 mass)."""
    _check_same("topk_advantages", values=values, rank_by=rank_by)
    support = topk_support(rank_by, k)
    picked = values.gather(-1, rank_by.topk(k, dim=-1).indices)
    std = picked.std(-1, unbiased=False, keepdim=True).clamp_min(eps) if k > 1 else 1.0
    scaled = (picked - picked.mean(-1, keepdim=True) if center else picked) / std
    adv = torch.zeros_like(values).scatter(-1, rank_by.topk(k, dim=-1).indices, scaled)
    return adv, support


def zero_mean_fill(pi_old: torch.Tensor, advantages: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """[..., V] the older trainer's fill (section 6): known A_k -> A_k (1 - pi_old(k)); every unknown token
    gets A_u = -sum_k pi_old(k) A_k / max(1 - sum_k pi_old(k), 0.1), so E_{pi_old}[A] = 0 whenever the
    unknown tokens hold more than 0.1 of pi_old's mass (invariant 12)."""
    _check_same("zero_mean_fill", pi_old=pi_old, advantages=advantages, known=known)
    known = known.bool()
    smoothed = torch.where(known, advantages * (1 - pi_old), torch.zeros_like(advantages))
    known_mass = torch.where(known, pi_old, torch.zeros_like(pi_old)).sum(-1, keepdim=True)
    fill = -(pi_old * smoothed).sum(-1, keepdim=True) / (1 - known_mass).clamp_min(0.1)
    return torch.where(known, smoothed, fill.expand_as(advantages))


def sft_token_loss(logits: torch.Tensor, label: int) -> torch.Tensor:
    """-log softmax(z)_y for one position `logits` [V] (section 1: Hessian diag(pi) - pi pi^T)."""
    return -logits.log_softmax(-1)[label]


def pg_token_loss(logits: torch.Tensor, action: int, psi: float) -> torch.Tensor:
    """-Psi log pi(a) for one position (section 1: Hessian Psi (diag(pi) - pi pi^T))."""
    return -psi * logits.log_softmax(-1)[action]


def pg_is_token_loss(logits: torch.Tensor, action: int, psi: float, logp_old: float) -> torch.Tensor:
    """-Psi pi(a) / pi_old(a) for one position (section 1: indefinite Hessian in general)."""
    return -psi * torch.exp(logits.log_softmax(-1)[action] - logp_old)


def pg_is_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Vanilla importance-sampled PG: -mean over `mask` [batch, seq] of A rho, rho = exp(logp - logp_old)
    (the toy check's PG-IS arm: PPO's surrogate without the clip)."""
    _check_same("pg_is_loss", logp=logp, logp_old=logp_old, advantages=advantages, mask=mask)
    mask = mask.bool()
    if not mask.any():
        raise ValueError("pg_is_loss: mask selects no position")
    ratio = torch.exp(torch.where(mask, logp - logp_old.detach(), torch.zeros_like(logp)))
    return -(ratio * advantages.detach())[mask].mean()
