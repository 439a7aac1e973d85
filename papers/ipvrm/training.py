"""The toy's small training loops: encoding `world.Trajectory` rows, SFT of the policy, the reward models
(IPVRM, Implicit PRM, DPO-RM as copies of pi_SFT), per-token log-ratios, and the policy's accuracies.

Loops are plain torch (Adam, one batch a step, response tokens only): at this size they are cheaper and
easier to read than an accelerate trainer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from common.generation import HFGenerator, SamplingParams
from common.rl import sequence_logprobs
from papers.ipvrm.ipvrm import dpo_rm_loss, implicit_prm_loss, ipvrm_loss
from papers.ipvrm.world import Trajectory, WorldSpec, is_correct, prompt_text

RM_KINDS = ("IPVRM", "Implicit PRM", "DPO-RM")


@dataclass(frozen=True)
class RMTrain:
    """One reward model's training settings (`rm_train`)."""

    steps: int
    batch: int
    lr: float
    seed: int
    beta: float
    margin: float = 0.0  # IPVRM only


def encode(
    tok, rows: list[Trajectory], spec: WorldSpec, eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [B, S], attention_mask [B, S], response_mask [B, S] bool), right-padded; the response
    (and its EOS when `eos`) is marked."""
    seqs, starts = [], []
    for r in rows:
        p = tok(prompt_text(r.operands, spec))["input_ids"]
        resp = tok(" ".join(r.response))["input_ids"] + ([tok.eos_token_id] if eos else [])
        seqs.append(p + resp)
        starts.append(len(p))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        resp[i, start : len(s)] = True
    return ids, att, resp


def _lm_loss(model, ids, att, resp) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    target, mask = ids[:, 1:], resp[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return nll[mask].mean()


def sft_train(
    model,
    tok,
    data: list[Trajectory],
    spec: WorldSpec,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    warmup=0,
):
    """Teacher-forced NLL on response tokens; Adam at `lr` (linear warm-up over `warmup` steps, then
    cosine to 0.1 lr when `warmup` > 0, else constant). Returns the per-step losses."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ids, att, resp = encode(tok, data, spec)
    losses = []
    model.train()
    for step in range(steps):
        if warmup:
            frac = min(1.0, (step + 1) / warmup)
            decay = 0.55 + 0.45 * torch.cos(torch.tensor(torch.pi * step / steps)).item()
            for group in opt.param_groups:
                group["lr"] = lr * frac * decay
        idx = torch.randint(0, len(data), (batch,), generator=g)
        loss = _lm_loss(model, ids[idx], att[idx], resp[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def response_logprobs(model, ids, att, rows: int = 256) -> torch.Tensor:
    """[B, S] log-probs of the taken tokens (position t: log p(ids_t | ids_<t)), 0 at position 0."""
    return sequence_logprobs(model, ids, att, rows=rows)


def log_ratios(rm, ref, ids, att, resp) -> torch.Tensor:
    """l_t = log pi_phi - log pi_ref on response tokens [B, S] (0 elsewhere), no gradient."""
    with torch.no_grad():
        diff = response_logprobs(rm, ids, att) - response_logprobs(ref, ids, att)
    return torch.where(resp, diff, torch.zeros_like(diff))


def _pairs(labels: torch.Tensor, rng: random.Random) -> list[tuple[int, int]]:
    pos = [i for i, y in enumerate(labels.tolist()) if y == 1]
    neg = [i for i, y in enumerate(labels.tolist()) if y == 0]
    rng.shuffle(pos)
    rng.shuffle(neg)
    return list(zip(pos, neg))


def rm_train(rm, ref, tok, data: list[Trajectory], spec: WorldSpec, kind: str, cfg: RMTrain) -> list[float]:
    """Train the copy `rm` of pi_SFT (`ref`, frozen) as `kind` on labelled trajectories: `cfg.steps`
    Adam steps at `cfg.lr`, batch `cfg.batch` (DPO-RM: `cfg.batch` // 2 chosen/rejected pairs)."""
    if kind not in RM_KINDS:
        raise ValueError(f"rm_train: kind {kind!r}; valid: {', '.join(RM_KINDS)}")
    ids, att, resp = encode(tok, data, spec)
    labels = torch.tensor([r.label for r in data])
    with torch.no_grad():
        ref_lp = response_logprobs(ref, ids, att)
    g, rng = torch.Generator().manual_seed(cfg.seed), random.Random(cfg.seed)
    opt = torch.optim.Adam(rm.parameters(), lr=cfg.lr)
    pairs = _pairs(labels, rng) if kind == "DPO-RM" else []
    losses = []
    rm.train()
    for _ in range(cfg.steps):
        if kind == "DPO-RM":
            pick = torch.randint(0, len(pairs), (max(cfg.batch // 2, 1),), generator=g).tolist()
            w = torch.tensor([pairs[i][0] for i in pick])
            lo = torch.tensor([pairs[i][1] for i in pick])
            lp_w = sequence_logprobs(rm, ids[w], att[w], rows=None)
            lp_l = sequence_logprobs(rm, ids[lo], att[lo], rows=None)
            loss = dpo_rm_loss(lp_w, ref_lp[w], resp[w], lp_l, ref_lp[lo], resp[lo], beta=cfg.beta)
        else:
            idx = torch.randint(0, len(data), (cfg.batch,), generator=g)
            lp = sequence_logprobs(rm, ids[idx], att[idx], rows=None)
            if kind == "IPVRM":
                loss = ipvrm_loss(lp, ref_lp[idx], resp[idx], labels[idx], beta=cfg.beta, margin=cfg.margin)
            else:
                loss = implicit_prm_loss(lp, ref_lp[idx], resp[idx], labels[idx], beta=cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    rm.eval()
    return losses


def step_accuracy(model, tok, rows: list[Trajectory], spec: WorldSpec) -> list[float]:
    """Teacher-forced greedy accuracy of each step's digit on (clean) evaluation-format rows."""
    ids, att, resp = encode(tok, rows, spec, eos=False)
    with torch.no_grad():
        pred = model(input_ids=ids, attention_mask=att).logits.argmax(-1)
    start = int(resp.int().argmax(1)[0])  # every prompt has the same length
    n = len(rows[0].response) // 2
    return [float((pred[:, start + 2 * k] == ids[:, start + 2 * k + 1]).float().mean()) for k in range(n)]


def policy_accuracy(model, tok, operands: list[tuple[int, ...]], spec: WorldSpec, n: int = 1, seed: int = 0):
    """Verifier accuracy of the policy's responses: greedy when n == 1, else n samples each at T = 1."""
    gen = HFGenerator(model, tok, batch_size=512, progress=False)
    params = SamplingParams(n=n, temperature=0.0 if n == 1 else 1.0, max_tokens=max_tokens(spec), seed=seed)
    outs = gen.generate([prompt_text(o, spec) for o in operands], params)
    return sum(is_correct(operands[o.prompt_index], o.text, spec) for o in outs) / len(outs)


def max_tokens(spec: WorldSpec) -> int:
    """The longest training-format response + EOS."""
    return 2 * spec.digits + 2 * spec.retries + 2 + 1
