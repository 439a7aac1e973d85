"""Proxy-KD's stages, each taking a task (`data.markov_task` / `data.real_task`), never a scale.

    rows = teacher_stage(task, cfg, root)                       # the teacher's answers, cached JSONL
    d_w, d_p, d_s = split_rows(rows, cfg.split, seed)           # 10 / 45 / 45 %
    proxies = proxy_stage(task, cfg, d_w, d_p, seed, root)      # papers/proxykd/proxy.py
    targets = targets_stage(task, cfg, proxy, d_s, folder)      # offline top-k logits + mean log-prob on D_s
    metrics = student_stage(task, cfg, arm, data, targets, seed, folder)   # one arm, evaluated

Every stage is cached under runs/proxykd/<scale>/ by the hash of its settings (common.stages): a model
folder holds `model.safetensors` (its trainable weights) written last; the proxy's iterations are saved one
by one, so a killed run resumes at the next iteration; the proxy targets are written a chunk at a time.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict
from pathlib import Path

import torch

from common.stages import cached_json, stage_hash, temp_path
from common.train import pad_collate
from papers.proxykd.config import ProxyKDConfig
from papers.proxykd.data import Task
from papers.proxykd.proxykd import (
    nll_loss,
    proxy_sample_weights,
    sequence_logprobs,
    slim_to_dense,
    student_loss,
    token_logprobs,
)
from papers.proxykd.teacher import teacher_answers
from papers.proxykd.training import BadSetting, fit_model, load_model

log = logging.getLogger(__name__)
ARMS = {
    # arm: (results method, student data, proxy, weighted KL)
    "sft": ("Vanilla black-box KD", "student", None, False),
    "proxykd": ("Proxy-KD", "student", "aligned", True),
    "unaligned": ("Proxy-KD (unaligned proxy)", "student", "warmup", True),
    "takd": ("TAKD", "student", "warmup", False),
    "no_pref": ("w/o preference optimization (NLL-only proxy alignment)", "student", "nll_only", True),
    "plain_kl": ("w/o weighted KL (plain KL)", "student", "aligned", False),
    "white_box": ("White-box KD (true teacher)", "student", "teacher", False),
    "sft_all": ("SFT on all teacher data", "all", None, False),
    "start": ("Student before distillation", "student", None, False),
}
"""The student arms. TAKD: plain KD from the teacher-assistant (the proxy after warm-up SFT only);
white_box: the calibration arm, full-vocabulary KL to the true teacher (only where its logits are known);
start: the student untrained (the reference level; useful where it starts from an SFT model)."""


# --- 1. the teacher's answers and the split ------------------------------------------------------------


def teacher_stage(task: Task, cfg: ProxyKDConfig, root: Path) -> list[dict]:
    """{id, prompt, answer} for every prompt the teacher answered (papers/proxykd/teacher.py)."""
    t = cfg.teacher
    # settings that do not change the answers, so changing them keeps the cache
    operational = ("chunk", "concurrency", "timeout_s", "max_retries", "backoff_s", "min_answered")
    what = {k: v for k, v in asdict(t).items() if k not in operational}
    key = stage_hash({"teacher": what, "task": task.key, "name": task.name})
    path = root / "teacher" / f"{task.name}-{key}.jsonl"
    answers = teacher_answers(
        task.ids, task.teacher_prompts, task.ask, path, t.chunk, t.min_answered, f"proxykd teacher {t.model}"
    )
    prompts = dict(zip(task.ids, task.prompts))
    return [{"id": i, "prompt": prompts[i], "answer": answers[i]} for i in task.ids if i in answers]


def split_sizes(n: int, split) -> tuple[int, int, int]:
    if None not in (split.n_warmup, split.n_proxy, split.n_student):
        sizes = (split.n_warmup, split.n_proxy, split.n_student)
        if sum(sizes) > n:
            raise BadSetting(f"the split asks for {sum(sizes)} answers, the teacher gave {n}")
        return sizes
    w, p = math.floor(split.warmup * n), math.floor(split.proxy * n)
    return w, p, min(n - w - p, math.floor(split.student * n + 0.5))


def split_rows(rows: list[dict], split, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """D_w, D_p, D_s: a seeded shuffle cut at the configured shares (paper: 10 / 45 / 45 %)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    w, p, s = split_sizes(len(rows), split)
    pick = [rows[i] for i in order]
    return pick[:w], pick[w : w + p], pick[w + p : w + p + s]


# --- 3. offline proxy targets on D_s ---------------------------------------------------------------------


@torch.no_grad()
def targets_stage(task: Task, cfg: ProxyKDConfig, proxy: Path, encoded: list[dict], folder: Path) -> dict:
    """Per D_s example: the proxy's top-k token ids and logits at every position (teacher-forced on the
    teacher's answer) and the per-token mean log-prob of the teacher's tokens (full softmax), written a
    chunk of examples at a time (`part-<i>.pt`); plus the top-1 agreement with the teacher's tokens
    (App. A.2)."""
    k, chunk = cfg.student.top_k, 256
    model = None
    parts = []
    for i, start in enumerate(range(0, len(encoded), chunk)):
        path = folder / f"part-{i:05d}.pt"
        if not path.exists():
            if model is None:
                model = load_model(task, "proxy", proxy)
            part = {"top_ids": [], "top_logits": [], "mean_logp": [], "agree": 0, "targets": 0}
            collate = pad_collate(task.pad_id)
            for j in range(start, min(start + chunk, len(encoded)), 64):
                b = collate(encoded[j : min(j + 64, start + chunk, len(encoded))])
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
                if not 0 < k <= logits.shape[-1]:
                    raise BadSetting(f"student.top_k={k} must be in 1..{logits.shape[-1]} (the vocabulary)")
                values, ids = logits.topk(k, dim=-1)
                _, mask = token_logprobs(logits, b["labels"])
                part["mean_logp"] += sequence_logprobs(logits, b["labels"], "mean").tolist()
                part["agree"] += int(((ids[:, :-1, 0] == b["labels"][:, 1:]) & mask).sum())
                part["targets"] += int(mask.sum())
                for row, n in enumerate(b["attention_mask"].sum(-1).tolist()):
                    part["top_ids"].append(ids[row, :n].to(torch.int32).clone())
                    part["top_logits"].append(values[row, :n].clone())
            folder.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            torch.save(part, tmp)
            tmp.replace(path)
        parts.append(torch.load(path))
    out = {key: [x for p in parts for x in p[key]] for key in ("top_ids", "top_logits", "mean_logp")}
    out["top1_agreement"] = 100 * sum(p["agree"] for p in parts) / max(sum(p["targets"] for p in parts), 1)
    return out


# --- 4. the students -------------------------------------------------------------------------------------


def _student_collate(pad_id: int):
    pad = pad_collate(pad_id)

    def collate(examples):
        batch = pad([{k: e[k] for k in ("input_ids", "labels")} for e in examples])
        if "weight" in examples[0]:
            batch["weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float32)
        if "top_ids" in examples[0]:
            width, k = batch["input_ids"].shape[1], examples[0]["top_ids"].shape[-1]
            ids = torch.zeros(len(examples), width, k, dtype=torch.long)
            values = torch.zeros(len(examples), width, k)  # padding: finite, masked out of the KL
            for i, e in enumerate(examples):
                ids[i, : len(e["top_ids"])], values[i, : len(e["top_ids"])] = e["top_ids"], e["top_logits"]
            batch["top_ids"], batch["top_logits"] = ids, values
        return batch

    return collate


def _student_fn(task: Task, cfg: ProxyKDConfig, mode: str):
    st = cfg.student

    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if mode == "sft":
            loss = nll_loss(logits, batch["labels"])
            return loss, {"nll": loss.item()}
        if mode == "teacher":
            target, k, weights = task.white_box(batch["input_ids"]), logits.shape[-1], None
        else:
            target = slim_to_dense(batch["top_ids"], batch["top_logits"], logits.shape[-1]).to(logits.device)
            k, weights = st.top_k, batch.get("weight")
        return student_loss(logits, batch["labels"], target, weights, st.alpha, k, st.smoothing)

    return loss_fn


def student_stage(
    task: Task,
    cfg: ProxyKDConfig,
    arm: str,
    examples: list[dict],
    targets: dict | None,
    seed: int,
    folder: Path,
    force: bool = False,
) -> dict:
    """Train one student arm on its data (Eq. 11 with the arm's proxy targets and weights, or NLL), then
    evaluate it; `metrics.json` is written last."""
    method, _, proxy, weighted = ARMS[arm]
    st = cfg.student

    def run() -> dict:
        data = [dict(e) for e in examples]
        mode = "sft" if proxy is None else ("teacher" if proxy == "teacher" else "proxy")
        extra = {}
        if mode == "proxy":
            logps = torch.tensor(targets["mean_logp"], dtype=torch.float64)
            weights = proxy_sample_weights(logps, st.weight_scale) if weighted else torch.ones_like(logps)
            for e, w, ids, values in zip(data, weights.tolist(), targets["top_ids"], targets["top_logits"]):
                e.update(weight=w, top_ids=ids.long(), top_logits=values)
            extra = {"weight_mean": float(weights.mean()), "weight_sd": float(weights.std(unbiased=False))}
        model = task.new_model("student", seed)
        fit = (
            {"steps": 0}
            if arm == "start"
            else fit_model(
                model,
                data,
                _student_fn(task, cfg, mode),
                st.lr,
                st.batch_size,
                st.epochs,
                seed,
                folder,
                _student_collate(task.pad_id),
            )
        )
        metrics = {"arm": arm, "method": method, "seed": seed, **fit, **extra, "eval": task.evaluate(model)}
        log.info("proxykd %s seed %d %s: %s", task.name, seed, arm, metrics["eval"])
        return metrics

    return cached_json(folder / "metrics.json", force, run)
