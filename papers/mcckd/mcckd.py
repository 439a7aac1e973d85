"""MCC-KD's objective as pure functions (spec `../shared/papers/mcckd.md`, "Training objective").

For one question x and two of its teacher rationales r_a, r_b the student is run on x + r_a and x + r_b
(teacher forcing), and

    L_CE = 1/2 [CE(x, r_a) + CE(x, r_b)],   CE(x, r) = -(1/|r|) sum_j log p(r_j | x, r_<j)
    L_KL = 1/2 [mean_batch mean_u KL(P_u || Q_u) + mean_batch mean_u KL(Q_u || P_u)]
    L    = L_CE + alpha * L_KL

with P_u = softmax(z^a_u / T), Q_u = softmax(z^b_u / T) the student's distributions at the u-th position
of the common answer span under r_a and r_b. No stop-gradient: both sides receive gradient (release
b7b780d `src/utils.py::kl_div_loss`, temperature on both sides; HEAD's target-only temperature and
epsilon renormalisation are not followed, see README "Deviations").

Span alignment (spec design decision): the span [s, e) holds the answer tokens' positions in the
concatenated sequence. A decoder-only LM's logits at position j predict token j + 1, so the answer
distribution of token s + u is read at position s + u - 1 (`shift=1`); an encoder-decoder's decoder
logits at label position j predict label j (`shift=0`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_v P(v) (log P(v) - log Q(v)) over the last axis; terms with P(v) = 0 are 0.

    The difference is zeroed where P(v) = 0 before the product, so a vocabulary padded with -inf logits
    on both sides gives neither a NaN value nor a NaN gradient.
    """
    p = log_p.exp()
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(-1)


def answer_consistency_kl(
    logits_a: torch.Tensor, logits_b: torch.Tensor, span_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """L_KL: 1/2 (KL(P||Q) + KL(Q||P)) at every valid span position, mean over each item's valid
    positions, then mean over the items that have any (release `kl_div_loss` reduction).

    logits_a, logits_b: [batch, span_len, vocab], already aligned to the common answer span under
    rationale a and b; span_mask: [batch, span_len] bool. Returns a scalar; with no valid position it is
    a graph-connected 0. Gradient flows into both logits.
    """
    if logits_a.shape != logits_b.shape or logits_a.dim() != 3:
        raise ValueError(
            f"answer_consistency_kl: logits must both be [batch, span_len, vocab], got "
            f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
        )
    if span_mask.shape != logits_a.shape[:2]:
        raise ValueError(
            f"answer_consistency_kl: span_mask is {tuple(span_mask.shape)}, logits need {tuple(logits_a.shape[:2])}"
        )
    if not temperature > 0:
        raise ValueError(f"answer_consistency_kl: temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(logits_a.dtype, torch.float32)  # bf16/fp16 logits: the KL in fp32
    log_p = F.log_softmax(logits_a.to(dtype) / temperature, dim=-1)
    log_q = F.log_softmax(logits_b.to(dtype) / temperature, dim=-1)
    per_position = 0.5 * (_kl_rows(log_p, log_q) + _kl_rows(log_q, log_p))  # [batch, span_len]
    mask = span_mask.to(per_position.dtype)
    per_position = torch.where(span_mask, per_position, torch.zeros_like(per_position))
    counts = mask.sum(-1)
    has_span = counts > 0
    if not bool(has_span.any()):
        return (logits_a.sum() + logits_b.sum()) * 0.0
    per_item = per_position.sum(-1)[has_span] / counts[has_span]
    return per_item.mean()


def gather_span_logits(
    logits: torch.Tensor, spans: torch.Tensor, span_len: int, shift: int, max_seq_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict the answer tokens [s, e) of each item, padded to `span_len`, and their mask.

    logits: [batch, seq, vocab]; spans: [batch, 2] (start, end) token positions in the sequence the
    logits were computed on (for an encoder-decoder: in the labels). Position s + u - shift is read for
    answer token s + u (`shift=1` decoder-only, 0 encoder-decoder). Positions u >= e - s, items with
    e >= max_seq_len (spec: "items whose span end >= max_seq_len are excluded from the KL"), items past
    the sequence (e > seq) and items with e <= s are masked out.
    Returns ([batch, span_len, vocab], [batch, span_len] bool).
    """
    batch, seq, vocab = logits.shape
    starts, ends = spans[:, 0].long(), spans[:, 1].long()
    inside = ends <= seq if max_seq_len is None else (ends <= seq) & (ends < max_seq_len)
    offsets = torch.arange(span_len, device=logits.device)
    positions = starts[:, None] + offsets[None, :] - shift  # [batch, span_len]
    mask = (offsets[None, :] < (ends - starts)[:, None]) & inside[:, None] & (positions >= 0)
    index = positions.clamp(0, seq - 1)
    gathered = torch.gather(logits, 1, index[:, :, None].expand(batch, span_len, vocab))
    return gathered, mask


def sequence_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, shift: int) -> torch.Tensor:
    """CE(x, r): token-mean cross-entropy per sequence, then the batch mean (release `cross_entropy`).

    logits: [batch, seq, vocab]; labels: [batch, seq] with IGNORE_INDEX off the rationale (EOS included
    in the rationale). `shift=1`: logits at t predict labels[t + 1] (decoder-only); 0: labels[t].
    Sequences without a supervised token are left out of the batch mean.
    """
    if shift:
        logits, labels = logits[:, :-shift], labels[:, shift:]
    token_nll = F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)).transpose(1, 2),
        labels,
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )  # [batch, seq]
    counts = (labels != IGNORE_INDEX).sum(-1)
    keep = counts > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return (token_nll.sum(-1)[keep] / counts[keep]).mean()


@dataclass
class McckdLoss:
    total: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor


def mcckd_loss(
    logits_a: torch.Tensor,
    labels_a: torch.Tensor,
    spans_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels_b: torch.Tensor,
    spans_b: torch.Tensor,
    alpha: float,
    temperature: float,
    shift: int = 1,
    max_seq_len: int | None = None,
) -> McckdLoss:
    """L = L_CE + alpha L_KL over a batch of questions, each under two rationales a and b.

    logits_*: [batch, seq_*, vocab]; labels_*: [batch, seq_*]; spans_*: [batch, 2] answer-token
    positions (start, end). The two spans of an item must have equal length (the KL is position-aligned;
    the release asserts it). Returns the total and its parts (ce, kl unweighted).
    """
    lengths_a, lengths_b = spans_a[:, 1] - spans_a[:, 0], spans_b[:, 1] - spans_b[:, 0]
    if not torch.equal(lengths_a, lengths_b):
        raise ValueError(
            f"mcckd_loss: answer spans differ in length under the two rationales "
            f"({lengths_a.tolist()} vs {lengths_b.tolist()})"
        )
    ce = 0.5 * (
        sequence_cross_entropy(logits_a, labels_a, shift) + sequence_cross_entropy(logits_b, labels_b, shift)
    )
    span_len = max(int(lengths_a.max()), 1) if lengths_a.numel() else 1
    span_a, mask_a = gather_span_logits(logits_a, spans_a, span_len, shift, max_seq_len)
    span_b, mask_b = gather_span_logits(logits_b, spans_b, span_len, shift, max_seq_len)
    kl = answer_consistency_kl(span_a, span_b, mask_a & mask_b, temperature)
    return McckdLoss(total=ce + alpha * kl, ce=ce, kl=kl)
