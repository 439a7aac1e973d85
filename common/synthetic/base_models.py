"""Base models of the toy world: SFT of the student / mid / teacher presets, cached by config hash.

    path = get_base_model("student")   # trains on first use (student ~1 min, all three < 5 min on 2 cores)
    model = load_causal_lm(path); tok = load_tokenizer(path)

Each size is a `common.models` tiny preset trained from scratch with `common.train` on the world's
training problems (prompt `Question: ...\\nAnswer:`, target ` <rationale>\\n#### n</s>`, loss on the target
only). The cache key hashes the world config, the tokenizer, the preset and the training settings, so
a changed config retrains. `python -m common.synthetic.base_models --size all` trains the three and
prints greedy accuracy and pass@1 (temperature 1) on the test split (the table in README.md).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common import stages
from common.generation import HFGenerator, SamplingParams
from common.models import TINY_PRESETS, build_tiny_causal_lm, load_causal_lm, load_tokenizer
from common.scoring import gsm8k_is_correct
from common.synthetic.flaws import habit_rationales
from common.synthetic.tokenizer import tokenizer_key, world_tokenizer
from common.synthetic.world import DEFAULT_WORLD, Problem, WorldConfig, make_splits, valid_rationales
from common.train import TrainConfig, causal_lm_loss, pad_collate, train

log = logging.getLogger(__name__)
BASE_VERSION = 2  # 2: trained on TRAIN_THREADS threads whatever the caller's setting
# The trained weights depend on torch's CPU thread count (reductions split differently: measured, the
# student's weights differ between 1 and 2 threads and its validation Pass@1 by 2-6 points), so every base
# model trains on one fixed count: the same seed gives the same model, hence the same toy tables, in a
# pipeline's main process, in a worker, or under pytest.
TRAIN_THREADS = 1


@dataclass(frozen=True)
class BaseSpec:
    preset: str
    steps: int
    lr: float
    batch_size: int = 32
    rationales_per_problem: int = 2
    habit_rate: float = (
        0.0  # share of SFT rationales carrying `habit` where it applies (flaws.habit_rationales)
    )
    habit: str = "div-as-mul"


# Calibrated on 2 cores (README.md): the student lands inside the pass@1 window the RL and distillation
# papers need, and the teacher is far stronger.
SIZES = {
    "student": BaseSpec("tiny-student", steps=900, lr=3e-3),
    "mid": BaseSpec("tiny-mid", steps=550, lr=2e-3),
    "teacher": BaseSpec("tiny-teacher", steps=600, lr=3e-3),
    # The RL testbed's policy (README.md "RL testbed"): the student's preset trained twice as long (below its
    # capacity: at 900 steps, RL could not fix the habit fast enough), on an SFT corpus where 75 % of the
    # rationales stop one operation early, so its errors are one habit that an outcome reward sees and RL
    # can fix. Chosen on validation (rl_gate).
    "rl-student": BaseSpec("tiny-student", steps=1800, lr=3e-3, habit_rate=0.75, habit="skip-last"),
}


def sft_examples(
    tok,
    problems: list[Problem],
    per_problem: int,
    seed: int,
    habit_rate: float = 0.0,
    habit: str = "div-as-mul",
) -> list[dict]:
    """Tokenized (prompt, rationale) pairs with labels on the rationale and EOS only; with `habit_rate`,
    that share of the rationales carries `habit` where it applies (`flaws.habit_rationales`)."""
    rows = []
    for p in problems:
        prompt_ids = tok(p.prompt())["input_ids"]
        texts = (
            habit_rationales(p, per_problem, habit_rate, seed, habit)
            if habit_rate
            else valid_rationales(p, per_problem, seed=seed)
        )
        for text in texts:
            target = tok(" " + text + tok.eos_token, add_special_tokens=False)["input_ids"]
            rows.append({"input_ids": prompt_ids + target, "labels": [-100] * len(prompt_ids) + target})
    random.Random(seed).shuffle(rows)
    return rows


def base_key(size: str, cfg: WorldConfig, seed: int, vocab_size: int) -> str:
    blob = {
        "size": size,
        "spec": asdict(SIZES[size]),
        "preset": asdict(TINY_PRESETS[SIZES[size].preset]),
        "world": asdict(cfg),
        "seed": seed,
        "tokenizer": tokenizer_key(cfg, vocab_size),
        "v": BASE_VERSION,
    }
    return stages.stage_hash(blob)


def get_base_model(
    size: str, cfg: WorldConfig = DEFAULT_WORLD, seed: int = 0, vocab_size: int = 600, progress: bool = True
) -> Path:
    """Folder with the SFT model + tokenizer (save_pretrained), training it first if it is not cached."""
    if size not in SIZES:
        raise ValueError(f"unknown base model size {size!r}; valid: {', '.join(SIZES)}")
    out = stages.runs_dir() / "base" / f"{size}-{base_key(size, cfg, seed, vocab_size)}"
    if (out / "model" / "config.json").exists():
        return out / "model"
    out.mkdir(parents=True, exist_ok=True)
    # Several pipelines may ask for the same base model at once: one trains, the others wait and reuse it.
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "model" / "config.json").exists():
            _train_base(size, out, cfg, seed, vocab_size, progress)
    return out / "model"


def _train_base(size: str, out: Path, cfg: WorldConfig, seed: int, vocab_size: int, progress: bool) -> None:
    spec = SIZES[size]
    tok = world_tokenizer(cfg, vocab_size)
    data = sft_examples(
        tok, make_splits(cfg)["train"], spec.rationales_per_problem, seed, spec.habit_rate, spec.habit
    )
    model = build_tiny_causal_lm(spec.preset, vocab_size=len(tok), seed=seed, tokenizer=tok)
    work = out.with_name(out.name + ".work")
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        _sft(model, tok, data, spec, work, seed, progress)
    finally:
        torch.set_num_threads(threads)
    log.info("base model %s: %d SFT steps in %.0f s", size, spec.steps, time.perf_counter() - start)
    with stages.atomic_dir(out / "model", replace=False) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {"size": size, "spec": asdict(spec), "seed": seed, "train_examples": len(data)}
        stages.atomic_write_json(tmp / "sft.json", info | {"wall_s": round(time.perf_counter() - start, 1)})
    shutil.rmtree(work, ignore_errors=True)


def _sft(model, tok, data: list[dict], spec: BaseSpec, work: Path, seed: int, progress: bool) -> None:
    train(
        model,
        data,
        causal_lm_loss,
        TrainConfig(
            output_dir=str(work),
            max_steps=spec.steps,
            batch_size=spec.batch_size,
            lr=spec.lr,
            warmup_steps=spec.steps // 20,
            weight_decay=0.01,
            save_every=100,
            seed=seed,
            progress=progress,
        ),
        collate_fn=pad_collate(tok),
    )


def evaluate(
    model,
    tok,
    problems: list[Problem],
    samples: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    max_tokens: int = 96,
) -> float:
    """Mean accuracy over problems x samples (GSM8K strict grader on the `####` line)."""
    gen = HFGenerator(model, tok, batch_size=128)
    params = SamplingParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed)
    outs = gen.generate([p.prompt() for p in problems], params)
    correct = [gsm8k_is_correct(o.text, str(problems[o.prompt_index].answer)) for o in outs]
    return sum(correct) / len(correct)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="all", help=f"one of {', '.join(SIZES)} or all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-problems", type=int, default=500, help="test problems to evaluate on")
    parser.add_argument("--samples", type=int, default=4, help="samples per problem for pass@1 at T=1")
    args = parser.parse_args(argv)
    sizes = list(SIZES) if args.size == "all" else [args.size]
    cfg = WorldConfig()
    test = make_splits(cfg)["test"][: args.eval_problems]
    print(
        "| size | preset | params | SFT steps | train s | greedy acc | pass@1 (T=1) |\n|---|---|---|---|---|---|---|"
    )
    for size in sizes:
        path = get_base_model(size, cfg, args.seed)
        model, tok = load_causal_lm(path, dtype=torch.float32), load_tokenizer(path)
        info = json.loads((path / "sft.json").read_text())
        greedy = evaluate(model, tok, test, temperature=0)
        pass1 = evaluate(model, tok, test, samples=args.samples, temperature=1.0, seed=args.seed)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"| {size} | {SIZES[size].preset} | {params:,} | {SIZES[size].steps} | {info['wall_s']} | "
            f"{greedy:.3f} | {pass1:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
