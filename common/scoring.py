"""Answer extraction and equivalence for the benchmarks the papers report.

- GSM8K-style numbers: `gsm8k_extract_strict` reads the number after the last `####` (the format of the
  GSM8K references); `gsm8k_extract_flexible` takes the last number anywhere in the text. As in
  lm-evaluation-harness, report both (`gsm8k_is_correct(..., mode=...)`): they disagree on free-form outputs.
  Numbers compare as decimals after dropping `$`, thousands commas and a trailing period, so "1,000",
  "$1000" and "1000.0" are equal. The same helpers grade SVAMP and ASDiv numeric answers.
- MATH answers: `math_is_correct` parses both sides with `math-verify` and calls `verify(gold, pred)` in
  that order (the function is not symmetric). math-verify enforces its time limits with `signal.alarm`,
  which only works in the main thread; a call from another thread is sent to one spawned worker process
  (calls from all threads take turns there), graded in its main thread under the same limits, and graded
  wrong if no answer comes within `OFF_MAIN_THREAD_WAIT_S` (the worker is then killed and replaced).
  Without this a pathological answer (`\\boxed{100000000!}`) would run unbounded. `last_boxed` extracts
  `\\boxed{...}`.
- Multiple choice: `extract_choice` finds the chosen letter in "The answer is (B)", "B.", "**C**",
  "Answer: D" and similar, and returns None when the text names no letter or names several.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import multiprocessing.pool
import re
import threading
from decimal import Decimal, InvalidOperation

# A number as written in prose: optional sign and `$`, thousands groups or plain digits, optional decimals.
# The lookbehinds keep "5-3" from reading as "-3" and "x2" or "1.5" from yielding a stray "2" or "5".
_NUMBER = r"(?<![\w.])(?:(?<![\w)])-)?\$?\s?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_STRICT_RE = re.compile(r"\s*(" + _NUMBER + ")")
# math-verify's own default limit (seconds) for parsing and for each comparison.
MATH_VERIFY_TIMEOUT_S = 5
# Off the main thread: the longest wait for the grading worker (two parses and up to four comparisons,
# each under MATH_VERIFY_TIMEOUT_S there), after which it is killed and the item graded wrong.
OFF_MAIN_THREAD_WAIT_S = 6 * MATH_VERIFY_TIMEOUT_S
# Far past any benchmark answer, and below Python's 4,300-digit limit on printing an int.
MAX_NUMBER_DIGITS = 1000


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number such as "$1,000.50" -> "1000.5", "18.0" -> "18"; None if not
    one, or if its magnitude is past 10^+-MAX_NUMBER_DIGITS (a degenerate output such as a run of
    thousands of "1"s, or "1e999999999", which Python cannot print as an int or would take hours to)."""
    cleaned = text.strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite() or (value and abs(value.adjusted()) > MAX_NUMBER_DIGITS):
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
    """math-verify's signal-based limit in the main thread; None in any other thread, which cannot set it."""
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


_worker_lock = threading.Lock()
_worker: multiprocessing.pool.Pool | None = None


def _warm_up() -> bool:
    return math_is_correct("$1$", "1")  # imports math-verify and builds its parsers once


def _math_is_correct_in_worker(pred_text: str, gold: str) -> bool:
    """`math_is_correct` in the main thread of one spawned worker process, where math-verify's limits
    hold; False (and a new worker next time) when no answer comes within OFF_MAIN_THREAD_WAIT_S."""
    global _worker
    with _worker_lock:  # one call at a time, so the wait bounds this call's own work, not a queue
        if _worker is None:
            _worker = multiprocessing.get_context("spawn").Pool(1)
            atexit.register(_worker.terminate)  # before interpreter shutdown, which Pool.__del__ trips on
            _worker.apply(_warm_up)  # start-up is not part of any call's wait
        try:
            return _worker.apply_async(math_is_correct, (pred_text, gold)).get(OFF_MAIN_THREAD_WAIT_S)
        except multiprocessing.TimeoutError:
            atexit.unregister(_worker.terminate)
            _worker.terminate()
            _worker = None
            return False


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
    from any thread, with a bounded time: off the main thread the call goes to a worker process.
    """
    from math_verify import parse, verify

    timeout = _math_verify_timeout()
    if timeout is None:
        return _math_is_correct_in_worker(pred_text, gold)
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
