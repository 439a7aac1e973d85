"""MCC-KD's data construction (spec "Data construction" 2-5) and its answer extractors (spec "Answer extraction").

    text = mark_final_answer(text)                         # a teacher's "Therefore, the answer is X." -> #### X
    kept = correct_rationales(texts, label)                # 2. correctness filter (last-number heuristic)
    kept = deduplicate_texts(kept, threshold=0.8)          # 3. diversity filter (release src/utils.py)
    text = normalise_rationale(text, label)                # 4. common answer sentence "Therefore, the answer is N ."
    ex = encode_example(tok, prompt, text, label, "answer_tokens")   # 5. ids, labels, span [s, e)

`build_record` chains them for one question and raises `TooFewRationales` (one line) when fewer than two
rationales survive: the KL needs two (the release dataset asserts it); `make_records` does it for a set
(numbers or CSQA letters) with the filter statistics; `score` is the accuracy of greedy outputs.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence

ANSWER_SENTENCE = "Therefore, the answer is {answer} ."
"""Normalised answer sentence (spec "Target format": the released eval rationales end with it)."""
ANSWER_SPANS = ("answer_tokens", "answer_sentence")
_RELEASE_NUMBER = re.compile(r"(-?\d+)(,?\d+)?(\.\d+)?")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
_WORD_RE = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_CLAUSE = re.compile(r"\b(?:Therefore|So)\b(.*)", re.IGNORECASE)


class TooFewRationales(ValueError):
    """A question with fewer than two rationales left: MCC-KD's KL needs a pair."""


# --- answer extraction ---------------------------------------------------------------------------------


def extract_strict(text: str) -> str | None:
    """Release b7b780d `src/evaluator.py`: the last number match on the last non-empty line, groups joined."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    matches = _RELEASE_NUMBER.findall(lines[-1])
    return "".join(matches[-1]) if matches else None


def _clean_number(number: str) -> str:
    number = number.replace(",", "")
    return re.sub(r"\.0*$", "", number)


def extract_flexible(text: str) -> str | None:
    """HEAD `GSM8KEvaluator`: per line, the last number of a "Therefore"/"So" clause, else of the line
    (number words one..twelve mapped to digits); the prediction is the last line's; commas and a
    trailing ".0" stripped."""
    found = None
    for line in text.splitlines():
        line = _WORD_RE.sub(lambda m: str(_WORDS.index(m.group(1).lower()) + 1), line)
        clause = _CLAUSE.search(line)
        numbers = _NUMBER.findall(clause.group(1)) if clause else []
        numbers = numbers or _NUMBER.findall(line)
        if numbers:
            found = _clean_number(numbers[-1].rstrip(","))
    return found


def is_correct(text: str, label: str, mode: str = "strict") -> bool:
    """Strict: the release's exact string match; flexible: HEAD's, after stripping commas and ".0"."""
    if mode == "strict":
        return extract_strict(text) == label
    if mode == "flexible":
        return extract_flexible(text) == _clean_number(label)
    raise ValueError(f"unknown extraction mode {mode!r}; valid: strict, flexible")


def extract_choice_strict(text: str) -> str | None:
    """Release CSQA rule: the last capital letter A-G on the last non-empty line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    letters = re.findall(r"[A-G]", lines[-1]) if lines else []
    return letters[-1] if letters else None


def extract_choice_flexible(text: str) -> str | None:
    """HEAD `MultiChoicesEvaluator`: the last standalone letter A-N anywhere, lower-cased."""
    letters = re.findall(r"\b([A-N])\b", text)
    return letters[-1].lower() if letters else None


def score(texts: Sequence[str], labels: Sequence[str], kind: str = "number") -> dict[str, float]:
    """Strict (release: last line, last number / last A-G) and flexible (HEAD evaluators) accuracy."""
    n = max(len(labels), 1)
    if kind == "letter":
        strict = sum(extract_choice_strict(t) == y for t, y in zip(texts, labels))
        flexible = sum(extract_choice_flexible(t) == y.lower() for t, y in zip(texts, labels))
        return {"strict": strict / n, "flexible": flexible / n}
    return {
        mode: sum(is_correct(t, y, mode) for t, y in zip(texts, labels)) / n
        for mode in ("strict", "flexible")
    }


# --- filters -------------------------------------------------------------------------------------------


def last_number(text: str) -> str | None:
    """Last number in the text, commas and a trailing ".0" stripped (the spec's correctness heuristic)."""
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1].rstrip(",")) if numbers else None


def correct_rationales(texts: Sequence[str], label: str) -> list[str]:
    """Step 2: the rationales whose last number equals the gold label (order kept)."""
    gold = _clean_number(label)
    return [t for t in texts if last_number(t) == gold]


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the whitespace-token sets (release `src/utils.py`: `set(text.split(' '))`)."""
    sa, sb = set(a.split(" ")), set(b.split(" "))
    return len(sa & sb) / len(sa | sb)


def deduplicate_texts(texts: Sequence[str], threshold: float = 0.8) -> list[str]:
    """Step 3 (release semantics): text i is dropped when any LATER text j has Jaccard >= threshold."""
    return [t for i, t in enumerate(texts) if not any(jaccard(t, u) >= threshold for u in texts[i + 1 :])]


def normalise_rationale(text: str, answer: str, template: str = ANSWER_SENTENCE) -> str:
    """Step 4: the rationale without a trailing `#### n` line, ending with the common answer sentence."""
    lines = text.strip().splitlines()
    if lines and lines[-1].startswith("####"):
        lines = lines[:-1]
    body = "\n".join(lines).rstrip()
    return f"{body}\n{template.format(answer=_clean_number(answer))}"


# --- tokenisation with the answer span -----------------------------------------------------------------


def answer_char_span(text: str, answer: str, mode: str, template: str = ANSWER_SENTENCE) -> tuple[int, int]:
    """Character span [a, b) of the answer (`answer_tokens`) or of the whole sentence (`answer_sentence`)
    at the end of a normalised rationale."""
    if mode not in ANSWER_SPANS:
        raise ValueError(f"unknown answer_span {mode!r}; valid: {', '.join(ANSWER_SPANS)}")
    sentence = template.format(answer=_clean_number(answer))
    start = text.rfind(sentence)
    if start < 0 or text[start + len(sentence) :].strip():
        raise ValueError(f"rationale does not end with the answer sentence {sentence!r}: {text[-60:]!r}")
    if mode == "answer_sentence":
        return start, start + len(sentence)
    offset = template.index("{answer}")
    return start + offset, start + offset + len(_clean_number(answer))


def encode_example(
    tok, prompt: str, rationale: str, answer: str, mode: str, template: str = ANSWER_SENTENCE
) -> dict:
    """Prompt + rationale + EOS as token ids, labels on the rationale and EOS, and the answer span.

    The prompt and the target are tokenised separately (as in training), so `span = [s, e)` are the
    positions in `input_ids` of the target tokens that overlap the answer characters.
    """
    prompt_ids = tok(prompt)["input_ids"]
    enc = tok(rationale, add_special_tokens=False, return_offsets_mapping=True)
    a, b = answer_char_span(rationale, answer, mode, template)
    hits = [i for i, (x, y) in enumerate(enc["offset_mapping"]) if x < b and y > a]
    target = enc["input_ids"] + [tok.eos_token_id]
    start = len(prompt_ids) + hits[0]
    return {
        "input_ids": prompt_ids + target,
        "labels": [-100] * len(prompt_ids) + target,
        "span": (start, len(prompt_ids) + hits[-1] + 1),
    }


def encode_records(
    tok,
    records: Sequence[dict],
    prompt_fn: Callable[[str], str],
    mode: str,
    target_prefix: str = "",
    template: str = ANSWER_SENTENCE,
) -> list[list[dict]]:
    """Per question, its rationales as examples (`encode_example`) whose answer spans share one length.

    Rationales whose span length differs from the question's most common one are dropped (the KL is
    position-aligned); a question left with fewer than two is dropped."""
    out = []
    for record in records:
        prompt = prompt_fn(record["instruction"])
        examples = [
            encode_example(tok, prompt, target_prefix + text, record["label"], mode, template)
            for text in record["output"]
        ]
        lengths = [e - s for s, e in (ex["span"] for ex in examples)]
        common = max(set(lengths), key=lengths.count)
        same = [ex for ex, n in zip(examples, lengths) if n == common]
        if len(same) >= 2:
            out.append([{**ex, "id": record.get("id", "")} for ex in same])
    return out


def truncate(example: dict, max_len: int) -> dict:
    """Release: the sequence is cut to max_seq_len; a span past it is excluded from the KL (mcckd_loss)."""
    return {**example, "input_ids": example["input_ids"][:max_len], "labels": example["labels"][:max_len]}


def build_record(
    question: str, texts: Sequence[str], label: str, k: int, threshold: float = 0.8, dedup: bool = True
) -> dict:
    """Steps 2-4 for one question: {instruction, output: [normalised rationales, at most k], label}."""
    kept = correct_rationales(texts, label)
    if dedup:
        kept = deduplicate_texts(kept, threshold)
    if len(kept) < 2:
        raise TooFewRationales(
            f"question {question[:50]!r}: {len(kept)} rationale(s) left after the filters, MCC-KD needs >= 2"
        )
    return {
        "instruction": question,
        "output": [normalise_rationale(t, label) for t in kept[:k]],
        "label": label,
    }


def build_records(
    rows: Sequence[dict], k: int, threshold: float = 0.8, dedup: bool = True
) -> tuple[list[dict], dict]:
    """Records {instruction, output, label, id} of the questions keeping >= 2 rationales, and filter stats.

    rows: {id, question, answer, rationales}."""
    records, correct, kept = [], [], []
    for row in rows:
        correct.append(len(correct_rationales(row["rationales"], row["answer"])))
        try:
            record = build_record(row["question"], row["rationales"], row["answer"], k, threshold, dedup)
        except TooFewRationales:
            kept.append(0)
            continue
        kept.append(len(record["output"]))
        records.append({**record, "id": row["id"]})
    return records, filter_stats(len(rows), correct, kept, len(records))


def _choice_records(
    rows: Sequence[dict], k: int, threshold: float, dedup: bool, template: str
) -> tuple[list[dict], dict]:
    """CSQA: steps 2-4 with the letter as the answer (HEAD MultiChoicesEvaluator as the correctness test)."""
    records, correct, kept = [], [], []
    for row in rows:
        good = [t for t in row["rationales"] if extract_choice_flexible(t) == row["answer"].lower()]
        correct.append(len(good))
        if dedup:
            good = deduplicate_texts(good, threshold)
        kept.append(len(good) if len(good) >= 2 else 0)
        if len(good) >= 2:
            outputs = [normalise_rationale(t, row["answer"], template) for t in good[:k]]
            records.append(
                {"instruction": row["question"], "output": outputs, "label": row["answer"], "id": row["id"]}
            )
    return records, filter_stats(len(rows), correct, kept, len(records))


def make_records(
    rows: Sequence[dict],
    kind: str,
    k: int,
    threshold: float = 0.8,
    dedup: bool = True,
    template: str = ANSWER_SENTENCE,
    name: str = "",
) -> tuple[list[dict], dict]:
    """Filtered records of a set's questions (numbers or letters); raises `TooFewRationales` (one line)
    when no question keeps two: MCC-KD has no pair to train on."""
    if kind == "letter":
        records, stats = _choice_records(rows, k, threshold, dedup, template)
    else:
        records, stats = build_records(rows, k, threshold, dedup)
    if not records:
        raise TooFewRationales(
            f"mcckd {name}: none of {stats['questions']} training questions keeps >= 2 correct, distinct "
            f"rationales (mean correct {stats['correct_mean']}); MCC-KD needs pairs - check the teacher and its prompt"
        )
    return records, stats


def filter_stats(questions: int, correct: list[int], kept: list[int], records: int) -> dict:
    """Questions, mean correct rationales per question, questions with >= 2 correct, mean kept, records
    built, questions dropped."""
    return {
        "questions": questions,
        "correct_mean": round(statistics.mean(correct), 4) if correct else 0.0,
        "ge2_correct": sum(c >= 2 for c in correct),
        "kept_mean": round(statistics.mean(kept), 4) if kept else 0.0,
        "records": records,
        "dropped": questions - records,
    }


_FINAL_SENTENCE = re.compile(
    r"(?:Therefore|So|Thus),?\s+the\s+(?:final\s+)?answer\s+is:?\s*\(?([^\s()]+?)\)?[\s.]*$", re.IGNORECASE
)


def mark_final_answer(text: str) -> str:
    """A teacher's closing "Therefore, the answer is X." as a `#### X` line (ours).

    The correctness filter reads X there, and `normalise_rationale` replaces the line with the common answer
    sentence, so a student target never holds the answer sentence twice. Text without it is unchanged."""
    match = _FINAL_SENTENCE.search(text.rstrip())
    if match is None:
        return text
    return f"{text[: match.start()].rstrip()}\n#### {match.group(1)}"
