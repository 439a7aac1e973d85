"""MCC-KD at the `small` and `paper` scales: real teacher rationales, both students, ID and OOD evaluation.

    make reproduce PAPER=mcckd SCALE=small          # = python -m common.reproduce mcckd --scale small
    python -m papers.mcckd.scaled --scale small --stage teacher   # only the teacher samples (own process)
    accelerate launch --config_file papers/mcckd/configs/zero3.yaml -m common.reproduce mcckd --scale paper

Stages, each cached under runs/mcckd/<scale>/ (a killed run resumes; `force` reruns):
1. teacher rationales per training set (`scaled_data`): SVAMP's 10 released ones, else K sampled per
   question from the preset's teacher (vLLM on CUDA, HF elsewhere, or an OpenAI-compatible endpoint);
2. correctness + Jaccard filters, the answer sentence and the answer spans (student tokenizer);
3. per seed, CoT-KD (CE) and MCC-KD students (`distill.py`: LoRA or full, decoder-only or FlanT5),
   a checkpoint every `eval_every` steps, the best by dev accuracy (strict) kept as `best.safetensors`;
4. greedy decoding of the test splits: ID = the trained set's test split, OOD = the other sets with the
   same answer kind (numbers; CSQA only for a CSQA student), strict and flexible extractors; per-sample
   outputs in `samples-<set>.jsonl`; then `results/<scale>/` through `common.results.write_results`.
Which OOD pairs the paper used is UNCONFIRMED (spec "Evaluation"); ours: every other same-kind set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.models import add_lora, load_config, load_tokenizer, resolve
from common.results import write_results
from common.synthetic.tokenizer import runs_dir
from common.train import TrainConfig
from papers.mcckd.config import McckdConfig, get_config
from papers.mcckd.data import encode_records, svamp_prompt
from papers.mcckd.distill import (
    ce_loss_fn,
    greedy_texts,
    mcckd_loss_fn,
    pair_items,
    single_items,
    to_seq2seq,
    train_and_select,
)
from papers.mcckd.real_svamp import truncate
from papers.mcckd.scaled_data import (
    SETS,
    TEACHER_PROMPT,
    cached_ids,
    digest,
    eval_rows,
    make_records,
    mark_final_answer,
    set_name,
    teacher_endpoint,
    teacher_samples,
    train_questions,
)
from papers.mcckd.scaled_eval import decode, in_child, score

SLUG, METHODS = "mcckd", ("CoT-KD", "MCC-KD")


@dataclass(frozen=True)
class ScaledConfig:
    train_sets: tuple[str, ...] | None = None
    """Sets students are trained on (one student pair each); None: the preset's `train_dataset` plus SVAMP
    (ours: the two sets whose training questions are on disk)."""
    eval_sets: tuple[str, ...] = ("gsm8k", "asdiv", "svamp", "csqa")
    """The spec's four ID sets; each student is tested on the same-kind ones (ID + OOD)."""
    released_svamp: bool = True
    """SVAMP: the 10 released teacher rationales (spec) instead of sampling the preset's teacher."""
    limit_train: int | None = None
    limit_dev: int | None = None
    limit_test: int | None = None
    """None: whole splits (a smaller number is a quicker, non-comparable run)."""
    teacher_prompt: str = TEACHER_PROMPT
    teacher_chunk: int = 256
    """Questions per appended chunk of the teacher cache (the resume granularity)."""
    backend: str = "auto"
    """Teacher sampling and test decoding: auto (vLLM on CUDA, HF elsewhere) | hf | vllm."""
    max_epochs: float = 12.0
    """Caps the preset's steps at this many passes over a set's questions (release: 12 epochs), so that
    SVAMP's 642 questions are not seen 75 times under the small preset's 3,000 x 8."""
    vllm_memory: float = 0.4
    """vLLM gpu_memory_utilization for test decoding (ours: leaves room for the student in memory)."""


def scaled_settings(scale: str) -> ScaledConfig:
    """Stage settings of a scale; $MCCKD_LIMIT=N shrinks every split (a quick check of the whole path)."""
    limit = int(os.environ["MCCKD_LIMIT"]) if os.environ.get("MCCKD_LIMIT") else None
    return ScaledConfig(limit_train=limit, limit_dev=limit, limit_test=limit)


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def load_student(cfg: McckdConfig):
    """The student in fp32 (LoRA: frozen base in the CUDA default dtype, release fp16 base + fp32 adapters)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    st = cfg.student
    seq2seq = bool(getattr(load_config(st.model), "is_encoder_decoder", False))
    dtype = torch.bfloat16 if st.lora and torch.cuda.is_available() else torch.float32
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = loader.from_pretrained(resolve(st.model), dtype=dtype)
    if st.lora:
        model = add_lora(
            model, r=st.lora_r, alpha=st.lora_alpha, task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
        )
    return model, seq2seq


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def run_arm(cfg: McckdConfig, sc: ScaledConfig, data: dict, method: str, seed: int, out: Path) -> dict:
    """Train (or reload) one student, select on dev, decode the test splits; `metrics.json` is written last."""
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    tok, kind, n_questions = data["tok"], data["kind"], len(data["questions"])
    cap = math.ceil(sc.max_epochs * n_questions / cfg.student.questions_per_step)
    st = replace(cfg.student, steps=min(cfg.student.steps, cap))
    torch.manual_seed(seed)
    model, seq2seq = load_student(cfg)
    questions = [[to_seq2seq(ex) for ex in q] for q in data["questions"]] if seq2seq else data["questions"]
    dev = data["dev"]

    def dev_score(m) -> float:
        texts = greedy_texts(m, tok, [svamp_prompt(r["question"]) for r in dev], st.max_new_tokens, seq2seq)
        return score(texts, [r["answer"] for r in dev], kind)["strict"]

    best = out / "best.safetensors"
    if best.exists():  # training and dev selection finished before an interruption
        model.load_state_dict(load_file(str(best)), strict=False)
        selection = json.loads((out / "selection.json").read_text())
    else:
        if method == "MCC-KD":
            items, batch = pair_items(questions, st.replicas, seed), st.questions_per_step
            loss_fn = mcckd_loss_fn(st.alpha, st.temperature, seq2seq, st.max_seq_len)
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
            extra={"method": method, "alpha": st.alpha, "temperature": st.temperature},
        )
        selection = train_and_select(
            model, items, loss_fn, train_cfg, tok.pad_token_id, dev_score, st.eval_every
        )
        if not _main_process():  # other ranks of a multi-GPU launch: rank 0 saves and evaluates
            return {"method": method, "seed": seed}
        (out / "selection.json").write_text(json.dumps(selection))
        save_file(_trainable_state(model), str(out / "best.tmp"))
        os.replace(out / "best.tmp", best)  # last: its presence marks training + selection as done
    metrics = {"method": method, "seed": seed, "steps": st.steps, **selection, "tests": {}}
    prompts = [svamp_prompt(r["question"]) for rows in data["tests"].values() for r in rows]
    texts = decode(
        model, tok, prompts, st.max_new_tokens, seq2seq, out / "merged", sc.backend, sc.vllm_memory
    )
    texts = iter(texts)
    for name, rows in data["tests"].items():
        outputs = [next(texts) for _ in rows]
        metrics["tests"][name] = score(outputs, [r["answer"] for r in rows], SETS[name][1])
        with (out / f"samples-{name}.jsonl").open("w") as fh:
            for r, t in zip(rows, outputs):
                fh.write(json.dumps({"id": r["id"], "label": r["answer"], "output": t}) + "\n")
    (out / "metrics.tmp").write_text(json.dumps(metrics, indent=1))
    os.replace(out / "metrics.tmp", out / "metrics.json")
    return metrics


def rationale_rows(
    cfg: McckdConfig, sc: ScaledConfig, name: str, data_dir, root: Path, force: bool
) -> tuple[list[dict], dict]:
    """Stage 1: the training questions with their teacher rationales (released or sampled, cached)."""
    released = name == "svamp" and sc.released_svamp
    questions = train_questions(name, data_dir, released, sc.limit_train)
    source = {"released": True} if released else {"teacher": asdict(cfg.teacher), "prompt": sc.teacher_prompt}
    if not released:
        path = root / "teacher" / f"{name}-{digest(source)}.jsonl"
        if force:
            path.unlink(missing_ok=True)
        args = (
            questions,
            SETS[name][1],
            cfg.teacher,
            path,
            sc.backend,
            0,
            sc.teacher_chunk,
            sc.teacher_prompt,
        )
        todo = {q["id"] for q in questions} - cached_ids(path)
        if todo and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError(
                f"mcckd: {len(todo)} {name} questions lack teacher samples; run `python -m papers.mcckd.scaled "
                f"--scale {cfg.scale} --stage teacher` (one process) before the multi-GPU launch"
            )
        if todo and torch.cuda.is_available() and not teacher_endpoint(cfg.teacher):
            in_child(teacher_samples, *args)  # the teacher's GPU memory is freed before the students train
        samples = teacher_samples(*args)
        questions = [{**q, "rationales": [mark_final_answer(t) for t in samples[q["id"]]]} for q in questions]
    return questions, source


def prepare_set(cfg: McckdConfig, sc: ScaledConfig, name: str, data_dir, root: Path, force: bool) -> dict:
    """Stages 1-2 for one training set: teacher rationales, records, encoded questions, dev/test rows."""
    kind = SETS[name][1]
    questions, source = rationale_rows(cfg, sc, name, data_dir, root, force)
    records, stats = make_records(name, questions, cfg.filters)
    tok = load_tokenizer(cfg.student.model)
    fil = cfg.filters
    encoded = encode_records(tok, records, svamp_prompt, fil.answer_span, template=fil.answer_template)
    encoded = [[truncate(ex, cfg.student.max_seq_len) for ex in q] for q in encoded]
    stats["encoded_questions"] = len(encoded)
    same_kind = [s for s in map(set_name, sc.eval_sets) if SETS[s][1] == kind]
    tests = {
        s: eval_rows(s, "test", data_dir, sc.limit_test) for s in [name] + [s for s in same_kind if s != name]
    }
    return {
        "tok": tok,
        "kind": kind,
        "questions": encoded,
        "stats": stats,
        "dev": eval_rows(name, "dev", data_dir, sc.limit_dev),
        "tests": tests,
        "key": digest({"source": source, "filters": asdict(fil), "n": len(questions)}),
    }


def arm_key(cfg: McckdConfig, sc: ScaledConfig, data: dict) -> str:
    """Cache key of a student arm: its data, student settings and evaluation splits (not the backend)."""
    blob = {"data": data["key"], "student": asdict(cfg.student), "tests": list(data["tests"])}
    return digest({**blob, "limits": (sc.limit_dev, sc.limit_test), "max_epochs": sc.max_epochs})


def result_rows(cfg: McckdConfig, train_set: str, arms: list[dict]) -> list[dict]:
    """`table` ID | OOD, `setting` = training set and seed, benchmark = the released set's name."""
    rows = []
    for m in arms:
        for name, acc in m["tests"].items():
            base = {
                "table": "ID" if name == train_set else "OOD",
                "setting": f"train {SETS[train_set][0]} seed {m['seed']}",
                "model": cfg.student.model,
                "method": m["method"],
                "benchmark": SETS[name][0],
            }
            rows.append({**base, "metric": "accuracy", "value": round(100 * acc["strict"], 2)})
            rows.append({**base, "metric": "accuracy (flexible)", "value": round(100 * acc["flexible"], 2)})
    return rows


def seed_summary(arms: list[dict]) -> dict[str, list[float]]:
    """Per method and test set: [mean, population std] of the strict accuracy (%) over the seeds."""
    out = {}
    for method in METHODS:
        for name in arms[0]["tests"] if arms else []:
            vals = [100 * m["tests"][name]["strict"] for m in arms if m["method"] == method]
            out[f"{method} {SETS[name][0]}"] = [
                round(statistics.mean(vals), 2),
                round(statistics.pstdev(vals), 2),
            ]
    return out


def reproduce_scaled(
    cfg: McckdConfig,
    force: bool = False,
    data_dir: str | None = None,
    sc: ScaledConfig | None = None,
    results_root: Path | None = None,
    stage: str = "all",
) -> Path:
    """Every stage for `cfg.scale`; returns results/<scale>/ (`results_root`: another repo root, for tests).

    `stage="teacher"` stops after the teacher samples and returns their folder."""
    sc = sc or scaled_settings(cfg.scale)
    root = runs_dir() / SLUG / cfg.scale
    train_sets = [set_name(s) for s in (sc.train_sets or (cfg.train_dataset, "svamp"))]
    train_sets = list(dict.fromkeys(train_sets))
    start, rows, extra = time.perf_counter(), [], {"sets": {}}
    for name in train_sets:
        if stage == "teacher":
            rationale_rows(cfg, sc, name, data_dir, root, force)
            continue
        data = prepare_set(cfg, sc, name, data_dir, root, force)
        arms = []
        for seed in cfg.seeds:
            for method in METHODS:
                out = root / name / f"{method}-s{seed}-{arm_key(cfg, sc, data)}"
                if force and _main_process():
                    shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True, exist_ok=True)
                arms.append(run_arm(cfg, sc, data, method, seed, out))
        if not _main_process():
            continue
        rows += result_rows(cfg, name, arms)
        extra["sets"][name] = {"data_stats": data["stats"], "summary": seed_summary(arms), "arms": arms}
    if stage == "teacher":
        return root / "teacher"
    if not _main_process():
        return root
    return write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=list(cfg.seeds),
        config={**asdict(cfg), "stages": asdict(sc)},
        wall_time_s=time.perf_counter() - start,
        grader="strict: release last-line last-number (CSQA: last A-G on the last line); flexible: HEAD "
        "GSM8KEvaluator (CSQA: last standalone letter) (papers/mcckd/rationales.py)",
        sampling={"eval": "greedy", "teacher": asdict(cfg.teacher), "teacher_prompt": sc.teacher_prompt},
        extra=extra,
        root=results_root,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--scale", default="small", choices=["small", "paper"])
    add("--stage", default="all", choices=["all", "teacher"], help="teacher: only the teacher samples")
    add("--train-sets", nargs="+", help=f"of {', '.join(SETS)} (default: the preset's set + svamp)")
    add("--limit", type=int, help="first N questions of every split (a quick check, not comparable)")
    add(
        "--backend", default="auto", choices=["auto", "hf", "vllm"], help="teacher sampling and test decoding"
    )
    add("--teacher", help="teacher model (HF id, folder or short name) instead of the preset's")
    add("--student", help="student model instead of the preset's (e.g. smollm2-135m-instruct on a CPU)")
    add("--steps", type=int, help="optimizer steps per student instead of the preset's")
    add("--eval-every", type=int, help="steps between dev checkpoints instead of the preset's")
    add("--max-new-tokens", type=int, help="greedy tokens at evaluation instead of the preset's 512")
    add("--seeds", type=int, nargs="+", help="instead of the preset's (0)")
    add("--data-dir", help="local mirror (default $REPRO_DATA_DIR, else ../shared/data)")
    add("--results-root", type=Path, help="write <root>/papers/mcckd/results/<scale>/ (default: this repo)")
    add("--force", action="store_true", help="rerun every stage (the teacher too)")
    args = parser.parse_args(argv)
    cfg = get_config(args.scale)
    student = {
        k: v
        for k, v in [
            ("model", args.student),
            ("steps", args.steps),
            ("eval_every", args.eval_every),
            ("max_new_tokens", args.max_new_tokens),
        ]
        if v is not None
    }
    cfg = replace(cfg, student=replace(cfg.student, **student), seeds=tuple(args.seeds or cfg.seeds))
    if args.teacher:
        cfg = replace(cfg, teacher=replace(cfg.teacher, model=args.teacher, endpoint=None))
    limits = {"limit_train": args.limit, "limit_dev": args.limit, "limit_test": args.limit}
    sc = replace(
        scaled_settings(args.scale),
        backend=args.backend,
        train_sets=tuple(args.train_sets) if args.train_sets else None,
        **(limits if args.limit else {}),
    )
    try:
        out = reproduce_scaled(cfg, args.force, args.data_dir, sc, args.results_root, args.stage)
    except (RuntimeError, ValueError) as err:
        parser.exit(1, f"error: {str(err).splitlines()[0]}\n")
    print(f"done: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
