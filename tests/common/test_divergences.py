"""common.divergences: each divergence against its plain formula in float64, chunking that changes
neither values nor gradients, and a peak-memory check at a real vocabulary size."""

import ctypes
import math
import re
import sys

import pytest
import torch

from common import divergences as D


def _logits(*shape, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, generator=g) * scale


@pytest.fixture()
def pq():
    p, q = _logits(3, 7, 41, seed=0), _logits(3, 7, 41, seed=1)
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[0, :] = False  # a whole sequence of padding
    return p, q, mask


def _plain_kl(p_logits, q_logits, t=1.0):
    log_p, log_q = (p_logits / t).log_softmax(-1), (q_logits / t).log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)  # [B, T]


def test_forward_and_reverse_kl_match_the_plain_formula(pq):
    p, q, mask = pq
    for chunk in (None, 1, 4, 5, 1024):
        assert D.forward_kl(p, q, mask, chunk_size=chunk).item() == pytest.approx(
            _plain_kl(p, q)[mask].mean().item(), abs=1e-6, rel=1e-12
        )
        assert D.reverse_kl(p, q, mask, chunk_size=chunk).item() == pytest.approx(
            _plain_kl(q, p)[mask].mean().item(), abs=1e-6, rel=1e-12
        )
    hot = D.forward_kl(p, q, mask, chunk_size=3, temperature=2.0).item()
    assert hot == pytest.approx(_plain_kl(p, q, 2.0)[mask].mean().item(), rel=1e-12)
    assert D.forward_kl(p, p, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert D.forward_kl(p, q, mask).item() > 0


def test_jsd_matches_the_plain_formula_and_is_bounded(pq):
    p, q, mask = pq
    P, Q = p.softmax(-1), q.softmax(-1)
    for beta in (0.5, 0.2):
        M = beta * P + (1 - beta) * Q
        plain = beta * (P * (P / M).log()).sum(-1) + (1 - beta) * (Q * (Q / M).log()).sum(-1)
        got = D.jsd(p, q, mask, beta=beta, chunk_size=4).item()
        assert got == pytest.approx(plain[mask].mean().item(), abs=1e-6, rel=1e-12)
    sym = D.jsd(p, q, mask).item()
    assert sym == pytest.approx(D.jsd(q, p, mask).item(), rel=1e-12) and 0 < sym < math.log(2)
    assert D.jsd(p, q, mask, beta=1.0).item() == 0.0
    with pytest.raises(ValueError, match="beta must be in"):
        D.jsd(p, q, mask, beta=1.5)


def test_topk_forward_kl_renormalises_the_kept_teacher_logits(pq):
    student, teacher, mask = pq
    k = 5
    top, index = teacher.topk(k, dim=-1)
    target = top.softmax(-1)  # softmax over the k kept logits: the other tokens get exactly 0
    plain = (target * (target.log() - student.log_softmax(-1).gather(-1, index))).sum(-1)
    got = D.topk_forward_kl(student, teacher, mask, k=k, chunk_size=2).item()
    assert got == pytest.approx(plain[mask].mean().item(), abs=1e-6, rel=1e-12)
    full = D.topk_forward_kl(student, teacher, mask, k=teacher.shape[-1]).item()  # k = V: the full KL
    assert full == pytest.approx(D.forward_kl(teacher, student, mask).item(), rel=1e-12)
    hot = D.topk_forward_kl(student, teacher, mask, k=k, teacher_temperature=2.0).item()
    target2 = (top / 2.0).softmax(-1)
    plain2 = (target2 * (target2.log() - student.log_softmax(-1).gather(-1, index))).sum(-1)
    assert hot == pytest.approx(plain2[mask].mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="k must be in 1..41"):
        D.topk_forward_kl(student, teacher, mask, k=42)


def test_topk_weights_per_sequence_and_per_token(pq):
    student, teacher, mask = pq
    per_pos = D.topk_forward_kl(student, teacher, mask, k=3, chunk_size=None, weights=torch.ones(3, 7))
    assert per_pos.item() == pytest.approx(D.topk_forward_kl(student, teacher, mask, k=3).item(), rel=1e-12)
    top, index = teacher.topk(3, dim=-1)
    target = top.softmax(-1)
    kl = (target * (target.log() - student.log_softmax(-1).gather(-1, index))).sum(-1)
    w = torch.tensor([0.0, 0.25, 0.9], dtype=torch.float64)  # one weight per sequence: Proxy-KD's w_sample
    expected = (kl * w[:, None])[mask].sum() / mask.sum()  # mean over target tokens, not over weights
    got = D.topk_forward_kl(student, teacher, mask, k=3, weights=w, chunk_size=4)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    zero = D.topk_forward_kl(student, teacher, mask, k=3, weights=torch.zeros(3))
    assert zero.item() == 0.0


def test_chunked_gradients_equal_the_plain_ones(pq):
    p, q, mask = pq
    for loss in (
        lambda s, t, c: D.forward_kl(t, s, mask, chunk_size=c),
        lambda s, t, c: D.reverse_kl(t, s, mask, chunk_size=c, temperature=1.5),
        lambda s, t, c: D.jsd(t, s, mask, chunk_size=c, beta=0.3),
        lambda s, t, c: D.topk_forward_kl(s, t, mask, k=4, chunk_size=c),
    ):
        grads = []
        for chunk in (None, 3):
            student = q.clone().requires_grad_(True)
            loss(student, p, chunk).backward()
            grads.append(student.grad)
        assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-12)
    # d KL(P || softmax(z)) / dz = (softmax(z) - P) at each counted position, / their number
    student = q.clone().requires_grad_(True)
    D.forward_kl(p, student, mask, chunk_size=2).backward()
    expected = (q.softmax(-1) - p.softmax(-1)) * mask[..., None] / mask.sum()
    assert torch.allclose(student.grad, expected, rtol=0, atol=1e-12)


def test_half_precision_is_computed_in_float32():
    p, q = _logits(2, 3, 17).to(torch.bfloat16), _logits(2, 3, 17, seed=1).to(torch.bfloat16)
    mask = torch.ones(2, 3, dtype=torch.bool)
    got = D.forward_kl(p, q, mask, chunk_size=2)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_plain_kl(p.double(), q.double()).mean().item(), rel=1e-5)


def test_bad_arguments_are_one_line_errors(pq):
    p, q, mask = pq
    with pytest.raises(ValueError, match="the mask selects no position"):
        D.forward_kl(p, q, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="mask has 6 positions, logits have 21"):
        D.forward_kl(p, q, mask[:, :2])
    with pytest.raises(ValueError, match="chunk_size must be positive or None"):
        D.forward_kl(p, q, mask, chunk_size=0)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def _peak_above_start(fn) -> int:
    """Peak resident memory during fn() above the resident memory at its start (Linux: the high-water
    mark is reset through /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from Linux's /proc")
def test_chunking_cuts_peak_memory_at_a_real_vocabulary():
    # glibc: serve every allocation >= 1 MiB from mmap, so a freed tensor goes back to the system and the
    # high-water mark counts exactly what is live (M_MMAP_THRESHOLD = -3; fixing it stops the dynamic rise).
    assert ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20) == 1
    vocab, positions = 49152, 256  # a Qwen/Llama-sized vocabulary; one [256, V] float64 tensor = 100 MB
    p, q = _logits(1, positions, vocab, seed=3), _logits(1, positions, vocab, seed=4)
    mask = torch.ones(1, positions, dtype=torch.bool)
    D.forward_kl(p[:, :4], q[:, :4], mask[:, :4], chunk_size=2)  # first-call set-up outside the measurement
    values = {}
    chunked = _peak_above_start(lambda: values.setdefault("chunked", D.forward_kl(p, q, mask, chunk_size=32)))
    plain = _peak_above_start(lambda: values.setdefault("plain", D.forward_kl(p, q, mask, chunk_size=None)))
    assert values["chunked"].item() == pytest.approx(values["plain"].item(), abs=1e-6)
    assert plain > 3 * p.numel() * p.element_size()  # the plain computation holds several [N, V] tensors
    assert chunked <= plain / 4, (chunked / 2**20, plain / 2**20)
