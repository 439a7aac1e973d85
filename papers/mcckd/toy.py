"""The toy MCC-KD experiment on the common/synthetic arithmetic world (spec "Toy-scale check").

Design (README "Toy design"):
- Teacher rationales are SAMPLED from the toy teacher (`get_base_model("teacher")`, T = 1, K per
  question), so they are genuinely noisy (wrong lines that still end in the right number survive the
  correctness filter) and diverse (orders, wordings); then the correctness and Jaccard filters and the
  common answer sentence "Therefore, the answer is N .".
- Student: the toy student base model (a 0.17M-parameter SFT model) fine-tuned in full, CoT-KD vs MCC-KD,
  matched in rationale sequences per step, several seeds, best checkpoint by validation accuracy.
- ID test = the world's test split; OOD = problems with one more arithmetic line than training allows.
- Mechanism diagnostic: the mean symmetric KL between the student's answer distributions under two
  valid rationales of each test question (`answer_kl`).
Every stage is cached under runs/mcckd/toy/ (teacher samples resumable, each arm's metrics as JSON).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import torch

from common.generation import HFGenerator
from common.models import build_tiny_causal_lm, load_causal_lm, load_tokenizer
from common.synthetic.base_models import get_base_model
from common.synthetic.tokenizer import runs_dir
from common.synthetic.world import DEFAULT_WORLD, WorldConfig, make_splits, valid_rationales
from common.train import TrainConfig
from papers.mcckd.config import McckdConfig
from papers.mcckd.data import build_records, cached_samples, encode_records, sample_rationales
from papers.mcckd.distill import (
    accuracy,
    answer_kl,
    ce_loss_fn,
    greedy_texts,
    mcckd_loss_fn,
    pair_items,
    single_items,
    train_and_select,
)
from papers.mcckd.rationales import encode_example, normalise_rationale

TARGET_PREFIX = " "  # the world's target format: ` <rationale>` after `Answer:`


def toy_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def _key(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


def toy_data(cfg: McckdConfig, force: bool = False) -> dict:
    """Teacher samples (cached, resumable), filtered records, encoded training questions, eval splits."""
    toy, teach = cfg.toy, cfg.teacher
    splits = make_splits(DEFAULT_WORLD)
    train_problems = splits["train"][: toy.n_train]
    ood_world = WorldConfig(
        min_ops=toy.ood_ops, max_ops=toy.ood_ops, n_train=0, n_validation=0, n_test=toy.n_ood
    )
    teacher_dir = get_base_model("teacher")
    tok = load_tokenizer(teacher_dir)
    path = (
        runs_dir()
        / "mcckd"
        / "toy"
        / f"teacher-{_key({'teacher': asdict(teach), 'dir': teacher_dir.parent.name})}.jsonl"
    )
    if force:
        path.unlink(missing_ok=True)
    generator = None

    def sample(indices: list[int]) -> list[list[str]]:
        nonlocal generator
        if generator is None:
            generator = HFGenerator(load_causal_lm(teacher_dir, dtype=torch.float32), tok, batch_size=256)
        prompts = [train_problems[i].prompt() for i in indices]
        return sample_rationales(
            generator, prompts, teach.samples, teach.temperature, teach.max_tokens, seed=indices[0]
        )

    samples = cached_samples(path, [p.uid for p in train_problems], sample, chunk=50)
    rows = [
        {"id": p.uid, "question": p.question, "answer": str(p.answer), "rationales": samples[p.uid]}
        for p in train_problems
    ]
    fil = cfg.filters
    records, stats = build_records(rows, fil.k, fil.jaccard_threshold, fil.dedup)
    questions = encode_records(tok, records, toy_prompt, fil.answer_span, TARGET_PREFIX, fil.answer_template)
    stats["encoded_questions"] = len(questions)
    stats["noisy_kept"] = _noisy_fraction(records, {p.uid: p for p in train_problems})
    test = splits["test"][: toy.n_test]
    heldout = []
    for p in test:
        texts = valid_rationales(p, 2, seed=1)
        if len(texts) < 2:
            continue
        pair = [
            encode_example(
                tok,
                p.prompt(),
                TARGET_PREFIX + normalise_rationale(t, str(p.answer)),
                str(p.answer),
                fil.answer_span,
                fil.answer_template,
            )
            for t in texts
        ]
        if pair[0]["span"][1] - pair[0]["span"][0] == pair[1]["span"][1] - pair[1]["span"][0]:
            heldout.append({"a": pair[0], "b": pair[1]})
    evals = {
        "validation": splits["validation"][: toy.n_validation],
        "toy-arith": test,
        "toy-arith-ood": make_splits(ood_world)["test"],
    }
    # the arms' cache key: which teacher samples (their file) and which student base model they start from
    key = {"samples": path.stem, "student_base": get_base_model("student").parent.name}
    return {
        "tok": tok,
        "questions": questions,
        "stats": stats,
        "heldout": heldout,
        "evals": evals,
        "key": key,
    }


def _noisy_fraction(records: list[dict], problems: dict) -> float:
    """Share of kept rationales that no valid rationale of the problem matches line for line (arithmetic)."""
    noisy = total = 0
    for r in records:
        p = problems[r["id"]]
        good = {s.arithmetic() for order in p.orders() for g in (False, True) for s in p.steps(order, g)}
        for text in r["output"]:
            lines = re.findall(r"(-?\d+ [-+*/] -?\d+ = -?\d+)", text)
            total += 1
            noisy += any(line not in good for line in lines)
    return round(noisy / max(total, 1), 4)


def student_model(cfg: McckdConfig, tok, seed: int):
    name = cfg.student.model
    if name == "toy-student":
        return load_causal_lm(get_base_model("student"), dtype=torch.float32)
    if name == "toy-student-scratch":
        return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=seed, tokenizer=tok)
    raise ValueError(f"toy scale: unknown student {name!r}; valid: toy-student, toy-student-scratch")


def run_arm(
    cfg: McckdConfig,
    data: dict,
    method: str,
    alpha: float,
    temperature: float,
    seed: int,
    force: bool = False,
) -> dict:
    """Train one arm (cached by its settings) and return its metrics."""
    st = cfg.student
    blob = {
        "method": method,
        "alpha": alpha,
        "T": temperature,
        "seed": seed,
        "student": asdict(st),
        "filters": asdict(cfg.filters),
        "teacher": asdict(cfg.teacher),
        "toy": asdict(cfg.toy),
        "data": data["key"],
        "v": 2,
    }
    out = runs_dir() / "mcckd" / "toy" / f"{method}-a{alpha}-T{temperature}-s{seed}-{_key(blob)}"
    if (out / "metrics.json").exists() and not force:
        return json.loads((out / "metrics.json").read_text())
    tok, questions, evals = data["tok"], data["questions"], data["evals"]
    torch.manual_seed(seed)
    model = student_model(cfg, tok, seed)
    if method == "MCC-KD":
        items, loss_fn, batch = (
            pair_items(questions, st.replicas, seed),
            mcckd_loss_fn(alpha, temperature),
            st.questions_per_step,
        )
    else:
        items, loss_fn, batch = (
            single_items(questions, st.replicas, seed),
            ce_loss_fn(),
            2 * st.questions_per_step,
        )
    val = evals["validation"]

    def dev_score(m) -> float:
        texts = greedy_texts(m, tok, [p.prompt() for p in val], st.max_new_tokens)
        return accuracy(texts, [str(p.answer) for p in val])["strict"]

    start = time.perf_counter()
    train_cfg = TrainConfig(
        output_dir=str(out / "train"),
        max_steps=st.steps,
        batch_size=batch,
        lr=st.lr,
        lr_schedule="constant",
        max_grad_norm=1.0,
        seed=seed,
        progress=False,
        extra={"method": method, "alpha": alpha, "temperature": temperature},
    )
    selection = train_and_select(model, items, loss_fn, train_cfg, tok.pad_token_id, dev_score, st.eval_every)
    metrics = {"method": method, "alpha": alpha, "temperature": temperature, "seed": seed, **selection}
    metrics["validation"] = dict(selection["dev_curve"])[selection["best_step"]]
    for name in ("toy-arith", "toy-arith-ood"):
        problems = evals[name]
        texts = greedy_texts(model, tok, [p.prompt() for p in problems], st.max_new_tokens)
        metrics[name] = accuracy(texts, [str(p.answer) for p in problems])
    metrics["answer_kl"] = answer_kl(model, data["heldout"], tok.pad_token_id)
    metrics["wall_s"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _warm_base_model(name: str, threads: int) -> str:
    torch.set_num_threads(threads)
    return str(get_base_model(name))


def _arm_job(job: tuple) -> dict:
    cfg, data, method, alpha, temperature, seed, force = job
    torch.set_num_threads(cfg.toy.torch_threads)
    return run_arm(cfg, data, method, alpha, temperature, seed, force)


def _run_jobs(jobs: list[tuple], pool: ProcessPoolExecutor | None) -> list[dict]:
    """The arms of `jobs`, in order; in `pool`'s processes when given (each arm is cached and seeded by
    its own settings, so the result does not depend on which process runs it)."""
    if pool is None:
        return [_arm_job(job) for job in jobs]
    results = list(pool.map(_arm_job, jobs))
    for m in results:
        print(f"mcckd toy: {m['method']} alpha {m['alpha']} seed {m['seed']}: {m['wall_s']} s", flush=True)
    return results


def run_toy(cfg: McckdConfig, force: bool = False) -> dict:
    """Data, the alpha x T sweep on validation (seed 0), then both arms on every seed.

    With `cfg.toy.workers` > 1 the two base models train and the arms run in that many spawned processes
    of `cfg.toy.torch_threads` threads each (2 x 1 on a 2-core machine: about half the wall time of one
    process; reproduced.csv byte-identical to the sequential run's, README "How to run").
    """
    workers = cfg.toy.workers
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        if pool is not None:  # student and teacher base models at once (each is trained once, under a lock)
            list(pool.map(_warm_base_model, ["teacher", "student"], [cfg.toy.torch_threads] * 2))
        data = toy_data(cfg, force)
        grid = [(a, t) for a in cfg.toy.sweep_alpha for t in cfg.toy.sweep_temperature]
        sweep = _run_jobs([(cfg, data, "MCC-KD", a, t, cfg.seeds[0], force) for a, t in grid], pool)
        best = max(sweep, key=lambda m: m["validation"])  # ties: the first in grid order
        jobs = []
        for seed in cfg.seeds:
            jobs.append((cfg, data, "CoT-KD", 0.0, 1.0, seed, force))
            if seed != cfg.seeds[0]:  # seed 0's MCC-KD arm is the sweep's best
                jobs.append((cfg, data, "MCC-KD", best["alpha"], best["temperature"], seed, force))
        done = iter(_run_jobs(jobs, pool))
        arms = []
        for seed in cfg.seeds:
            arms.append(next(done))
            arms.append(best if seed == cfg.seeds[0] else next(done))
    finally:
        if pool is not None:
            pool.shutdown()
    return {
        "data_stats": data["stats"],
        "sweep": sweep,
        "chosen": {"alpha": best["alpha"], "temperature": best["temperature"]},
        "arms": arms,
    }
