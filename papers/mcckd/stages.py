"""MCC-KD's stages, each taking a task (`data.toy_task` / `data.real_task`), never a scale.

    samples = teacher_samples(task, cfg, root, force)    # K rationales per question, cached JSONL
    data = train_data(task, cfg, root, force)            # filters, answer sentence, spans (encoded)
    out = run_arms(task, cfg, data, root, force)          # alpha x T sweep (dev), both arms on every seed
    rows = result_rows(task, out["arms"])                 # one row per arm, seed, benchmark and metric

Every stage is cached under runs/mcckd/<scale>/ by the hash of its settings (common.stages): the teacher
file grows a chunk at a time (a killed run resumes after the last complete chunk); an arm writes
`selection.json` + `best.safetensors` once trained and selected, then `metrics.json` last.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM

from common.chat import ChatClient
from common.generation import HFGenerator, SamplingParams, make_generator
from common.models import add_lora, build_tiny_causal_lm, load_causal_lm, load_config, load_tokenizer, resolve
from common.stages import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    barrier,
    is_main_process,
    read_json,
    read_jsonl,
    stage_hash,
    worker_pool,
)
from common.train import TrainConfig
from papers.mcckd.config import McckdConfig
from papers.mcckd.data import Task, task_hash
from papers.mcckd.distill import (
    answer_kl,
    ce_loss_fn,
    decode,
    greedy_texts,
    in_child,
    mcckd_loss_fn,
    pair_items,
    single_items,
    to_seq2seq,
    train_and_select,
    use_vllm,
)
from papers.mcckd.rationales import encode_records, make_records, mark_final_answer, truncate

log = logging.getLogger(__name__)
METHODS = ("CoT-KD", "MCC-KD")


# --- 1. teacher rationales -----------------------------------------------------------------------------


def _chat(tokenizer, prompt: str) -> str:
    """The prompt in the teacher's chat template (plain text when the tokenizer has none)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def _local_sampler(task: Task, cfg: McckdConfig):
    """K samples per question from a local model (HF or vLLM); a chunk is seeded by its first index."""
    t, state = cfg.teacher, {}

    def sample(indices: list[int]) -> list[dict]:
        if "gen" not in state:
            if use_vllm(cfg.run.backend):
                state["gen"] = make_generator(task.teacher_model, backend="vllm")
            else:
                dtype = torch.float32 if t.dtype == "float32" else None
                model = load_causal_lm(task.teacher_model, dtype=dtype)
                state["gen"] = HFGenerator(model, load_tokenizer(task.teacher_model), batch_size=t.batch_size)
        gen = state["gen"]
        prompts = [_chat(gen.tokenizer, task.teacher_prompts[i]) for i in indices]
        params = SamplingParams(
            n=t.samples, temperature=t.temperature, max_tokens=t.max_tokens, seed=indices[0]
        )
        out: list[list[str]] = [[] for _ in prompts]
        for completion in gen.generate(prompts, params):
            out[completion.prompt_index].append(completion.text)
        return [{"rationales": texts} for texts in out]

    return sample


def _endpoint_sampler(task: Task, cfg: McckdConfig):
    """K chat completions per question from an OpenAI-compatible endpoint (common.chat, bounded
    concurrency); a failed call is recorded under `errors` and gives no rationale."""
    t = cfg.teacher
    client = ChatClient(
        t.endpoint,
        task.teacher_model,
        max_tokens=t.max_tokens,
        temperature=t.temperature,
        timeout_s=t.timeout_s,
        max_retries=t.max_retries,
        concurrency=t.concurrency,
    )

    def sample(indices: list[int]) -> list[dict]:
        replies = client.chat_many([task.teacher_prompts[i] for i in indices for _ in range(t.samples)])
        out = []
        for n in range(len(indices)):
            mine = replies[n * t.samples : (n + 1) * t.samples]
            record = {"rationales": [r.text for r in mine if r.ok]}
            if any(not r.ok for r in mine):
                record["errors"] = [r.error for r in mine if not r.ok]
            out.append(record)
        failed = sum(len(r.get("errors", [])) for r in out)
        if failed:
            log.warning(
                "mcckd teacher: %d of %d endpoint calls failed (recorded, not used)", failed, len(replies)
            )
        return out

    return sample


def teacher_path(task: Task, cfg: McckdConfig, root: Path) -> Path:
    key = stage_hash({"teacher": asdict(cfg.teacher), "model": task.key["teacher"], "set": task.name})
    return root / "teacher" / f"{task.name}-{key}.jsonl"


def teacher_samples(task: Task, cfg: McckdConfig, path: Path, force: bool = False) -> dict[str, list[str]]:
    """`teacher.samples` rationales per train question, cached in `path` (JSONL {key, rationales[,
    errors]}), appended `teacher.chunk` questions at a time: a killed run resumes after the last chunk.
    A question with a failed call keeps its other rationales for this run (the failed ones give none) and
    is asked again, all K, by the next run; its latest record counts."""
    if force:
        path.unlink(missing_ok=True)
    keys = [q["id"] for q in task.train]
    saved = {r["key"]: r for r in read_jsonl(path)}
    done = {key: r["rationales"] for key, r in saved.items()}
    todo = [i for i, key in enumerate(keys) if key not in saved or saved[key].get("errors")]
    if todo:
        sample = (_endpoint_sampler if cfg.teacher.endpoint else _local_sampler)(task, cfg)
        with tqdm(total=len(keys), initial=len(keys) - len(todo), desc="teacher") as bar:
            for start in range(0, len(todo), cfg.teacher.chunk):
                part = todo[start : start + cfg.teacher.chunk]
                records = [{"key": keys[i], **res} for i, res in zip(part, sample(part))]
                append_jsonl(path, records)
                done.update((r["key"], r["rationales"]) for r in records)
                bar.update(len(part))
    return {key: done[key] for key in keys}


def teacher_stage(task: Task, cfg: McckdConfig, root: Path, force: bool = False) -> list[dict]:
    """The train rows with rationales: released ones as they are, else the teacher's (sampled in a
    spawned process on CUDA, so its GPU memory is gone before the students train)."""
    if all("rationales" in q for q in task.train):
        return task.train
    path = teacher_path(task, cfg, root)
    if force and is_main_process():
        path.unlink(missing_ok=True)
    saved = {r["key"]: r for r in read_jsonl(path)}
    todo = {q["id"] for q in task.train if q["id"] not in saved or saved[q["id"]].get("errors")}
    if todo and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            f"mcckd: {len(todo)} {task.name} questions lack teacher samples; run `python -m common.reproduce "
            f"mcckd --scale {cfg.scale} --set run.stop_after=teacher` (one process) before the multi-GPU launch"
        )
    if todo and torch.cuda.is_available() and not cfg.teacher.endpoint:
        in_child(teacher_samples, task, cfg, path)
    samples = teacher_samples(task, cfg, path)
    mark = mark_final_answer if task.teacher_sentence else (lambda text: text)
    return [{**q, "rationales": [mark(t) for t in samples[q["id"]]]} for q in task.train]


# --- 2. records and encoded questions ------------------------------------------------------------------


def train_data(task: Task, cfg: McckdConfig, root: Path, force: bool = False) -> dict:
    """Correctness + Jaccard filters, the answer sentence and the answer spans (student tokenizer)."""
    rows = teacher_stage(task, cfg, root, force)
    fil = cfg.filters
    records, stats = make_records(
        rows, task.kind, fil.k, fil.jaccard_threshold, fil.dedup, fil.answer_template, task.name
    )
    encoded = encode_records(
        task.tokenizer, records, task.prompt_fn, fil.answer_span, task.target_prefix, fil.answer_template
    )
    encoded = [[truncate(ex, cfg.student.max_seq_len) for ex in q] for q in encoded]
    stats["encoded_questions"] = len(encoded)
    if task.audit is not None:
        stats["noisy_kept"] = task.audit(records)
    return {"questions": encoded, "stats": stats, "key": {"task": task_hash(task), "filters": asdict(fil)}}


# --- 3. students ---------------------------------------------------------------------------------------


def load_student(task: Task, cfg: McckdConfig, seed: int):
    """The student in fp32 (LoRA on CUDA: frozen base in bf16, release fp16 base + fp32 adapters)."""
    st, name = cfg.student, task.student_model
    if name == "toy-student-scratch":
        tok = task.tokenizer
        return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=seed, tokenizer=tok), False
    seq2seq = bool(getattr(load_config(name), "is_encoder_decoder", False))
    dtype = torch.bfloat16 if st.lora and torch.cuda.is_available() else torch.float32
    if seq2seq:
        model = AutoModelForSeq2SeqLM.from_pretrained(resolve(name), dtype=dtype)
    else:
        model = load_causal_lm(name, dtype=dtype)
    if st.lora:
        model = add_lora(
            model,
            r=st.lora_r,
            alpha=st.lora_alpha,
            target_modules="all-linear+head" if st.lora_head else "all-linear",
            task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
        )
    return model, seq2seq


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def train_arm(
    task: Task,
    cfg: McckdConfig,
    data: dict,
    method: str,
    alpha: float,
    temperature: float,
    seed: int,
    out: Path,
) -> dict:
    """Train (or reload) one student, select on dev, decode the test splits; `metrics.json` is written last."""
    if (out / "metrics.json").exists():
        return read_json(out / "metrics.json")
    st, tok, start = cfg.student, task.tokenizer, time.perf_counter()
    if st.max_epochs is not None:
        cap = math.ceil(st.max_epochs * len(data["questions"]) / st.questions_per_step)
        st = replace(st, steps=min(st.steps, cap))
    torch.manual_seed(seed)
    model, seq2seq = load_student(task, cfg, seed)
    questions = [[to_seq2seq(ex) for ex in q] for q in data["questions"]] if seq2seq else data["questions"]

    def dev_score(m) -> float:
        texts = greedy_texts(
            m, tok, [task.prompt_fn(r["question"]) for r in task.dev], st.max_new_tokens, seq2seq
        )
        return task.grade(texts, [r["answer"] for r in task.dev])["strict"]

    best = out / "best.safetensors"
    if best.exists():  # training and dev selection finished before an interruption
        model.load_state_dict(load_file(str(best)), strict=False)
        selection = read_json(out / "selection.json")
    else:
        if method == "MCC-KD":
            items, batch = pair_items(questions, st.replicas, seed), st.questions_per_step
            loss_fn = mcckd_loss_fn(alpha, temperature, seq2seq, st.max_seq_len)
        else:
            items, batch, loss_fn = (
                single_items(questions, st.replicas, seed),
                2 * st.questions_per_step,
                ce_loss_fn(seq2seq),
            )
        train_cfg = TrainConfig(
            output_dir=str(out / "train"),
            max_steps=st.steps,
            batch_size=batch,
            lr=st.lr,
            lr_schedule="constant",
            seed=seed,
            progress=cfg.run.workers <= 1,
            extra={"method": method, "alpha": alpha, "temperature": temperature},
        )
        selection = train_and_select(
            model, items, loss_fn, train_cfg, tok.pad_token_id, dev_score, st.eval_every
        )
        if not is_main_process():  # other ranks of a multi-GPU launch: the main one saves and evaluates
            return {"method": method, "seed": seed}
        atomic_write_json(out / "selection.json", selection)
        save_file(_trainable_state(model), str(out / "best.tmp"))
        os.replace(out / "best.tmp", best)  # its presence marks training + selection as done
    metrics = {"method": method, "alpha": alpha, "temperature": temperature, "seed": seed, "steps": st.steps}
    metrics |= {**selection, "validation": dict(selection["dev_curve"])[selection["best_step"]], "tests": {}}
    if task.heldout:  # before decoding: the vLLM path merges the LoRA weights in place
        metrics["answer_kl"] = answer_kl(model, task.heldout, tok.pad_token_id, seq2seq)
    prompts = [[task.prompt_fn(r["question"]) for r in s.rows] for s in task.tests]
    outputs = decode(
        model, tok, prompts, st.max_new_tokens, seq2seq, out / "merged", cfg.run.backend, cfg.run.vllm_memory
    )
    for s, texts in zip(task.tests, outputs):
        metrics["tests"][s.name] = task.grade(texts, [r["answer"] for r in s.rows], s.kind)
        lines = [{"id": r["id"], "label": r["answer"], "output": t} for r, t in zip(s.rows, texts)]
        atomic_write_text(out / f"samples-{s.name}.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    metrics["wall_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out / "metrics.json", metrics)
    log.info("mcckd %s: %s alpha %s seed %s: %s s", task.name, method, alpha, seed, metrics["wall_s"])
    return metrics


def arm_dir(
    task: Task,
    cfg: McckdConfig,
    data: dict,
    method: str,
    alpha: float,
    temperature: float,
    seed: int,
    root: Path,
) -> Path:
    blob = {
        "data": data["key"],
        "student": asdict(cfg.student),
        "teacher": asdict(cfg.teacher),
        "method": method,
    }
    blob |= {"alpha": alpha, "T": temperature, "seed": seed, "tests": [s.name for s in task.tests], "v": 3}
    return root / task.name / f"{method}-a{alpha}-T{temperature}-s{seed}-{stage_hash(blob)}"


def _arm_job(job: tuple) -> dict:
    task, cfg, data, method, alpha, temperature, seed, root, force = job
    out = arm_dir(task, cfg, data, method, alpha, temperature, seed, root)
    if force and is_main_process():
        shutil.rmtree(out, ignore_errors=True)
    return train_arm(task, cfg, data, method, alpha, temperature, seed, out)


def run_arms(task: Task, cfg: McckdConfig, data: dict, root: Path, force: bool = False) -> dict:
    """The alpha x T sweep of MCC-KD on dev (first seed), then CoT-KD and the best MCC-KD on every seed.

    With `run.workers` > 1 the arms run in that many spawned processes (each arm is cached and seeded by
    its own settings, so the results do not depend on which process runs it)."""
    st, first = cfg.student, cfg.seeds[0]
    grid = [
        (a, t) for a in cfg.sweep.alpha or (st.alpha,) for t in cfg.sweep.temperature or (st.temperature,)
    ]

    def job(method: str, a: float, t: float, seed: int) -> tuple:
        return (task, cfg, data, method, a, t, seed, root, force)

    with worker_pool(cfg.run.workers, cfg.run.torch_threads) as pool:
        sweep = list(pool.map(_arm_job, [job("MCC-KD", a, t, first) for a, t in grid]))
        barrier()  # every process picks the same best arm: the main one's metrics
        sweep = [
            read_json(arm_dir(task, cfg, data, "MCC-KD", a, t, first, root) / "metrics.json") for a, t in grid
        ]
        best = max(sweep, key=lambda m: m["validation"])  # ties: the first in grid order
        jobs = []
        for seed in cfg.seeds:
            jobs.append(job("CoT-KD", 0.0, 1.0, seed))
            if seed != first:  # the first seed's MCC-KD arm is the sweep's best
                jobs.append(job("MCC-KD", best["alpha"], best["temperature"], seed))
        done = iter(list(pool.map(_arm_job, jobs)))
    arms = []
    for seed in cfg.seeds:
        arms.append(next(done))
        arms.append(best if seed == first else next(done))
    return {
        "sweep": sweep,
        "chosen": {"alpha": best["alpha"], "temperature": best["temperature"]},
        "arms": arms,
    }


# --- 4. results ----------------------------------------------------------------------------------------


def result_rows(task: Task, arms: list[dict]) -> list[dict]:
    """One row per arm, seed, benchmark and metric; accuracy in points, `setting` ending in ` seed N`."""
    rows = []
    for m in arms:
        base = {
            "setting": f"{task.setting} seed {m['seed']}",
            "model": task.model_label,
            "method": m["method"],
        }
        for s in task.tests:
            acc, where = m["tests"][s.name], {"table": s.table, **base, "benchmark": s.benchmark}
            rows.append({**where, "metric": "accuracy", "value": round(100 * acc["strict"], 2)})
            rows.append({**where, "metric": "accuracy (flexible)", "value": round(100 * acc["flexible"], 2)})
        if "answer_kl" in m:
            where = {"table": task.tests[0].table, **base, "benchmark": task.tests[0].benchmark}
            rows.append({**where, "metric": "answer KL across rationales", "value": round(m["answer_kl"], 5)})
    return rows


def summary(task: Task, arms: list[dict]) -> dict:
    """Per method and benchmark: [mean, population sd] of the strict accuracy (points) over the seeds,
    the answer KL likewise, and the seeds on which MCC-KD beats CoT-KD."""
    out = {}
    for method in METHODS:
        ms = [m for m in arms if m["method"] == method]
        for s in task.tests:
            vals = [100 * m["tests"][s.name]["strict"] for m in ms]
            out[f"{method} {s.benchmark}"] = [
                round(statistics.mean(vals), 2),
                round(statistics.pstdev(vals), 2),
            ]
        kls = [m["answer_kl"] for m in ms if "answer_kl" in m]
        if kls:
            out[f"{method} answer KL"] = [round(statistics.mean(kls), 5), round(statistics.pstdev(kls), 5)]
    by_seed = {(m["method"], m["seed"]): m for m in arms}
    seeds = sorted({m["seed"] for m in arms})
    for s in task.tests:
        strict = {k: m["tests"][s.name]["strict"] for k, m in by_seed.items()}
        out[f"MCC-KD wins {s.benchmark}"] = sum(strict[("MCC-KD", x)] > strict[("CoT-KD", x)] for x in seeds)
    return out
