"""AD-KD's losses as pure functions (spec `../shared/papers/adkd.md`, "Method"; official `loss.py`).

    ig = integrated_gradients(forward_fn, e, target_fn, steps=1)       # [B, L, d]; m = 1: gradient x input
    a_t = token_attribution_scores(ig_teacher, top_k=K)                 # [B, L]: L2 of the top-K |IG| entries
    a_s = token_attribution_scores(ig_student)                          # student: all d entries
    l_attr = attribution_loss(a_t, a_s)                                 # normalised maps, SSE / N_nz
    l_kd = soft_cross_entropy_kd(z_s, z_t, tau)                         # DistillKL: no tau^2 factor
    loss = total_loss(l_ce, l_kd, l_attr, alpha, beta)                  # (1 - a) CE + a KD + b L_attr

The paper's equations could not be read (spec: "Where I read"); every formula here is the official
code's, as the spec reconstructs it, and the docstrings cite the spec's section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Target = Callable[[torch.Tensor], torch.Tensor]
"""logits [B, C] -> the scalar F_c whose gradient is attributed (a batch mean, as in the code)."""

NORM_EPS = 1e-12


def integrated_gradients(
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    embeddings: torch.Tensor,
    target_fn: Target | Sequence[Target],
    steps: int = 1,
    *,
    create_graph: bool | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """m-step Integrated Gradients at the embedding output, zero baseline (spec: "Attribution with
    Integrated Gradients"): IG(e) = e * (1/m) sum_k grad F(k/m * e). m = 1 is gradient x input.

    `forward_fn`: embedding output [B, L, d] -> logits [B, C]. `target_fn`: logits -> scalar, or a list of
    them (one view each: one forward per step serves every view). `create_graph` (default: whether
    `embeddings` carries a graph, i.e. the student) keeps the graph so a loss on the result can be
    back-propagated into the model (double backward). The teacher passes detached embeddings.
    Returns [B, L, d] (a list of them for a list of targets).
    """
    if steps < 1:
        raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}")
    targets = [target_fn] if callable(target_fn) else list(target_fn)
    if create_graph is None:
        create_graph = embeddings.requires_grad
    sums: list[torch.Tensor | float] = [0.0] * len(targets)
    for k in range(1, steps + 1):
        scaled = embeddings * (k / steps) if steps > 1 else embeddings
        if not scaled.requires_grad:
            scaled = scaled.detach().requires_grad_(True)
        logits = forward_fn(scaled)
        for v, target in enumerate(targets):
            last = v == len(targets) - 1
            (grad,) = torch.autograd.grad(
                target(logits), scaled, create_graph=create_graph, retain_graph=create_graph or not last
            )
            sums[v] = sums[v] + grad
    igs = [embeddings * (s / steps) for s in sums]
    return igs[0] if callable(target_fn) else igs


def token_attribution_scores(ig: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """[B, L, d] -> [B, L]: the L2 norm of the `top_k` largest |IG| entries of each token (spec: "Token
    attribution score and top-K filtering"). None = all d entries (the student's form; K = d is the same)."""
    if ig.dim() != 3:
        raise ValueError(f"token_attribution_scores: ig must be [B, L, d], got shape {tuple(ig.shape)}")
    d = ig.shape[-1]
    if top_k is None or top_k == d:
        return ig.norm(dim=-1)
    if not 1 <= top_k <= d:
        raise ValueError(f"top-K: K = {top_k} must be between 1 and the hidden size d = {d}")
    return ig.abs().topk(top_k, dim=-1).values.norm(dim=-1)


def normalize_map(scores: torch.Tensor) -> torch.Tensor:
    """Per-example L2 normalisation over positions: a / max(||a||_2, 1e-12) ([B, L] -> [B, L])."""
    return scores / scores.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def attribution_loss(teacher_scores: torch.Tensor, student_scores: torch.Tensor) -> torch.Tensor:
    """One view's L_attr (spec: "Attribution loss"; code `saliency_mse`): both [B, L] maps L2-normalised
    per example, squared error summed over the batch and positions, divided by the number of non-zero
    teacher entries (padding has exactly zero attribution, so it does not count). The teacher map is
    detached: the gradient reaches the student scores only. A batch whose teacher map is all zero
    gives 0 (the code would divide by zero)."""
    if teacher_scores.shape != student_scores.shape or teacher_scores.dim() != 2:
        raise ValueError(
            f"attribution_loss: maps must both be [B, L], got {tuple(teacher_scores.shape)} "
            f"and {tuple(student_scores.shape)}"
        )
    t_hat = normalize_map(teacher_scores.detach())
    s_hat = normalize_map(student_scores)
    n_nonzero = (t_hat != 0).sum().clamp_min(1)
    return ((t_hat - s_hat) ** 2).sum() / n_nonzero


def view_targets(labels: torch.Tensor, num_labels: int, multi_view: bool = True) -> list[Target]:
    """The attributed scalars F_c (spec: "Views"). C > 2 with `multi_view`: every label c is a view,
    F_c = -mean_b log p_c (code `saliency_mse_for_multiclass`); otherwise one view, the gold-label loss
    (CE; MSE for regression, C = 1). For C = 2 the two views give the same normalised map."""
    if num_labels == 1:
        return [lambda z: F.mse_loss(z.squeeze(-1), labels.float())]
    if multi_view and num_labels > 2:
        return [lambda z, c=c: -F.log_softmax(z, dim=-1)[:, c].mean() for c in range(num_labels)]
    return [lambda z: F.cross_entropy(z, labels)]


def multi_view_attribution_loss(
    teacher_forward: Callable[[torch.Tensor], torch.Tensor],
    teacher_embeddings: torch.Tensor,
    student_forward: Callable[[torch.Tensor], torch.Tensor],
    student_embeddings: torch.Tensor,
    targets: Sequence[Target],
    *,
    top_k: int | None = None,
    steps: int = 1,
) -> torch.Tensor:
    """L_attr summed over the views (spec: "Attribution loss"): the teacher's top-K maps without a
    graph, the student's full-d maps with one (double back-propagation)."""
    t_igs = integrated_gradients(teacher_forward, teacher_embeddings.detach(), targets, steps)
    s_igs = integrated_gradients(student_forward, student_embeddings, targets, steps, create_graph=True)
    total = student_embeddings.new_zeros(())
    for t_ig, s_ig in zip(t_igs, s_igs):
        total = total + attribution_loss(
            token_attribution_scores(t_ig.detach(), top_k), token_attribution_scores(s_ig)
        )
    return total


def soft_cross_entropy_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """L_KD (spec: "Logit KD"; code `DistillKL`): -(1/B) sum_b sum_c softmax(z_T/tau) log softmax(z_S/tau).
    Soft cross-entropy (KL + teacher entropy), no tau^2 factor; the teacher side is detached.
    Regression (C = 1): MSE(z_S/tau, z_T/tau)."""
    teacher_logits = teacher_logits.detach()
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits / temperature, teacher_logits / temperature)
    p_teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return -(p_teacher * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def annealed_temperature(temperature: float, epoch: int, epochs: int) -> float:
    """`kd_anneal` (spec: "Annealed variant"): tau_e = tau + (1 - tau) e / (E - 1), from tau at epoch 0
    to 1 at epoch E - 1 (a single epoch keeps tau)."""
    if epochs <= 1:
        return float(temperature)
    return temperature + (1.0 - temperature) * epoch / (epochs - 1)


def total_loss(
    ce: torch.Tensor, kd: torch.Tensor, attr: torch.Tensor | float, alpha: float, beta: float
) -> torch.Tensor:
    """L = (1 - alpha) L_CE + alpha L_KD + beta L_attr (spec: "Logit KD and overall loss")."""
    return (1.0 - alpha) * ce + alpha * kd + beta * attr


def pkd_loss(student_cls: Sequence[torch.Tensor], teacher_cls: Sequence[torch.Tensor]) -> torch.Tensor:
    """Patient-KD's feature term (the baseline): sum over matched layers of the batch-mean squared
    distance between L2-normalised [CLS] states ([B, d] each; teacher detached)."""
    if len(student_cls) != len(teacher_cls):
        raise ValueError(f"pkd_loss: {len(student_cls)} student layers vs {len(teacher_cls)} teacher layers")
    total = student_cls[0].new_zeros(())
    for s, t in zip(student_cls, teacher_cls):
        diff = F.normalize(s, dim=-1) - F.normalize(t.detach(), dim=-1)
        total = total + (diff**2).sum(-1).mean()
    return total
