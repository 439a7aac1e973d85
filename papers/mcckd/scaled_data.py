"""Training questions, teacher rationales and filtered records for MCC-KD's small and paper scales.

    questions = train_questions("gsm8k", data_dir)             # [{id, question, answer[, rationales]}]
    samples = teacher_samples(questions, teacher, path, ...)   # K per question, cached JSONL, resumable
    records, stats = make_records("gsm8k", rows, filters)      # correctness + Jaccard filters, answer sentence

Where the training questions come from (spec "Setup", SOURCE.md of ../shared/data/mcckd):
- GSM8K: the 7,473-question `openai/gsm8k` main train split (`common.data`, mirror gsm8k/train.jsonl).
  The official GSM8K train rationales were not released in a readable form, so the teacher samples them.
- SVAMP: the 700 released questions with 10 raw teacher rationales each (mcckd/SVAMP/train.json); with
  `released=False` the teacher samples for the same questions instead.
- ASDiv, CSQA: the official train files are absent from the snapshot and not mirrored. A user who has them
  puts a JSON list of {instruction, label[, output: [rationales]]} at <data-dir>/mcckd/<ASDiv|CSQA>/train.json;
  asking for either without that file stops with one line (`MissingTrainData`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from common.data import load_rows, read_records, resolve_data_dir
from common.results import ROOT
from common.scoring import normalize_number
from papers.mcckd.config import FilterConfig, TeacherConfig
from papers.mcckd.data import (
    DATASETS,
    build_records,
    cached_samples,
    filter_stats,
    sample_rationales,
    sample_rationales_endpoint,
)
from papers.mcckd.rationales import (
    TooFewRationales,
    deduplicate_texts,
    extract_choice_flexible,
    normalise_rationale,
)

SHARED_DATA = ROOT / ".." / "shared" / "data"
SETS = {
    "gsm8k": ("GSM8K", "number"),
    "asdiv": ("ASDiv", "number"),
    "svamp": ("SVAMP", "number"),
    "csqa": ("CSQA", "letter"),
}
"""Short name -> (folder under mcckd/, answer kind)."""
ENDPOINT_ENV, TEACHER_MODEL_ENV = "MCCKD_TEACHER_ENDPOINT", "MCCKD_TEACHER_MODEL"
TEACHER_PROMPT = (
    "{question}\nAnswer the question. Think step by step, and end with the sentence "
    '"Therefore, the answer is X." where X is the final {kind}.'
)
"""Teacher instruction (ours: the paper's teacher prompt is UNCONFIRMED); {kind}: number or letter."""


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


class MissingTrainData(RuntimeError):
    """A training set whose questions are not on disk (ASDiv/CSQA train are not released or mirrored)."""


def digest(blob: object) -> str:
    """Short stable hash of a JSON-able settings blob (the cache keys of every stage)."""
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


def set_name(name: str) -> str:
    """`mcckd-gsm8k` / `GSM8K` / `gsm8k` -> `gsm8k`; an unknown name stops with the valid ones."""
    short = name.lower().removeprefix("mcckd-")
    if short not in SETS:
        raise ValueError(f"unknown MCC-KD dataset {name!r}; valid: {', '.join(SETS)}")
    return short


def mirror_root(data_dir: str | Path | None) -> Path | None:
    """--data-dir / $REPRO_DATA_DIR, else ../shared/data when it exists (the mcckd files are mirror-only)."""
    root = resolve_data_dir(data_dir)
    return root if root is not None else (SHARED_DATA if SHARED_DATA.is_dir() else None)


def _local_train(name: str, root: Path | None) -> list[dict]:
    folder, kind = SETS[name]
    path = (root or SHARED_DATA) / "mcckd" / folder / "train.json"
    if not path.is_file():
        raise MissingTrainData(
            f"mcckd: no {folder} training questions: {path} is absent (the official train file was not "
            f"released/mirrored); put a JSON list of {{instruction, label}} there or drop {name} from --train-sets"
        )
    rows = []
    for number, rec in read_records(path):
        if not isinstance(rec, dict) or "instruction" not in rec or "label" not in rec:
            raise MissingTrainData(f"{path} row {number}: needs the fields 'instruction' and 'label'")
        label = str(rec["label"]).strip()
        answer = label if kind == "letter" else normalize_number(label)
        if answer is None:
            raise MissingTrainData(f"{path} row {number}: label {label[:30]!r} is not a number")
        row = {"id": f"{name}-train-{number}", "question": rec["instruction"], "answer": answer}
        if isinstance(rec.get("output"), list):
            row["rationales"] = [str(t) for t in rec["output"]]
        rows.append(row)
    return rows


def train_questions(
    name: str, data_dir: str | Path | None, released: bool = True, limit: int | None = None
) -> list[dict]:
    """Training questions of one set (module docstring); `rationales` kept only where `released`."""
    root = mirror_root(data_dir)
    if name == "gsm8k":
        rows = [{k: r[k] for k in ("id", "question", "answer")} for r in load_rows("gsm8k", "train", root)]
    elif name == "svamp":
        rows = load_rows(DATASETS["mcckd-svamp"], "train", root)
    else:
        rows = _local_train(name, root)
    if not released:
        rows = [{k: v for k, v in r.items() if k != "rationales"} for r in rows]
    return rows[:limit]


def eval_rows(name: str, split: str, data_dir: str | Path | None, limit: int | None = None) -> list[dict]:
    """The released dev/test split of one set (GSM8K 660/659, ASDiv 313/314, SVAMP 150/150, CSQA 1,221/1,221)."""
    return load_rows(DATASETS[f"mcckd-{name}"], split, mirror_root(data_dir))[:limit]


def teacher_prompt(question: str, kind: str, template: str = TEACHER_PROMPT) -> str:
    return template.format(question=question.rstrip("\n"), kind=kind)


def _chat(tokenizer, prompt: str) -> str:
    """The prompt in the teacher's chat template (plain text when the tokenizer has none)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def teacher_endpoint(teacher: TeacherConfig) -> str | None:
    """The OpenAI-compatible base URL to sample from ($MCCKD_TEACHER_ENDPOINT first), or None (local model)."""
    return os.environ.get(ENDPOINT_ENV) or teacher.endpoint


def cached_ids(path: Path) -> set[str]:
    """Question ids already complete in a teacher cache (a torn last line does not count)."""
    done = set()
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            done.add(json.loads(line)["key"])
        except (json.JSONDecodeError, KeyError):
            break
    return done


def teacher_samples(
    questions: Sequence[dict],
    kind: str,
    teacher: TeacherConfig,
    path: Path,
    backend: str = "auto",
    seed: int = 0,
    chunk: int = 256,
    template: str = TEACHER_PROMPT,
) -> dict[str, list[str]]:
    """`teacher.samples` rationales per question, cached in `path` (JSONL, resumes after a kill).

    Source: an OpenAI-compatible endpoint when `teacher.endpoint` or $MCCKD_TEACHER_ENDPOINT is set (model:
    `teacher.model`, or $MCCKD_TEACHER_MODEL); else the local model through `common.generation`
    (`backend`: auto = vLLM on CUDA, HF elsewhere), prompts in its chat template."""
    endpoint = teacher_endpoint(teacher)
    model = os.environ.get(TEACHER_MODEL_ENV) or teacher.model
    prompts = [teacher_prompt(q["question"], kind, template) for q in questions]
    state: dict = {}

    def sample(indices: list[int]) -> list[list[str]]:
        part = [prompts[i] for i in indices]
        if endpoint:
            return sample_rationales_endpoint(
                endpoint, model, part, teacher.samples, teacher.temperature, teacher.max_tokens
            )
        if "gen" not in state:
            from common.generation import make_generator

            state["gen"] = make_generator(model, backend=backend)
        gen = state["gen"]
        chats = [_chat(gen.tokenizer, p) for p in part]
        return sample_rationales(
            gen,
            chats,
            teacher.samples,
            teacher.temperature,
            teacher.max_tokens,
            seed=seed * 1_000_003 + indices[0],
        )

    out = cached_samples(path, [q["id"] for q in questions], sample, chunk=chunk)
    state.clear()  # drop the teacher before the students are trained
    return out


def _choice_records(rows: Sequence[dict], filters: FilterConfig) -> tuple[list[dict], dict]:
    """CSQA: steps 2-4 with the letter as the answer (HEAD MultiChoicesEvaluator as the correctness test)."""
    records, correct, kept = [], [], []
    for row in rows:
        good = [t for t in row["rationales"] if extract_choice_flexible(t) == row["answer"].lower()]
        correct.append(len(good))
        if filters.dedup:
            good = deduplicate_texts(good, filters.jaccard_threshold)
        kept.append(len(good) if len(good) >= 2 else 0)
        if len(good) >= 2:
            outputs = [
                normalise_rationale(t, row["answer"], filters.answer_template) for t in good[: filters.k]
            ]
            records.append(
                {"instruction": row["question"], "output": outputs, "label": row["answer"], "id": row["id"]}
            )
    return records, filter_stats(len(rows), correct, kept, len(records))


def make_records(name: str, rows: Sequence[dict], filters: FilterConfig) -> tuple[list[dict], dict]:
    """Filtered records {instruction, output, label, id} of the questions keeping >= 2 rationales.

    Raises `TooFewRationales` (one line) when no question keeps two: MCC-KD has no pair to train on."""
    if SETS[name][1] == "letter":
        records, stats = _choice_records(rows, filters)
    else:
        records, stats = build_records(rows, filters.k, filters.jaccard_threshold, filters.dedup)
    if not records:
        raise TooFewRationales(
            f"mcckd {name}: none of {stats['questions']} training questions keeps >= 2 correct, distinct "
            f"rationales (mean correct {stats['correct_mean']}); MCC-KD needs pairs - check the teacher and its prompt"
        )
    return records, stats
