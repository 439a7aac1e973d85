"""Q-RM's data: its own datasets (declared as data), the task builders every stage takes, and the pairs
sampled from the policy.

`DATASETS`: files of the official repository, mirror only (SOURCE.md of `../shared/data/qrm`): the GSM8K /
MATH test prompts, the MATH RL prompt stream and the held-out preference pairs; read with
`common.data.load_rows(DATASETS[name], split, data_dir)`.

A `Task` is what the stages see, whatever the scale: RL train prompts, the curve (validation) and test
problems with `grade(i, text)`, the RMs' held-out pairs and, for the toy world, its training pairs:
- `toy_task(cfg)`: the arithmetic world of `common/synthetic` (train / validation / test splits; pairs:
  chosen = a valid rationale, rejected = a flawed one with a wrong answer, `preference_pairs`);
- `real_task(cfg, name, data_dir)`: GSM8K or MATH (train: GSM8K train / the repo's MATH PPO stream; test:
  the repo's 1,319 / 4,926 or MATH500; curves on the first `data.val_problems` test problems, nothing is
  chosen on them), prompts in the policy's chat template, held-out pairs GSM8K 787 / MATH 2,291.
  Its training pairs come from the policy's own samples (`build_pairs`; the paper's pairs were never
  mirrored, their construction is UNCONFIRMED): `prefs.samples` responses per question at T = 1.0, graded
  against the label; every correct x wrong pair of a question is a candidate, at most
  `pairs_per_question` kept (seeded by question index); identical texts count once. Resumable: each
  finished chunk of questions appends its pairs to `pairs.jsonl` and then records the file's length in
  `progress.json`; a killed run cuts the file back to that length and goes on with the next chunk.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from common.data import instruction_rows, load_rows, mirror_only, pairwise_rows
from common.generation import Generator, SamplingParams
from common.models import load_tokenizer
from common.scoring import gsm8k_is_correct, math_is_correct
from common.stages import append_jsonl, atomic_write_json, read_json, read_jsonl, stage_hash
from common.synthetic.flaws import preference_pairs
from common.synthetic.world import make_splits
from papers.qrm.config import PrefsConfig, QRMConfig
from papers.qrm.reward_models import world_preference_pairs

DATASETS = {
    spec.name: spec
    for spec in (
        mirror_only("qrm-gsm8k", instruction_rows("number"), test="qrm/gsm8k/test/test.jsonl"),
        mirror_only(
            "qrm-math",
            instruction_rows("text"),
            test="qrm/math/test/test.jsonl",
            train="qrm/math/train/ppo/results.jsonl",
        ),
        mirror_only("qrm-gsm8k-pairwise", pairwise_rows(False), test="qrm/gsm8k/test/pairwise/results.jsonl"),
        mirror_only("qrm-math-pairwise", pairwise_rows(True), test="qrm/math/test/pairwise/results.jsonl"),
    )
}
SOURCES = {  # (task, split) -> (dataset, split)
    ("gsm8k", "train"): ("gsm8k", "train"),
    ("gsm8k", "test"): ("qrm-gsm8k", "test"),
    ("math", "train"): ("qrm-math", "train"),
    ("math", "test"): ("qrm-math", "test"),
    ("math500", "test"): ("math500", "test"),
}
PAIR_SETS = {"gsm8k": "qrm-gsm8k-pairwise", "math": "qrm-math-pairwise"}
EXPECTED_PAIRS = {"gsm8k": 787, "math": 2291}  # shared/data/qrm/SOURCE.md
BENCHMARKS = {"arith": "toy-arith", "gsm8k": "GSM8K", "math": "MATH", "math500": "MATH500"}


@dataclass(frozen=True)
class Problems:
    """Prompts as the policy sees them, the raw questions, the labels and the grader of one split."""

    prompts: list[str]
    questions: list[str]
    answers: list[str]
    check: Callable[[str, str], bool]  # (response text, label) -> correct

    def grade(self, i: int, text: str) -> bool:
        return bool(self.check(text, self.answers[i]))

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Task:
    name: str  # arith | gsm8k | math
    benchmark: str  # the test set's row label (published.csv / claims.yaml)
    val_benchmark: str  # the curve problems' row label
    train: Problems  # RL prompts (and the questions pairs are sampled for)
    val: Problems  # learning curves
    test: Problems  # the final rows
    heldout_pairs: list[dict]  # {prompt, chosen, rejected}: the RMs' pairwise accuracy
    chat_template: bool  # RMs encode the prompt in the chat template (real tasks)
    train_pairs: list[dict] | None = None  # toy: the world's; None: sampled from the policy (`build_pairs`)

    @property
    def key(self) -> str:
        """Cache key of the task's data (name and sizes)."""
        sizes = [len(self.train), len(self.val), len(self.test), len(self.heldout_pairs)]
        return stage_hash({"name": self.name, "n": sizes, "pairs": len(self.train_pairs or [])})


def grader(name: str, gsm8k_mode: str = "flexible") -> Callable[[str, str], bool]:
    """`check(response_text, label) -> correct?` of a task (GSM8K: `gsm8k_is_correct`; MATH: math-verify)."""
    if name in ("arith", "gsm8k"):
        return functools.partial(gsm8k_is_correct, mode=gsm8k_mode)
    if name in ("math", "math500"):
        return math_is_correct
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(BENCHMARKS)}")


def toy_task(cfg: QRMConfig) -> Task:
    """The arithmetic world's splits (the first `data.*_problems` of each) and its preference pairs."""
    splits, d = make_splits(), cfg.data
    check = grader("arith", d.gsm8k_mode)

    def problems(rows) -> Problems:
        prompts = [p.prompt() for p in rows]
        return Problems(prompts, prompts, [str(p.answer) for p in rows], check)

    train, val = splits["train"][: d.train_problems], splits["validation"][: d.val_problems]
    return Task(
        name="arith",
        benchmark=BENCHMARKS["arith"],
        val_benchmark="toy-arith-val",
        train=problems(train),
        val=problems(val),
        test=problems(splits["test"][: d.test_problems]),
        heldout_pairs=world_preference_pairs(preference_pairs(val, 0, d.pair_habit, d.pair_habit_share)),
        chat_template=False,
        train_pairs=world_preference_pairs(preference_pairs(train, 0, d.pair_habit, d.pair_habit_share)),
    )


def load_questions(name: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """[{question, answer}] of a task's split, duplicates dropped (`SOURCES`)."""
    if (name, split) not in SOURCES:
        raise ValueError(
            f"unknown dataset {name}/{split}; valid: {', '.join(f'{t}/{s}' for t, s in SOURCES)}"
        )
    dataset, part = SOURCES[(name, split)]
    rows = load_rows(DATASETS.get(dataset, dataset), part, data_dir)
    seen, out = set(), []
    for r in rows:
        if r["question"] not in seen:
            seen.add(r["question"])
            out.append({"question": r["question"], "answer": str(r["answer"])})
    return out


def load_pairs(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """{prompt, chosen, rejected} rows of the repo's held-out pair file of a task (the first `limit`)."""
    rows = load_rows(DATASETS[PAIR_SETS[name]], "test", data_dir)
    return [{"prompt": r["question"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows][:limit]


def format_prompt(tokenizer, question: str) -> str:
    """The question as the single user turn of the chat template, a leading BOS removed when the tokenizer
    adds one itself (so `tokenizer(prompt)` gives exactly the template's tokens, as `encode_pairs` does)."""
    if not getattr(tokenizer, "chat_template", None):
        return question
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return text.removeprefix(bos) if adds_bos else text


def real_task(cfg: QRMConfig, name: str, data_dir: str | Path | None = None) -> Task:
    """GSM8K or MATH (module doc), prompts in the chat template of the policy's tokenizer."""
    d, tokenizer = cfg.data, load_tokenizer(cfg.policy)
    test_name = name if name == "gsm8k" else d.math_test
    check = grader(test_name, d.gsm8k_mode)

    def problems(rows: list[dict]) -> Problems:
        questions = [r["question"] for r in rows]
        prompts = [format_prompt(tokenizer, q) for q in questions]
        return Problems(prompts, questions, [r["answer"] for r in rows], check)

    test = load_questions(test_name, "test", data_dir)
    return Task(
        name=name,
        benchmark=BENCHMARKS[test_name],
        val_benchmark=f"{BENCHMARKS[test_name]} (first {len(test[: d.val_problems])} test problems)",
        train=problems(load_questions(name, "train", data_dir)[: d.train_problems]),
        val=problems(test[: d.val_problems]),
        test=problems(test[: d.test_problems]),
        heldout_pairs=load_pairs(name, data_dir, d.rm_eval_pairs),
        chat_template=True,
    )


def question_pairs(question: str, texts: list[str], correct: list[bool], cap: int, seed: int) -> list[dict]:
    """Up to `cap` (correct, wrong) pairs of one question's responses, drawn without replacement."""
    good = list(dict.fromkeys(t for t, c in zip(texts, correct) if c))
    bad = list(dict.fromkeys(t for t, c in zip(texts, correct) if not c))
    candidates = list(itertools.product(good, bad))
    chosen = random.Random(seed).sample(candidates, min(cap, len(candidates)))
    return [{"prompt": question, "chosen": c, "rejected": r} for c, r in chosen]


def build_pairs(
    generator: Generator,
    problems: Problems,
    cfg: PrefsConfig,
    out: str | Path,
    name: str,
    progress: bool = True,
) -> dict:
    """Sample, grade and pair `problems` (module doc) into `out/pairs.jsonl`; return the counts.

    Resumes from `out/progress.json`. Raises ValueError (one line) when no pair could be built."""
    out, n = Path(out), len(problems)
    if not n:
        raise ValueError(f"prefs {name}: no questions to sample")
    settings = asdict(cfg) | {"n_questions": n}
    state = {"settings": settings, "chunks": [], "bytes": 0}
    if (out / "progress.json").exists():
        state = read_json(out / "progress.json")
        if state["settings"] != settings:
            raise ValueError(f"{out / 'progress.json'}: written with other settings; rerun with --force")
    pairs_path = out / "pairs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    with open(pairs_path, "a+b") as f:
        f.truncate(state["bytes"])  # drop a chunk appended after the last recorded one
    starts = range(0, n, cfg.chunk_questions)
    for index, start in enumerate(tqdm(starts, desc=f"prefs {name}", disable=not progress)):
        if index < len(state["chunks"]):
            continue
        rows = range(start, min(start + cfg.chunk_questions, n))
        params = SamplingParams(
            n=cfg.samples,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed * 1_000 + index,
        )
        texts: list[list[str]] = [[] for _ in rows]
        for o in generator.generate([problems.prompts[i] for i in rows], params):
            texts[o.prompt_index].append(o.text)
        stats = {"questions": len(rows), "samples": 0, "correct": 0, "all_correct": 0, "all_wrong": 0}
        records = []
        for i, outs in zip(rows, texts):
            correct = [problems.grade(i, t) for t in outs]
            stats["samples"] += len(outs)
            stats["correct"] += sum(correct)
            stats["all_correct"] += all(correct)
            stats["all_wrong"] += not any(correct)
            q, label = problems.questions[i], problems.answers[i]
            for pair in question_pairs(q, outs, correct, cfg.pairs_per_question, cfg.seed * 1_000_003 + i):
                records.append(pair | {"instruction": q, "label": label})
        stats["pairs"] = len(records)
        append_jsonl(pairs_path, records)
        state["chunks"].append(stats)
        state["bytes"] = pairs_path.stat().st_size
        atomic_write_json(out / "progress.json", state)
    counts = {k: sum(c[k] for c in state["chunks"]) for k in state["chunks"][0]}
    if counts["pairs"] == 0:
        raise ValueError(
            f"prefs {name}: 0 pairs from {counts['questions']} questions ({counts['all_correct']} with every sample "
            f"correct, {counts['all_wrong']} with none): sample more per question or use another policy"
        )
    return counts | {"accuracy": counts["correct"] / max(1, counts["samples"])}


def read_pairs(out: str | Path) -> list[dict]:
    """The pairs of a finished `build_pairs` folder."""
    return read_jsonl(Path(out) / "pairs.jsonl")
