"""The answer extraction of the probable authors' evaluator (spec "Official implementation notes",
`src/evaluator.py` of homzer/llama-rlhf), and the two accuracies the spec asks for.

    gsm8k_answer("...Therefore, the answer is 1,234.")   # -> "1234"
    letter_answer("A or B? I think B")                    # -> "B" (the last standalone letter A-N)
    bbh_answer("... so the answer is Valid.", "Invalid")  # -> "valid" (the label's pattern, last match)
    score(outputs, labels, kind)   # {"accuracy": correct / all, "accuracy (answered)": correct / answered}

The code's accuracy is correct / answered (outputs with no extractable answer leave the denominator);
we report it beside the strict accuracy (correct / all).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NUMBER = re.compile(r"-?\d+(,?\d+)*(\.\d+)?")
WORDS = {
    w: str(i + 1)
    for i, w in enumerate(
        ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    )
}
_WORD = re.compile(r"\b(" + "|".join(WORDS) + r")\b", re.IGNORECASE)
LETTER = re.compile(r"\b([A-N])\b")
MMLU_LETTER = re.compile(r"([ABCD])\.")
BBH_PATTERNS = (
    re.compile(r"\b(True|False)\b", re.IGNORECASE),
    re.compile(r"\b(Valid|Invalid)\b", re.IGNORECASE),
    re.compile(r"\b(Yes|No)\b", re.IGNORECASE),
    re.compile(r"\b([A-Z])\b"),
)


def _clean_number(text: str) -> str:
    text = text.replace(",", "")
    return re.sub(r"\.0+$", "", text)


def gsm8k_answer(output: str) -> str | None:
    """The last number of the last line holding one; in a line, numbers of sentences that start with
    "Therefore"/"So" win over the others; number words one..twelve count as digits."""
    for line in reversed(output.split("\n")):
        line = _WORD.sub(lambda m: WORDS[m.group(1).lower()], line)
        sentences = re.split(r"(?<=[.!?])\s+", line)
        concluding = [s for s in sentences if s.strip().startswith(("Therefore", "So"))]
        for part in (" ".join(concluding), line):
            found = [m.group(0) for m in NUMBER.finditer(part)]
            if found:
                return _clean_number(found[-1])
    return None


def letter_answer(output: str) -> str | None:
    """ARC / CSQA / AGIEval: the last standalone letter A-N."""
    found = LETTER.findall(output)
    return found[-1] if found else None


def mmlu_answer(output: str) -> str | None:
    found = MMLU_LETTER.findall(output)
    return found[-1] if found else None


def bbh_answer(output: str, label: str) -> str | None:
    """BBH: the pattern the label matches (True/False, Valid/Invalid, Yes/No, one capital letter); the
    last match in the output, lower-cased."""
    for pattern in BBH_PATTERNS:
        if pattern.fullmatch(label.strip().strip("()")):
            found = pattern.findall(output)
            return found[-1].lower() if found else None
    return None


def extract(output: str, label: str, kind: str) -> str | None:
    if kind == "number":
        return gsm8k_answer(output)
    if kind == "letter":
        return letter_answer(output)
    if kind == "mmlu":
        return mmlu_answer(output)
    if kind == "text":
        return bbh_answer(output, label)
    raise ValueError(f"unknown answer kind {kind!r}; valid: number, letter, mmlu, text")


def is_correct(pred: str | None, label: str, kind: str) -> bool:
    if pred is None:
        return False
    if kind == "number":
        return pred == _clean_number(label.strip())
    return pred.lower() == label.strip().strip("()").lower()


def score(outputs: Sequence[str], labels: Sequence[str], kind: str) -> dict[str, float]:
    """Strict accuracy (correct / all) and the code's (correct / answered), both as fractions."""
    if len(outputs) != len(labels):
        raise ValueError(f"{len(outputs)} outputs for {len(labels)} labels")
    preds = [extract(o, str(y), kind) for o, y in zip(outputs, labels)]
    correct = sum(is_correct(p, str(y), kind) for p, y in zip(preds, labels))
    answered = sum(p is not None for p in preds)
    return {
        "accuracy": correct / max(len(labels), 1),
        "accuracy (answered)": correct / answered if answered else 0.0,
        "answered": answered / max(len(labels), 1),
    }
