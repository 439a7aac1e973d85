"""Token-level divergences between two next-token distributions, chunked over positions.

Every function takes logits `[B, T, V]` (or `[N, V]`) and a mask `[B, T]` (True/1 where a token counts)
and returns the mean over the masked positions of a per-position divergence (a 0-dim tensor):

    forward_kl(p, q)      KL(P || Q) = sum_v P_v (log P_v - log Q_v)            (KD: P teacher, Q student)
    reverse_kl(p, q)      KL(Q || P)                                            (mode seeking)
    jsd(p, q, beta)       beta KL(P || M) + (1 - beta) KL(Q || M),  M = beta P + (1 - beta) Q
    topk_forward_kl(s, t) sum_{v in K} T~_v (log T~_v - log S_v),  K = the teacher's k largest logits,
                          T~ = softmax over K only (0 outside), S = the student's full softmax

with P = softmax(p_logits / temperature) (the temperature divides both sides; no T^2 factor: scale
the loss yourself for Hinton-style KD). `topk_forward_kl` is Proxy-KD's loss on "slim" top-k teacher
logits (spec: the target is the softmax over the k kept logits, the temperature on the target only);
its `weights` ([B] per sequence or [B, T] per token) multiply each position's KL before the mean over
masked positions, as in Proxy-KD's mean_over_target_tokens(w_sample * KL_token).

Memory: a plain computation holds several [B*T, V] float tensors at once (two log-softmaxes, a softmax,
their product), which at V = 152k and 8k positions is tens of GB. Here the positions are processed
`chunk_size` rows at a time, so the temporaries are [chunk_size, V]; under autograd each chunk is
recomputed in backward (a gradient checkpoint), so the graph keeps only the input logits, not per-chunk
softmaxes. Half-precision inputs are computed in float32; float32/float64 keep their dtype.
`chunk_size=None` computes all positions at once (the plain computation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _as_rows(logits: torch.Tensor) -> torch.Tensor:
    """[B, T, V] or [N, V] -> [N, V] (a view when contiguous)."""
    return logits.reshape(-1, logits.shape[-1])


def _selected(chunk: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The kept rows of a chunk; half precision is computed in float32 (chunk by chunk, never all of it)."""
    rows = chunk if bool(keep.all()) else chunk[keep]
    return rows.float() if rows.dtype in (torch.float16, torch.bfloat16) else rows


class _Recomputed(torch.autograd.Function):
    """fn(keep, w, *chunks) evaluated without a graph; backward re-runs it with one and differentiates.

    The gradient checkpoint of one chunk, written out (torch.utils.checkpoint pulls in torch._dynamo,
    seconds of import on the first call): only the chunk views (of the caller's logits) are kept."""

    @staticmethod
    def forward(ctx, fn, keep, w, *chunks):
        ctx.fn, ctx.w = fn, w
        ctx.save_for_backward(keep, *chunks)
        with torch.no_grad():
            return fn(keep, w, *chunks)

    @staticmethod
    def backward(ctx, grad_out):
        keep, *chunks = ctx.saved_tensors
        inputs = [c.detach().requires_grad_(c.requires_grad) for c in chunks]
        with torch.enable_grad():
            out = ctx.fn(keep, ctx.w, *inputs)
        wanted = [x for x in inputs if x.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out))
        return (None, None, None, *(next(grads) if x.requires_grad else None for x in inputs))


def _masked_mean(
    per_row: Callable[..., torch.Tensor],
    tensors: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    chunk_size: int | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum over masked rows of weight * per_row(chunks of `tensors`) / number of masked rows.

    `per_row(*chunks)` maps [c, ...] chunks to a [c] divergence per row. Rows are sliced (views), the
    masked ones selected inside the chunk, so no [N, V] copy is made."""
    n = tensors[0].shape[0]
    flat_mask = mask.reshape(-1).to(torch.bool)
    if flat_mask.numel() != n:
        raise ValueError(f"mask has {flat_mask.numel()} positions, logits have {n}")
    count = int(flat_mask.sum())
    if count == 0:
        raise ValueError("the mask selects no position")
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive or None, got {chunk_size}")
    if weights is not None:  # [B] (per sequence) or [B, T] (per token) -> one weight per position
        weights = weights.reshape(*weights.shape, *[1] * (mask.dim() - weights.dim()))
        weights = torch.broadcast_to(weights, mask.shape).reshape(-1)

    def chunk_sum(keep: torch.Tensor, w: torch.Tensor | None, *chunks: torch.Tensor) -> torch.Tensor:
        values = per_row(*(_selected(c, keep) for c in chunks))
        return (values * w.to(values.dtype)).sum() if w is not None else values.sum()

    recompute = chunk_size is not None and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    step = chunk_size or n
    total = None
    for start in range(0, n, step):
        keep = flat_mask[start : start + step]
        if not keep.any():
            continue
        w = None if weights is None else weights[start : start + step][keep]
        chunks = tuple(t[start : start + step] for t in tensors)
        part = _Recomputed.apply(chunk_sum, keep, w, *chunks) if recompute else chunk_sum(keep, w, *chunks)
        total = part if total is None else total + part
    return total / count


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)


def _kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(P || Q) per row of [c, V] logits: sum_v P_v (log P_v - log Q_v)."""
    log_p, log_q = _log_softmax(p_logits, temperature), _log_softmax(q_logits, temperature)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def forward_kl(
    p_logits: torch.Tensor,
    q_logits: torch.Tensor,
    mask: torch.Tensor,
    chunk_size: int | None = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over masked positions of KL(P || Q), P = softmax(p_logits / T), Q = softmax(q_logits / T)."""
    return _masked_mean(
        lambda p, q: _kl_rows(p, q, temperature), (_as_rows(p_logits), _as_rows(q_logits)), mask, chunk_size
    )


def reverse_kl(
    p_logits: torch.Tensor,
    q_logits: torch.Tensor,
    mask: torch.Tensor,
    chunk_size: int | None = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over masked positions of KL(Q || P): `forward_kl` with the arguments swapped."""
    return forward_kl(q_logits, p_logits, mask, chunk_size, temperature)


def _jsd_rows(
    p_logits: torch.Tensor, q_logits: torch.Tensor, beta: float, temperature: float
) -> torch.Tensor:
    """beta KL(P || M) + (1 - beta) KL(Q || M) per row, log M = logsumexp(log beta + log P, log(1-beta) + log Q)."""
    log_p, log_q = _log_softmax(p_logits, temperature), _log_softmax(q_logits, temperature)
    if beta in (0.0, 1.0):  # M is the one distribution that carries weight: the divergence is 0
        return 0.0 * log_p.sum(-1)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return beta * kl_pm + (1 - beta) * kl_qm


def jsd(
    p_logits: torch.Tensor,
    q_logits: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.5,
    chunk_size: int | None = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over masked positions of the (generalised) Jensen-Shannon divergence with mixture weight
    `beta` (0.5: the symmetric JSD, bounded by log 2)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    return _masked_mean(
        lambda p, q: _jsd_rows(p, q, beta, temperature),
        (_as_rows(p_logits), _as_rows(q_logits)),
        mask,
        chunk_size,
    )


def _topk_kl_rows(student: torch.Tensor, teacher: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """sum over the teacher's top-k of T~ (log T~ - log S) per row; T~ = softmax over the kept logits."""
    top_values, top_index = teacher.topk(k, dim=-1)
    log_target = _log_softmax(top_values, temperature)
    log_student = F.log_softmax(student, dim=-1).gather(-1, top_index)
    return (log_target.exp() * (log_target - log_student)).sum(-1)


def topk_forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    k: int = 10,
    weights: torch.Tensor | None = None,
    chunk_size: int | None = 1024,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over masked positions of weight * KL(T~ || S) on the teacher's k largest logits (module doc);
    with k = V it equals `forward_kl(teacher_logits, student_logits)` at temperature 1."""
    if not 0 < k <= teacher_logits.shape[-1]:
        raise ValueError(f"k must be in 1..{teacher_logits.shape[-1]}, got {k}")
    return _masked_mean(
        lambda s, t: _topk_kl_rows(s, t, k, teacher_temperature),
        (_as_rows(student_logits), _as_rows(teacher_logits)),
        mask,
        chunk_size,
        weights,
    )
