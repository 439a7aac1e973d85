"""Preference pairs for RM training from a policy's own samples, labelled by answer correctness.

Spec `shared/papers/qrm.md`, "Step-by-step algorithm" 1 and "Setup": the paper's pairs ({instruction,
chosen, rejected}, chosen = correct) were in zips never mirrored; how they were made is UNCONFIRMED
(presumably sampled responses labelled by correctness). This module makes them that way:
for each train question, `samples` responses at temperature 1.0 from the policy (`common.generation`:
vLLM on CUDA, HF elsewhere), graded against the label (GSM8K: `gsm8k_is_correct`, flexible = last
number, closest to the official evaluator for an instruct model; MATH: math-verify through
`math_is_correct`); every correct x wrong pair of the same question is a candidate, at most
`pairs_per_question` of them kept (seeded by question index); questions with no correct or no wrong
sample give no pair. Identical response texts count once.

Prompts are the questions in the chat template (the RL loop and the RMs see the same tokens, as
`reward_models.encode_pairs(chat_template=True)`); the pairs keep the raw question as `prompt`.
Resumable: questions are processed in chunks; each finished chunk appends its pairs to `pairs.jsonl`
and then records the file's byte length in `progress.json`, so a killed run truncates the file to the
last recorded length and goes on with the next chunk.

    python -m papers.qrm.prefs Qwen/Qwen2.5-0.5B-Instruct --dataset gsm8k --out runs/qrm/prefs-gsm8k
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from common.data import DataError, load_rows
from common.generation import Generator, SamplingParams
from common.scoring import gsm8k_is_correct, math_is_correct
from papers.qrm.data import DATASETS as QRM_DATASETS

TASKS = ("gsm8k", "math")
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@dataclass(frozen=True)
class PrefsConfig:
    """How pairs are sampled and kept (all ours: the paper's construction is UNCONFIRMED)."""

    samples: int = 8  # responses per question (ours)
    pairs_per_question: int = 4  # cap on correct x wrong pairs kept per question (ours)
    temperature: float = 1.0  # the RL rollouts' temperature (spec)
    max_tokens: int = 512  # new tokens per response
    questions: int | None = None  # the first N train questions (None: all)
    chunk_questions: int = 256  # questions per resumable chunk
    gsm8k_mode: str = "flexible"  # GSM8K answer extraction: last number (ours; see module doc)
    seed: int = 0


def data_root(data_dir: str | Path | None) -> str | Path | None:
    """`data_dir`, else $REPRO_DATA_DIR, else ../shared/data beside the checkout when it exists."""
    if data_dir is not None or os.environ.get("REPRO_DATA_DIR"):
        return data_dir
    return SHARED_DATA.resolve() if SHARED_DATA.is_dir() else None


def load_questions(task: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """[{question, answer}] of a task's split: GSM8K train = openai/gsm8k main, test = the repo's 1,319;
    MATH train = the unique questions of the repo's PPO prompt stream, test = the repo's 4,926;
    "math500" = the 500-problem MATH subset."""
    names = {
        ("gsm8k", "train"): ("gsm8k", "train"),
        ("gsm8k", "test"): ("qrm-gsm8k", "test"),
        ("math", "train"): ("qrm-math", "train"),
        ("math", "test"): ("qrm-math", "test"),
        ("math500", "test"): ("math500", "test"),
    }
    if (task, split) not in names:
        valid = ", ".join(f"{t}/{s}" for t, s in names)
        raise ValueError(f"unknown dataset {task}/{split}; valid: {valid}")
    name, part = names[(task, split)]
    rows = load_rows(QRM_DATASETS.get(name, name), part, data_root(data_dir))
    seen, out = set(), []
    for r in rows:
        if r["question"] not in seen:
            seen.add(r["question"])
            out.append({"question": r["question"], "answer": str(r["answer"])})
    return out


def grader(task: str, gsm8k_mode: str = "flexible") -> Callable[[str, str], bool]:
    """`grade(response_text, label) -> correct?` for a task."""
    if task == "gsm8k":
        return lambda text, label: gsm8k_is_correct(text, label, gsm8k_mode)
    if task in ("math", "math500"):
        return math_is_correct
    raise ValueError(f"unknown dataset {task!r}; valid: gsm8k, math, math500")


def format_prompt(tokenizer, question: str, chat_template: bool = True) -> str:
    """The prompt string the generators and the RL loop see: the question as the single user turn of
    the chat template, with a leading BOS removed when the tokenizer adds one itself (so that
    `tokenizer(prompt)` gives exactly the template's tokens, as `encode_pairs` encodes them)."""
    if not (chat_template and getattr(tokenizer, "chat_template", None)):
        return question
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return text.removeprefix(bos) if adds_bos else text


def question_pairs(question: str, texts: list[str], correct: list[bool], cap: int, seed: int) -> list[dict]:
    """Up to `cap` (correct, wrong) pairs of one question's responses, drawn without replacement."""
    good = list(dict.fromkeys(t for t, c in zip(texts, correct) if c))
    bad = list(dict.fromkeys(t for t, c in zip(texts, correct) if not c))
    candidates = list(itertools.product(good, bad))
    chosen = random.Random(seed).sample(candidates, min(cap, len(candidates)))
    return [{"prompt": question, "chosen": c, "rejected": r} for c, r in chosen]


def _read_progress(out: Path, settings: dict) -> dict:
    progress = out / "progress.json"
    if not progress.exists():
        return {"settings": settings, "chunks": [], "bytes": 0}
    state = json.loads(progress.read_text())
    if state["settings"] != settings:
        raise ValueError(f"{progress}: written with other settings; use another folder or --force")
    return state


def build_pairs(
    generator: Generator,
    tokenizer,
    questions: list[dict],
    task: str,
    cfg: PrefsConfig,
    out: str | Path,
    grade: Callable[[str, str], bool] | None = None,
    progress: bool = True,
) -> dict:
    """Sample, grade and pair (see module doc); write `out/pairs.jsonl`; return the counts.

    Resumes from `out/progress.json`. Raises ValueError (one line) when no pair could be built.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    questions = questions[: cfg.questions]
    if not questions:
        raise ValueError(f"prefs: no {task} questions to sample")
    grade = grade or grader(task, cfg.gsm8k_mode)
    settings = asdict(cfg) | {"task": task, "n_questions": len(questions)}
    state = _read_progress(out, settings)
    pairs_path = out / "pairs.jsonl"
    with open(pairs_path, "a+b") as f:
        f.truncate(state["bytes"])  # drop a chunk appended after the last recorded one
    starts = range(0, len(questions), cfg.chunk_questions)
    for index, start in enumerate(tqdm(starts, desc=f"prefs {task}", disable=not progress)):
        if index < len(state["chunks"]):
            continue
        chunk = questions[start : start + cfg.chunk_questions]
        prompts = [format_prompt(tokenizer, q["question"]) for q in chunk]
        params = SamplingParams(
            n=cfg.samples,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed * 1_000 + index,
        )
        texts: list[list[str]] = [[] for _ in chunk]
        for o in generator.generate(prompts, params):
            texts[o.prompt_index].append(o.text)
        stats = {"questions": len(chunk), "samples": 0, "correct": 0, "all_correct": 0, "all_wrong": 0}
        lines = []
        for i, (q, outs) in enumerate(zip(chunk, texts)):
            correct = [bool(grade(t, q["answer"])) for t in outs]
            stats["samples"] += len(outs)
            stats["correct"] += sum(correct)
            stats["all_correct"] += all(correct)
            stats["all_wrong"] += not any(correct)
            seed = cfg.seed * 1_000_003 + start + i
            for pair in question_pairs(q["question"], outs, correct, cfg.pairs_per_question, seed):
                lines.append(json.dumps(pair | {"instruction": q["question"], "label": q["answer"]}) + "\n")
        stats["pairs"] = len(lines)
        with open(pairs_path, "a", encoding="utf-8") as f:
            f.writelines(lines)
        state["chunks"].append(stats)
        state["bytes"] = pairs_path.stat().st_size
        tmp = out / "progress.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(out / "progress.json")
    counts = {k: sum(c[k] for c in state["chunks"]) for k in state["chunks"][0]}
    if counts["pairs"] == 0:
        raise ValueError(
            f"prefs {task}: 0 pairs from {counts['questions']} questions ({counts['all_correct']} with every "
            f"sample correct, {counts['all_wrong']} with none): "
            "sample more per question or use another policy"
        )
    return counts | {"accuracy": counts["correct"] / max(1, counts["samples"])}


def read_pairs(out: str | Path) -> list[dict]:
    """The pairs of a finished `build_pairs` folder."""
    with open(Path(out) / "pairs.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv: list[str] | None = None) -> int:
    from common.generation import make_generator
    from common.models import ModelNotFoundError, load_tokenizer

    parser = argparse.ArgumentParser(
        prog="python -m papers.qrm.prefs",
        description="Build Q-RM preference pairs (chosen = correct, rejected = wrong) from a policy's "
        "samples.",
    )
    parser.add_argument("policy", help="HF model name or folder that samples the responses")
    parser.add_argument("--dataset", choices=TASKS, default="gsm8k", help="train questions (default gsm8k)")
    parser.add_argument("--out", type=Path, required=True, help="folder for pairs.jsonl + progress.json")
    parser.add_argument("--samples", type=int, default=8, help="responses per question (default 8)")
    parser.add_argument("--pairs-per-question", type=int, default=4, help="cap per question (default 4)")
    parser.add_argument("--max-tokens", type=int, default=512, help="new tokens per response (default 512)")
    parser.add_argument("--questions", type=int, help="only the first N questions")
    parser.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto", help="generator")
    parser.add_argument("--data-dir", help="mirror root (default $REPRO_DATA_DIR, else ../shared/data)")
    args = parser.parse_args(argv)
    cfg = PrefsConfig(
        samples=args.samples,
        pairs_per_question=args.pairs_per_question,
        max_tokens=args.max_tokens,
        questions=args.questions,
    )
    try:
        questions = load_questions(args.dataset, "train", args.data_dir)
        tok = load_tokenizer(args.policy)
        counts = build_pairs(
            make_generator(args.policy, tok, backend=args.backend),
            tok,
            questions,
            args.dataset,
            cfg,
            args.out,
        )
    except (DataError, ModelNotFoundError, ValueError, OSError) as err:
        print(f"prefs: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
