"""Answer extraction and equivalence for the benchmarks the papers report.

- GSM8K-style numbers: `gsm8k_extract_strict` reads the number after the last `####` (the format of the
  GSM8K references); `gsm8k_extract_flexible` takes the last number anywhere in the text. As in
  lm-evaluation-harness, both are reported (`gsm8k_grade`), since they disagree on free-form outputs.
  Numbers compare as decimals after dropping `$`, thousands commas and a trailing period, so "1,000",
  "$1000" and "1000.0" are equal. The same helpers grade SVAMP and ASDiv numeric answers.
- MATH answers: `math_is_correct` parses both sides with `math-verify` and calls `verify(gold, pred)` in
  that order (the function is not symmetric). math-verify enforces its time limits with `signal.alarm`,
  which only works in the main thread; off the main thread we pass `None` (no limit) instead of failing,
  so grade in worker processes, not threads, when a limit matters. `last_boxed` extracts `\\boxed{...}`.
- Multiple choice: `extract_choice` finds the chosen letter in "The answer is (B)", "B.", "**C**",
  "Answer: D" and similar, and returns None when the text names no letter or names several.
- Free text: `exact_match` and `token_f1` with SQuAD normalisation, `rouge_l` (F-measure) via rouge-score.
"""

from __future__ import annotations

import functools
import re
import string
import threading
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

# A number as written in prose: optional sign and `$`, thousands groups or plain digits, optional decimals.
# The lookbehinds keep "5-3" from reading as "-3" and "x2" or "1.5" from yielding a stray "2" or "5".
_NUMBER = r"(?<![\w.])(?:(?<![\w)])-)?\$?\s?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_STRICT_RE = re.compile(r"\s*(" + _NUMBER + ")")
_PUNCTUATION = frozenset(string.punctuation)
# math-verify's own default limit (seconds) for parsing and for each comparison.
MATH_VERIFY_TIMEOUT_S = 5


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number such as "$1,000.50" -> "1000.5", "18.0" -> "18"; None if not one."""
    cleaned = text.strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True when both parse as numbers with the same decimal value ("18" == "18.0" == "$18")."""
    na = normalize_number(a) if a is not None else None
    nb = normalize_number(b) if b is not None else None
    return na is not None and na == nb


def gsm8k_extract_strict(text: str) -> str | None:
    """The number right after the last `####` (GSM8K's answer format), normalised; None if absent."""
    head, sep, tail = text.rpartition("####")
    if not sep:
        return None
    match = _STRICT_RE.match(tail)
    return normalize_number(match.group(1)) if match else None


def gsm8k_extract_flexible(text: str) -> str | None:
    """The last number anywhere in the text, normalised; None if the text has no number."""
    matches = _NUMBER_RE.findall(text)
    return normalize_number(matches[-1]) if matches else None


def gsm8k_gold_answer(gold: str) -> str:
    """The reference number of a gold answer: a full GSM8K solution ("... #### 18") or a bare number."""
    answer = gsm8k_extract_strict(gold) if "####" in gold else normalize_number(gold)
    if answer is None:
        raise ValueError(f"gold answer {gold[-60:]!r} holds no number (expected '#### <n>' or a number)")
    return answer


def gsm8k_is_correct(pred_text: str, gold: str, mode: str = "strict") -> bool:
    """Whether the prediction's answer (strict `####` or flexible last-number extraction) equals the gold."""
    if mode == "strict":
        pred = gsm8k_extract_strict(pred_text)
    elif mode == "flexible":
        pred = gsm8k_extract_flexible(pred_text)
    else:
        raise ValueError(f"unknown GSM8K extraction mode {mode!r}; valid: strict, flexible")
    return numbers_equal(pred, gsm8k_gold_answer(gold))


def gsm8k_grade(pred_text: str, gold: str) -> dict:
    """Both extractions and verdicts at once: {strict, flexible, strict_answer, flexible_answer}."""
    target = gsm8k_gold_answer(gold)
    strict = gsm8k_extract_strict(pred_text)
    flexible = gsm8k_extract_flexible(pred_text)
    return {
        "strict": numbers_equal(strict, target),
        "flexible": numbers_equal(flexible, target),
        "strict_answer": strict,
        "flexible_answer": flexible,
    }


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`), braces balanced; else None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].removeprefix("\\boxed").removeprefix("\\fbox")
    if rest.startswith(" "):
        bare = re.match(r" +([^\s$]+)", rest)
        return bare.group(1) if bare else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None


def normalize_math_answer(answer: str) -> str:
    """A string form of a LaTeX answer for plain comparison: drops $, spaces, \\left/\\right, \\text{},
    \\!, "^\\circ", dfrac/tfrac spellings, a trailing period and a leading "x =" (single variable)."""
    s = answer.strip().rstrip(".").strip("$ ")
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[!,;:]|\\ ", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "%")
    s = re.sub(r"\s+", "", s).rstrip(".")
    return re.sub(r"^[a-zA-Z]=(?!=)", "", s)


def _math_verify_timeout() -> int | None:
    """math-verify's signal-based limit in the main thread; None (no limit) in any other thread."""
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple:
    from math_verify import parse

    # A bare LaTeX answer must sit in math mode for math-verify's LaTeX extractor to find it.
    text = gold if ("\\boxed" in gold or "$" in gold) else f"${gold}$"
    return tuple(parse(text, parsing_timeout=timeout))


def math_is_correct(pred_text: str, gold: str) -> bool:
    """Whether a model output's final answer equals a MATH gold answer (a LaTeX string, e.g. `\\frac{1}{2}`).

    The prediction is parsed by math-verify (a `\\boxed{}` answer first, then the last LaTeX or plain
    expression) and compared with `verify(gold, pred)`. When either side cannot be parsed, the normalised
    strings of the gold and of the prediction's last boxed answer are compared instead. Safe to call
    from any thread: off the main thread math-verify runs without its time limit (see the module doc).
    """
    from math_verify import parse, verify

    timeout = _math_verify_timeout()
    gold_parsed = list(_parse_gold(gold, timeout))
    pred_parsed = parse(pred_text, parsing_timeout=timeout)
    if gold_parsed and pred_parsed:
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    boxed = last_boxed(pred_text)
    return boxed is not None and normalize_math_answer(boxed) == normalize_math_answer(gold)


@functools.lru_cache(maxsize=32)
def _choice_patterns(choices: str) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    letter = f"[{re.escape(choices)}]"
    # Letters stay case-sensitive ("the answer is a bit long" names no option); keywords do not.
    wrapped = rf"[\(\[\*]*({letter})(?![\w'])[\)\]\*]*"
    another = rf"(?P<more>\s*(?:or|and|/|,)\s*[\(\[\*]*{letter}(?![\w']))?"
    # Tier 1: an explicit statement, e.g. "the answer is (B)", "Answer: **D**", "correct option is C".
    # A line break only after a colon, so an echoed option list ("B. choice\nC. will") is no statement.
    sep = r"(?:[ \t=*]|:[\s*]*|(?i:is)\b)*"
    explicit = re.compile(rf"(?i:answer|option|choice){sep}(?:(?i:option|choice){sep})?{wrapped}{another}")
    # Tier 2: the reply opens with a delimited letter: "B", "B.", "(B) ...", "**C**", "D: ...".
    leading = re.compile(rf"^\W*?({letter})(?:\s*(?:[\)\]\.:]|\*\*)+|\s*$){another}")
    # Tier 3: letters in parentheses anywhere, e.g. "... so (C) fits".
    parenthesised = re.compile(rf"\(({letter})\)")
    return explicit, leading, parenthesised


def extract_choice(text: str, choices: str = "ABCDE") -> str | None:
    """The option letter a reply chooses, or None when it names none or several.

    Tiers, first match wins: the last explicit "answer is X"/"Answer: X" statement; a reply opening
    with a delimited letter ("B.", "(B)", "**B**"); a single distinct parenthesised letter "(B)"
    anywhere. "X or Y" / "X, Y", or an opening letter contradicted by another "(Y)", give None.
    Letters are upper case, as the prompts list them.
    """
    explicit, leading, parenthesised = _choice_patterns(choices)
    statements = list(explicit.finditer(text))
    if statements:
        last = statements[-1]
        return None if last.group("more") else last.group(1)
    letters = set(parenthesised.findall(text))
    opening = leading.match(text.strip())
    if opening:
        others = letters - {opening.group(1)}
        return None if opening.group("more") or others else opening.group(1)
    return letters.pop() if len(letters) == 1 else None


def normalize_text(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _best_over_golds(metric, prediction: str, gold: str | Sequence[str]) -> float:
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("no gold answers given")
    return max(metric(prediction, g) for g in golds)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer (max over several), else 0.0."""
    return _best_over_golds(lambda p, g: float(normalize_text(p) == normalize_text(g)), prediction, gold)


def _token_f1_single(prediction: str, gold: str) -> float:
    pred_tokens = normalize_text(prediction).split()
    gold_tokens = normalize_text(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str | Sequence[str]) -> float:
    """SQuAD token F1 = 2PR/(P+R) over the bags of normalised tokens (max over several golds)."""
    return _best_over_golds(_token_f1_single, prediction, gold)


@functools.lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(prediction: str, gold: str | Sequence[str], use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure (longest common subsequence) from rouge-score, max over several golds.

    rouge-score's tokenizer keeps only ASCII letters and digits, so non-Latin text (e.g. Chinese) scores 0.
    """
    scorer = _rouge_scorer(use_stemmer)
    return _best_over_golds(lambda p, g: scorer.score(g, p)["rougeL"].fmeasure, prediction, gold)
