"""Stage 1 of Proxy-KD: align the white-box proxy to the black-box teacher (spec "Stage 1", Eq. 3-6).

    proxies = proxy_stage(task, cfg, d_w, d_p, seed, root)   # {warmup, nll, nll_only, aligned}: model folders
    curves = proxy_evals(proxies, cfg.proxy.iterations)      # the test evaluation after each step

Each iteration is saved in its own folder (`iter-k/model.safetensors`, written last), so a killed run
resumes at the next iteration.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from common.stages import read_json, stage_hash
from common.train import pad_collate
from papers.proxykd.config import ProxyKDConfig
from papers.proxykd.data import Task
from papers.proxykd.proxykd import dpo_loss, nll_loss, sequence_logprobs
from papers.proxykd.training import encode_rows, fit_model, load_model, nll_fn, save_model


def _pair_collate(pad_id: int):
    pad = pad_collate(pad_id)

    def collate(examples):
        batch = pad([e["chosen"] for e in examples] + [e["rejected"] for e in examples])
        for key in ("ref_chosen", "ref_rejected"):
            batch[key] = torch.tensor([e[key] for e in examples])
        return batch

    return collate


def _dpo_fn(beta: float, reduction: str, preference: bool):
    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        n = batch["ref_chosen"].shape[0]
        nll = nll_loss(logits[:n], batch["labels"][:n])  # Eq. 3 on the teacher's answers
        if not preference:
            return nll, {"nll": nll.item()}
        lp = sequence_logprobs(logits, batch["labels"], reduction)
        pref = dpo_loss(
            lp[:n], lp[n:], batch["ref_chosen"].to(lp.dtype), batch["ref_rejected"].to(lp.dtype), beta
        )
        return nll + pref, {"nll": nll.item(), "dpo": pref.item()}  # Eq. 6: equal weights (code)

    return loss_fn


@torch.no_grad()
def _sequence_logps(model, examples: list[dict], pad_id: int, reduction: str, batch: int = 64) -> list[float]:
    collate, out = pad_collate(pad_id), []
    model.eval()
    for start in range(0, len(examples), batch):
        b = collate(examples[start : start + batch])
        device = next(model.parameters()).device
        logits = model(
            input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)
        ).logits
        out += sequence_logprobs(logits, b["labels"].to(device), reduction).tolist()
    return out


def proxy_stage(
    task: Task,
    cfg: ProxyKDConfig,
    d_w,
    d_p,
    seed: int,
    root: Path,
    wanted: tuple[str, ...] = ("nll_only", "aligned"),
) -> dict[str, Path]:
    """Folders of the proxies: `warmup` (SFT on D_w: the unaligned proxy), `nll` (+ the NLL epochs on D_p),
    and of those `wanted`: `nll_only` (+ the K iterations without the preference loss) and `aligned`
    (+ K iterations of NLL + DPO, Eq. 6)."""
    pc = cfg.proxy
    base = {"task": task.key, "proxy": asdict(pc), "split": asdict(cfg.split), "seed": seed, "v": 1}
    warm_key = {**base, "proxy": [pc.model, pc.lora, pc.lora_r, pc.lr, pc.batch_size, pc.warmup_epochs]}
    warm = root / "proxy" / f"warmup-s{seed}-{stage_hash(warm_key)}"
    if not (warm / "model.safetensors").exists():
        model = task.new_model("proxy", seed)
        fit = fit_model(
            model,
            encode_rows(task, d_w, "D_w"),
            nll_fn,
            pc.lr,
            pc.batch_size,
            pc.warmup_epochs,
            seed,
            warm,
            pad_collate(task.pad_id),
        )
        save_model(model, warm, {"stage": "warmup", **fit, "eval": _proxy_eval(task, cfg, model)})
    nll = root / "proxy" / f"nll-s{seed}-{stage_hash({**base, 'stage': 'nll'})}"
    encoded = encode_rows(task, d_p, "D_p")
    if not (nll / "model.safetensors").exists():  # the NLL epochs on D_p, shared by both alignments
        model = load_model(task, "proxy", warm)
        fit = {}
        if pc.nll_epochs:
            collate = pad_collate(task.pad_id)
            fit = fit_model(model, encoded, nll_fn, pc.lr, pc.batch_size, pc.nll_epochs, seed, nll, collate)
        save_model(model, nll, {"stage": "nll", **fit, "eval": _proxy_eval(task, cfg, model)})
    out = {"warmup": warm, "nll": nll}
    for name, preference in (("nll_only", False), ("aligned", True)):
        if name not in wanted:  # the alignments no arm of this run needs are not trained
            continue
        folder = root / "proxy" / f"{name}-s{seed}-{stage_hash(base)}"
        out[name] = _align(task, cfg, warm, nll, d_p, encoded, seed, folder, preference)
    return out


def _align(
    task: Task,
    cfg: ProxyKDConfig,
    warm: Path,
    start: Path,
    d_p,
    encoded,
    seed: int,
    folder: Path,
    preference: bool,
) -> Path:
    """K iterations from the proxy in `start`: the previous proxy samples one answer per prompt
    (rejected), the teacher's answer is chosen, reference log-probs from the previous proxy (or the
    warm-up one), and NLL (+ DPO) on the pairs. Iteration k is saved in `folder/iter-k`; the last is
    returned (`start` when K = 0)."""
    pc = cfg.proxy
    final = folder / f"iter-{pc.iterations}"
    if pc.iterations == 0 or (final / "model.safetensors").exists():
        return final if pc.iterations else start
    prev = start
    reference = load_model(task, "proxy", warm) if pc.reference == "warmup" else None
    chunks = _chunks(len(d_p), pc.iterations if pc.chunked else 1)
    for k in range(1, pc.iterations + 1):
        here = folder / f"iter-{k}"
        if (here / "model.safetensors").exists():
            prev = here
            continue
        model = load_model(task, "proxy", prev)
        idx = chunks[(k - 1) % len(chunks)]
        rows = [d_p[i] for i in idx]
        chosen = [encoded[i] for i in idx]
        rejected_text = task.sample(model, [r["prompt"] for r in rows], seed * 1000 + k, pc)
        rejected = [task.encode(r["prompt"], t) for r, t in zip(rows, rejected_text)]
        ref = reference or model  # default: the previous proxy, before this iteration's updates (paper)
        ref_c = _sequence_logps(ref, chosen, task.pad_id, pc.logp)
        ref_r = _sequence_logps(ref, rejected, task.pad_id, pc.logp)
        pairs = [
            {"chosen": c, "rejected": r, "ref_chosen": a, "ref_rejected": b}
            for c, r, a, b in zip(chosen, rejected, ref_c, ref_r)
        ]
        fit = fit_model(
            model,
            pairs,
            _dpo_fn(pc.beta, pc.logp, preference),
            pc.dpo_lr or pc.lr,
            pc.batch_size,
            pc.epochs_per_iteration,
            seed + k,
            here,
            _pair_collate(task.pad_id),
        )
        save_model(
            model,
            here,
            {
                "stage": f"iteration {k}",
                "preference": preference,
                **fit,
                "eval": _proxy_eval(task, cfg, model),
            },
        )
        prev = here
    return prev


def _proxy_eval(task: Task, cfg: ProxyKDConfig, model) -> dict:
    return task.evaluate(model) if cfg.eval.proxies else {}


def _chunks(n: int, k: int) -> list[list[int]]:
    size = math.ceil(n / k)
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def proxy_evals(proxies: dict[str, Path], iterations: int) -> dict[str, list[dict]]:
    """The test evaluation after each alignment step of the `nll_only` and `aligned` proxies, the warm-up
    first (x = 0: warm-up, 1: the NLL epochs on D_p, 1 + k: iteration k), for the plots and provenance."""
    first = [read_json(proxies[k] / "info.json")["eval"] for k in ("warmup", "nll")]
    return {
        name: first
        + [
            read_json(proxies[name].parent / f"iter-{k}" / "info.json")["eval"]
            for k in range(1, iterations + 1)
        ]
        for name in ("nll_only", "aligned")
        if name in proxies
    }
