"""The tasks LCO's RL runs take: prompts, reference answers and the rule verifier, toy or real.

- "arith": the toy arithmetic world of `common.synthetic` (train / validation / test splits; its answers
  end with a `#### n` line, graded strictly with `common.scoring.gsm8k_is_correct`).
- "gsm8k": GSM8K train prompts, the test split for the curve and the final Pass@1 (flexible extraction:
  an instruct model's last number); "math": the MATH train stream is not mirrored, so MATH-500's test
  problems are both curve and test set (UNCONFIRMED: the paper's training data is unknown), graded by
  `common.scoring.math_is_correct` (the spec's boxed-answer rule in spirit; math-verify underneath).
Real prompts are the question in the policy's chat template with a `\\boxed{}` instruction (ours).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.data import load_rows
from common.models import load_tokenizer
from common.scoring import gsm8k_is_correct, math_is_correct
from common.synthetic.world import make_splits

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Problems:
    prompts: list[str]
    answers: list[str]

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int | None) -> Problems:
        return Problems(self.prompts[:n], self.answers[:n])


@dataclass
class Task:
    name: str
    benchmark: str  # the row benchmark of the test split (published.csv's spelling for real tasks)
    train: Problems
    val: Problems
    test: Problems
    is_correct: Callable[[str, str], bool]  # (response text, reference answer) -> correct


def toy_task(val_problems: int, test_problems: int) -> Task:
    splits = make_splits()

    def problems(items) -> Problems:
        return Problems([p.prompt() for p in items], [str(p.answer) for p in items])

    return Task(
        name="arith",
        benchmark="toy-arith",
        train=problems(splits["train"]),
        val=problems(splits["validation"][:val_problems]),
        test=problems(splits["test"][:test_problems]),
        is_correct=lambda text, answer: gsm8k_is_correct(text, answer, "strict"),
    )


def chat_prompt(tokenizer, question: str) -> str:
    messages = [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def real_task(
    name: str, policy: str, val_problems: int, test_problems: int, data_dir: str | Path | None
) -> Task:
    tok = load_tokenizer(policy)

    def problems(rows: list[dict]) -> Problems:
        return Problems([chat_prompt(tok, r["question"]) for r in rows], [str(r["answer"]) for r in rows])

    if name == "gsm8k":
        test = problems(load_rows("gsm8k", "test", data_dir))
        train = problems(load_rows("gsm8k", "train", data_dir))
        check = lambda text, answer: gsm8k_is_correct(text, answer, "flexible")  # noqa: E731
        benchmark = "GSM8K"
    else:
        test = problems(load_rows("math500", "test", data_dir))
        train, check, benchmark = test, math_is_correct, "MATH500"
    return Task(name, benchmark, train, test.head(val_problems), test.head(test_problems), check)


def make_task(name: str, policy: str, val_problems: int, test_problems: int, data_dir=None) -> Task:
    if name == "arith":
        return toy_task(val_problems, test_problems)
    return real_task(name, policy, val_problems, test_problems, data_dir)
