"""MCC-KD's training data: teacher sampling (resumable), the filters, and token-level examples with spans.

    texts = sample_rationales(generator, prompts, k=8, temperature=1.0, max_tokens=96, seed=0)
    records, stats = build_records(rows, k=4)          # correctness + Jaccard filters, answer sentence
    examples = encode_records(tok, records, prompt_fn, "answer_tokens")   # ids, labels, spans

A teacher is any `common.generation.Generator` (HF or vLLM; `sample_rationales`) or an OpenAI-compatible
endpoint (`sample_rationales_endpoint`, through SocialBench's retrying client). `cached_samples` stores
the samples as JSONL, one line per question, and resumes after a kill. A question left with fewer than
two rationales is dropped by `build_records` (counted in its stats) or, asked for alone, raises
`TooFewRationales` with one line.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from common.data import instruction_rows, mirror_only
from common.generation import SamplingParams
from papers.mcckd.rationales import (
    ANSWER_SENTENCE,
    TooFewRationales,
    build_record,
    correct_rationales,
    encode_example,
)

# The paper's files (official repository; SOURCE.md of ../shared/data/mcckd): mirror only.
DATASETS = {
    spec.name: spec
    for spec in (
        mirror_only(
            "mcckd-gsm8k",
            instruction_rows("number"),
            dev="mcckd/GSM8K/dev.json",
            test="mcckd/GSM8K/test.json",
        ),
        mirror_only(
            "mcckd-svamp",
            instruction_rows("number"),
            train="mcckd/SVAMP/train.json",
            dev="mcckd/SVAMP/dev.json",
            test="mcckd/SVAMP/test.json",
        ),
        mirror_only(
            "mcckd-asdiv",
            instruction_rows("number"),
            dev="mcckd/ASDiv/dev.json",
            test="mcckd/ASDiv/test.json",
        ),
        mirror_only(
            "mcckd-csqa", instruction_rows("letter"), dev="mcckd/CSQA/dev.json", test="mcckd/CSQA/test.json"
        ),
    )
}


def sample_rationales(
    generator, prompts: Sequence[str], k: int, temperature: float, max_tokens: int, seed: int
) -> list[list[str]]:
    """k sampled completions per prompt from a `Generator` (spec step 1), prompt-major."""
    params = SamplingParams(n=k, temperature=temperature, max_tokens=max_tokens, seed=seed)
    out: list[list[str]] = [[] for _ in prompts]
    for completion in generator.generate(list(prompts), params):
        out[completion.prompt_index].append(completion.text)
    return out


def sample_rationales_endpoint(
    base_url: str | None,
    model: str | None,
    prompts: Sequence[str],
    k: int,
    temperature: float,
    max_tokens: int,
) -> list[list[str]]:
    """k chat completions per prompt from an OpenAI-compatible endpoint (retries: SocialBench's client).

    A call that fails after every retry gives no rationale (it is not scored as a wrong one)."""
    from papers.socialbench.chat_models import OpenAIChatModel

    client = OpenAIChatModel(base_url, model, max_tokens=max_tokens, temperature=temperature, seed=None)
    out = []
    for prompt in prompts:
        replies = [client.chat(prompt) for _ in range(k)]
        out.append([r.text for r in replies if r.error is None])
    return out


def cached_samples(
    path: Path, keys: Sequence[str], sample_fn: Callable[[list[int]], list[list[str]]], chunk: int = 256
) -> dict[str, list[str]]:
    """Samples per key, read from `path` (JSONL {key, rationales}) and completed chunk by chunk.

    `sample_fn(indices)` samples for keys[indices]. Each chunk is appended and flushed, so a killed run
    resumes after the last complete chunk (a torn last line is ignored)."""
    done: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                break
            done[obj["key"]] = obj["rationales"]
    todo = [i for i, key in enumerate(keys) if key not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    if todo and path.exists() and not path.read_text().endswith("\n"):  # drop a torn last line
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[: len(done)]))
    with path.open("a") as fh, tqdm(total=len(keys), initial=len(keys) - len(todo), desc="teacher") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            for i, texts in zip(part, sample_fn(part)):
                done[keys[i]] = texts
                fh.write(json.dumps({"key": keys[i], "rationales": texts}) + "\n")
            fh.flush()
            bar.update(len(part))
    return {key: done[key] for key in keys}


def build_records(
    rows: Sequence[dict], k: int, threshold: float = 0.8, dedup: bool = True
) -> tuple[list[dict], dict]:
    """Records {instruction, output, label, id} of the questions keeping >= 2 rationales, and filter stats.

    rows: {id, question, answer, rationales}. Stats: questions, mean correct per question, mean kept,
    questions with >= 2 correct, records built, dropped."""
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


def svamp_prompt(question: str) -> str:
    """Release data format: the instruction is the question text + "\\n", no template around it."""
    return question if question.endswith("\n") else question + "\n"
