"""The black-box teacher, seen only through its text: a resumable cache of its answers.

    ask = endpoint_asker(cfg.teacher)            # OpenAI-compatible endpoint (common.chat, bounded concurrency)
    ask = local_asker(generator, cfg.teacher)    # any common.generation Generator (HF / vLLM)
    answers = teacher_answers(ids, prompts, ask, path, chunk=256, min_answered=0.95, who="teacher")

`ask(prompts, indices) -> [(text | None, error | None)]`, `indices` the prompts' positions in `ids`. An
endpoint seeds each call with its prompt's index, so a prompt asked again by a rerun (its call failed) is
sent the seed a run without faults sends it; a local generator seeds the batch with the first index (a
killed run resumes at a chunk boundary, so it draws the same). Answers go to `path` (JSONL {id, text}),
appended a chunk at a time and fsync'd, so a killed run resumes after the last complete chunk. A failed
call or an empty answer goes to `<path>.errors.jsonl` ({id, error}) and is never used; a rerun asks only
for the prompts without an answer. Fewer answers than `min_answered` of the prompts stops with one line
(`TeacherError`) naming the cache, which keeps every answer already received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from common.chat import ChatClient
from common.sampling import SamplingParams
from common.stages import append_jsonl, read_jsonl

log = logging.getLogger(__name__)
Reply = tuple[str | None, str | None]
Asker = Callable[[Sequence[str], Sequence[int]], list[Reply]]


class TeacherError(RuntimeError):
    """Too few teacher answers; the message is one line naming the endpoint and the cache."""


def errors_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".errors.jsonl")


def endpoint_asker(teacher) -> Asker:
    """One chat completion per prompt from `teacher.endpoint` (a `TeacherConfig`); failures come back as
    errors (common.chat never raises for a server or network problem)."""
    client = ChatClient(
        teacher.endpoint,
        teacher.model,
        max_tokens=teacher.max_tokens,
        temperature=teacher.temperature,
        timeout_s=teacher.timeout_s,
        max_retries=teacher.max_retries,
        backoff_s=teacher.backoff_s,
        concurrency=teacher.concurrency,
    )

    def ask(prompts: Sequence[str], indices: Sequence[int]) -> list[Reply]:
        replies = client.chat_many(list(prompts), seeds=list(indices))
        return [(r.text, None) if r.ok else (None, r.error) for r in replies]

    return ask


def local_asker(generator, teacher) -> Asker:
    """One sample per prompt from a local `common.generation` Generator at the teacher's temperature."""

    def ask(prompts: Sequence[str], indices: Sequence[int]) -> list[Reply]:
        params = SamplingParams(
            temperature=teacher.temperature, max_tokens=teacher.max_tokens, seed=indices[0]
        )
        out: list[Reply] = [(None, "no completion")] * len(prompts)
        for c in generator.generate(list(prompts), params):
            out[c.prompt_index] = (c.text, None)
        return out

    return ask


def teacher_answers(
    ids: Sequence[str],
    prompts: Sequence[str],
    ask: Asker,
    path: Path,
    chunk: int = 256,
    min_answered: float = 0.95,
    who: str = "teacher",
) -> dict[str, str]:
    """{id: answer text} for the prompts the teacher answered (module docstring)."""
    if len(ids) != len(prompts):
        raise ValueError(f"{len(ids)} ids for {len(prompts)} prompts")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{who}: prompt ids are not unique")
    done = {r["id"]: r["text"] for r in read_jsonl(path)}
    todo = [i for i, key in enumerate(ids) if key not in done]
    failed: dict[str, str] = {}
    if todo:
        with tqdm(total=len(ids), initial=len(ids) - len(todo), desc=who, disable=len(todo) <= chunk) as bar:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                replies = ask([prompts[i] for i in part], part)
                good, bad = [], []
                for i, (text, error) in zip(part, replies):
                    if error is None and (text is None or not text.strip()):
                        error = "empty answer"
                    (bad if error else good).append(
                        {"id": ids[i], **({"error": error} if error else {"text": text})}
                    )
                append_jsonl(path, good)
                if bad:
                    append_jsonl(errors_path(path), bad)
                done.update((r["id"], r["text"]) for r in good)
                failed.update((r["id"], r["error"]) for r in bad)
                bar.update(len(part))
    if failed:
        log.warning(
            "%s: %d of %d calls failed or came back empty (recorded in %s, not used)",
            who,
            len(failed),
            len(todo),
            errors_path(path),
        )
    answered = {key: done[key] for key in ids if key in done}
    if len(answered) < min_answered * len(ids):
        first = next(iter(failed.values()), "no error recorded")
        raise TeacherError(
            f"{who}: {len(answered)} of {len(ids)} prompts answered ({len(failed)} failed this run, first: "
            f"{first}); the answers are kept in {path}, rerun to ask for the rest"
        )
    return answered
