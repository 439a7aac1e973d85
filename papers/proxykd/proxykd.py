"""Proxy-KD's losses as pure functions (spec `../shared/papers/proxykd.md`, "Method").

    kl = topk_forward_kl(student_logits, proxy_logits, mask, k=10, weights=w)   # Eq. 8/10 on top-k targets
    w = proxy_sample_weights(mean_logprobs, scale=1.0)                          # Eq. 9 (code: scale 0.4)
    nll = nll_loss(logits, labels)                                               # Eq. 1/3/7
    lp = sequence_logprobs(logits, labels, reduction="sum")                      # log pi(y|x) per sequence
    pref = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta)                            # Eq. 4-5
    loss = student_loss(logits, labels, proxy_logits, weights, alpha, k)         # Eq. 11

Shapes: logits `[B, T, V]`, labels `[B, T]` with -100 on prompt and padding tokens (position t predicts
labels[t + 1], the causal-LM shift), mask `[B, T]` bool, per-sequence values `[B]`. The stored proxy
targets are "slim": the top-k token ids and logits per position (`slim_to_dense` turns them back into a
`[B, T, V]` logit tensor that is -inf outside the kept ids, so the one top-k KL serves both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import divergences
from common.train import IGNORE_INDEX


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision is computed in float32; float32 / float64 keep their dtype."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_weights(weights: torch.Tensor | None, batch: int) -> None:
    if weights is not None and (weights.dim() != 1 or weights.shape[0] != batch):
        raise ValueError(f"weights must have shape [{batch}] (one per sequence), got {list(weights.shape)}")


def topk_forward_kl(
    student_logits: torch.Tensor,
    proxy_logits: torch.Tensor,
    mask: torch.Tensor,
    k: int = 10,
    weights: torch.Tensor | None = None,
    chunk_size: int | None = 1024,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Eq. 8 / Eq. 10 with the top-k truncation of App. A.1: q = softmax over the proxy's k largest logits
    (0 elsewhere); per position KL(q || softmax(student)) = sum_{v in top-k} q_v (log q_v - log p_S(v));
    each sequence's positions times its weight; the sum over masked positions / their number.

    Chunked over positions through `common.divergences.topk_forward_kl` (V = 152k fits). `smoothing` > 0
    is the 2024 code's quirk (spec): `smoothing` added to every vocabulary entry of both distributions,
    each renormalised, computed on the full vocabulary (unchunked; off by default)."""
    vocab = proxy_logits.shape[-1]
    if not 0 < k <= vocab:
        raise ValueError(f"k must be in 1..{vocab} (the vocabulary), got {k}")
    if student_logits.shape != proxy_logits.shape:
        raise ValueError(
            f"student logits {list(student_logits.shape)} != proxy logits {list(proxy_logits.shape)}"
        )
    if mask.shape != student_logits.shape[:-1]:
        raise ValueError(f"mask {list(mask.shape)} does not match logits {list(student_logits.shape[:-1])}")
    _check_weights(weights, student_logits.shape[0])
    if smoothing == 0.0:
        return divergences.topk_forward_kl(student_logits, proxy_logits, mask, k, weights, chunk_size)
    values, index = _upcast(proxy_logits).topk(k, dim=-1)
    target = torch.zeros_like(values[..., :1]).expand(*values.shape[:-1], vocab)
    target = target.scatter(-1, index, values.softmax(-1))
    target = (target + smoothing) / (1 + smoothing * vocab)
    student = (_upcast(student_logits).softmax(-1) + smoothing) / (1 + smoothing * vocab)
    per_pos = (target * (target.log() - student.log())).sum(-1)
    if weights is not None:
        per_pos = per_pos * weights[:, None].to(per_pos.dtype)
    mask = mask.bool()
    return per_pos[mask].sum() / mask.sum()


def slim_to_dense(top_ids: torch.Tensor, top_logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Stored top-k ids and logits `[B, T, k]` -> logits `[B, T, vocab]`, -inf outside the kept ids
    (the code's SlimLogits fill the rest with the dtype minimum), so their top-k is the stored set."""
    if top_ids.shape != top_logits.shape:
        raise ValueError(f"top ids {list(top_ids.shape)} != top logits {list(top_logits.shape)}")
    if top_ids.numel() and int(top_ids.max()) >= vocab:
        raise ValueError(
            f"a stored proxy token id ({int(top_ids.max())}) is outside the vocabulary ({vocab})"
        )
    dense = torch.full((*top_ids.shape[:-1], vocab), float("-inf"), dtype=top_logits.dtype)
    return dense.scatter(-1, top_ids.long(), top_logits)


def proxy_sample_weights(mean_logprobs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 9: w = sigmoid((l - mu) / (scale * s)), mu and s the mean and population std of `mean_logprobs`
    `[N]` over the given set (the code: per-token mean log-prob of the teacher answer under the aligned
    proxy, statistics over a 10K chunk, `scale` = 0.4). A set with s = 0 gives w = 0.5 everywhere."""
    if mean_logprobs.dim() != 1 or mean_logprobs.numel() == 0:
        raise ValueError(
            f"mean_logprobs must be a non-empty [N] tensor, got shape {list(mean_logprobs.shape)}"
        )
    if not torch.isfinite(mean_logprobs).all():
        bad = int((~torch.isfinite(mean_logprobs)).nonzero()[0])
        raise ValueError(f"mean_logprobs[{bad}] is not finite ({float(mean_logprobs[bad])})")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    x = mean_logprobs.double()
    mu, s = x.mean(), x.std(unbiased=False)
    if float(s) == 0.0:
        return torch.full_like(mean_logprobs, 0.5)
    return torch.sigmoid((x - mu) / (scale * s)).to(mean_logprobs.dtype)


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1 / 3 / 7 as in the code: mean next-token cross-entropy over every target token of the batch
    (labels -100: prompt and padding, ignored); a batch without target tokens gives a graph-connected 0."""
    picked, mask = token_logprobs(logits, labels)
    return -picked.sum() / mask.sum().clamp(min=1)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_t | x, y_<t) of each label token `[B, T-1]` (0 where ignored) and the target mask `[B, T-1]`."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = F.log_softmax(_upcast(logits[:, :-1]), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """log pi(y|x) per sequence `[B]`: the sum over its target tokens (the paper's Eq. 4-5 and 9) or, with
    `reduction="mean"`, the per-token mean (the code's DpoLoss and sample weights). A sequence with no
    target token gives 0 (sum) / 0 (mean)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    picked, mask = token_logprobs(logits, labels)
    total = picked.sum(-1)
    return total if reduction == "sum" else total / mask.sum(-1).clamp(min=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 1.0,
) -> torch.Tensor:
    """Eq. 4-5, the mean over pairs of -log sigmoid(beta [(pi_w - ref_w) - (pi_l - ref_l)]) on sequence
    log-probs `[B]` (chosen = the teacher's answer, rejected = the previous proxy's own sample, reference
    = the previous iteration's proxy). beta is UNCONFIRMED (code 1.0)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def student_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    proxy_logits: torch.Tensor,
    weights: torch.Tensor | None,
    alpha: float,
    k: int = 10,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 11: L_S = L_NLL (Eq. 7) + alpha * L_wKL (Eq. 10), the KL over the same target positions as the
    NLL (position t predicts labels[t + 1]), teacher-forced on the teacher's sequence. Returns the loss and
    its two parts (floats, for logging)."""
    nll = nll_loss(student_logits, labels)
    mask = labels[:, 1:] != IGNORE_INDEX
    if alpha == 0.0 or not bool(mask.any()):
        return nll, {"nll": nll.item(), "kl": 0.0}
    kl = topk_forward_kl(
        student_logits[:, :-1], proxy_logits[:, :-1], mask, k=k, weights=weights, smoothing=smoothing
    )
    return nll + alpha * kl, {"nll": nll.item(), "kl": kl.item()}
