"""One `Generator` interface over our own HF decode loop and vLLM.

    gen = make_generator(model_or_path, tokenizer)          # "auto": the measured rule of resolve_backend
    outs = gen.generate(prompts, SamplingParams(n=4, temperature=1.0, max_tokens=64, seed=0))
    # flat, prompt-major: outs[i] belongs to prompts[i // n]

Each `Completion` carries the sampled token ids, the text, and per-token log-probabilities.
What the log-probabilities are: log-softmax of the model's *raw* next-token logits (temperature 1, no
top-k/top-p filtering), evaluated at the sampled token - vLLM's default `raw_logprobs` mode. Both
backends return exactly this, whatever the sampling settings, so an RL or distillation loss can use
them as the unmodified model's log-probabilities (divide the raw logits by T yourself if a loss needs
the tempered distribution). `top_logprobs` (with `SamplingParams.logprobs=k`) holds, per position, the
k most likely tokens of that raw distribution plus the sampled token, ordered by log-probability,
highest first.

Token ids include the EOS token that ended a completion (and its log-probability); the text does not.
A stop string ends a completion with finish_reason "stop"; the text is cut before it, the token ids
keep the token that completed it (vLLM's convention). Prompts are strings (tokenized with the
tokenizer's special tokens, as vLLM does; apply a chat template first for chat models) or lists of
token ids.

Seeds: the same seed, prompts and parameters give the same samples within a backend (HF: also the same
`batch_size`); the two backends draw different random numbers, so only greedy decoding agrees across
them. The HF backend decodes left-padded batches with a KV cache: a dynamic cache on the CPU, a static
cache on CUDA, plus `torch.compile` (CUDA graphs) of the decode step for long runs there; the model's
dtype is used as given (`load_causal_lm` gives bf16 on CUDA, fp32 on the CPU). The vLLM backend
is in `common.generation_vllm` and the shared contract (`SamplingParams`, `Completion`, `Generator`) in
`common.sampling`; every name of both is importable from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, StaticCache

from common.generation_vllm import VLLMGenerator, save_for_vllm, vllm_available
from common.models import load_causal_lm, load_tokenizer, resolve
from common.sampling import Completion, Generator, Prompts, SamplingParams, check_prompts

__all__ = [
    "BACKENDS",
    "COMPILE_MIN_TOKENS",
    "CPU_VLLM_MIN_PARAMS",
    "STATIC_LEN_STEP",
    "Completion",
    "Generator",
    "HFGenerator",
    "Prompts",
    "SamplingParams",
    "VLLMGenerator",
    "check_prompts",
    "cut_at_stop",
    "make_generator",
    "resolve_backend",
    "sample_inverse_cdf",
    "sample_next",
    "save_for_vllm",
    "saved_parameters",
    "vllm_available",
]

STATIC_LEN_STEP = 256
"""A static cache's length is rounded up to a multiple of this, so compiled shapes repeat."""

COMPACT_AT = 0.75
"""With a dynamic cache, rows that have ended leave the decoded batch (cache rows included) once no more
than this fraction of its rows is still generating (0: never). Same tokens; measured on the toy student
(1 thread, 800 samples at T = 1, batch 128): 3.75 s -> 2.87 s."""

COMPILE_MIN_TOKENS = 1_000_000
"""`compile=None` compiles the decode step on CUDA when one call asks for at least this many tokens
(rows x max_tokens). Measured on an H100 (Qwen2.5-0.5B shape, bf16, 256 rows x 128 tokens): 3.3 s
eager, 1.1 s compiled, after a one-off compile of ~30 s per batch shape: it pays from about 1M tokens."""


def sample_next(
    raw_logprobs: torch.Tensor, params: SamplingParams, u: torch.Tensor | None = None
) -> torch.Tensor:
    """One token per row of `raw_logprobs` [batch, vocab], from softmax(logits / T) after top-k, top-p.

    Top-p keeps the smallest set of most likely tokens whose mass reaches p (the first always stays),
    applied after top-k, as vLLM does. T = 0 is argmax. `u`: the rows' uniforms (see
    `sample_inverse_cdf`; None draws them).
    """
    if params.temperature == 0:
        return raw_logprobs.argmax(-1)
    if params.temperature == 1 and params.top_k <= 0 and params.top_p == 1:
        return sample_inverse_cdf(raw_logprobs.exp(), u)
    logits = raw_logprobs / params.temperature
    if params.top_k > 0:
        kth = logits.topk(min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= params.top_p  # the mass before this token already reaches p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return sample_inverse_cdf(logits.softmax(-1), u)


def sample_inverse_cdf(probs: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """One index per row of `probs` [batch, vocab]: the first whose cumulative mass exceeds u ~ U[0, total).

    Exact like `torch.multinomial` but ~20x faster on the CPU for a 49k vocabulary (one uniform per row
    instead of work per entry). A token of probability 0 is never drawn: `right=True` picks an index
    where the cumulative sum strictly increases, and u stays below the total. `u`: [batch, 1] uniforms
    in [0, 1) to use instead of drawing them (the HF decode loop draws one per row of the whole batch,
    so dropping finished rows does not change the other rows' samples).
    """
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    if u is None:
        u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device)
    u = u.to(cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True)[:, 0]


def _scatter_topk(top, rows: torch.Tensor, batch: int):
    """`topk` values / indices of the live `rows` -> [batch, k] tensors (other rows 0)."""
    values = torch.zeros((batch, top.values.shape[1]), dtype=top.values.dtype, device=top.values.device)
    indices = torch.zeros((batch, top.indices.shape[1]), dtype=top.indices.dtype, device=top.indices.device)
    return type(top)((values.index_copy(0, rows, top.values), indices.index_copy(0, rows, top.indices)))


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class HFGenerator:
    """Batched decoding of an in-memory HF model: left padding, a KV cache, raw log-probs.

    `cache`: "dynamic", "static" or "auto" (static on CUDA). `compile`: torch.compile the decode step
    (static cache only; CUDA graphs on CUDA); None = on CUDA for calls of at least `COMPILE_MIN_TOKENS`,
    never on the CPU. Compiling costs tens of seconds once per batch shape, so it pays only for long
    runs. `progress`: a bar over batches (None: when several batches and a terminal). The model's
    train/eval mode is restored after each call.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 64,
        progress: bool | None = None,
        cache: str = "auto",
        compile: bool | None = None,
    ):
        if cache not in ("auto", "dynamic", "static"):
            raise ValueError(f"HFGenerator: unknown cache {cache!r}; valid: auto, dynamic, static")
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress
        self.static = cache == "static" or (cache == "auto" and model.device.type == "cuda")
        if compile and not self.static:
            raise ValueError("HFGenerator: compile=True needs cache='static' (or 'auto' on CUDA)")
        self.compile, self._compiled = compile, None
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        )
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    def _encode(self, prompts: Prompts) -> list[list[int]]:
        if isinstance(prompts[0], str):
            return [self.tokenizer(p)["input_ids"] for p in prompts]
        return [[int(t) for t in p] for p in prompts]

    @torch.no_grad()
    def generate(self, prompts: Prompts, params: SamplingParams) -> list[Completion]:
        check_prompts(prompts, "HFGenerator")
        if not prompts:
            return []
        encoded = self._encode(prompts)
        for i, ids in enumerate(encoded):
            if self.max_positions and len(ids) >= self.max_positions:
                raise ValueError(
                    f"HFGenerator: prompt {i} has {len(ids)} tokens; the model takes {self.max_positions}"
                )
        rows = [(i, ids) for i, ids in enumerate(encoded) for _ in range(params.n)]
        decode_step = self._decode_step(len(rows) * params.max_tokens)
        chunks = [rows[s : s + self.batch_size] for s in range(0, len(rows), self.batch_size)]
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        hide = (None if len(chunks) > 1 else True) if self.progress is None else not self.progress
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        was_training, out = self.model.training, []
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for chunk in tqdm(chunks, desc="generate", disable=hide, leave=False):
                    out.extend(self._generate_chunk(chunk, params, decode_step))
        finally:
            self.model.train(was_training)
        return out

    def _decode_step(self, tokens: int):
        """The model, or its compiled version when `compile` says so (compiled once, then reused)."""
        on_cuda = self.model.device.type == "cuda"
        wanted = self.compile if self.compile is not None else on_cuda and tokens >= COMPILE_MIN_TOKENS
        if not (wanted and self.static):
            return self.model
        if self._compiled is None:
            mode = "reduce-overhead" if on_cuda else "default"
            self._compiled = torch.compile(self.model, mode=mode, dynamic=False)
        return self._compiled

    def _generate_chunk(
        self, rows: list[tuple[int, list[int]]], params: SamplingParams, decode_step
    ) -> list[Completion]:
        """Decode one left-padded batch token by token with a KV cache.

        Our own loop rather than `model.generate`: it keeps only the current step's [batch, vocab]
        distribution (generate's `output_logits` holds all steps: gigabytes for a 49k vocabulary) and
        gathers the raw log-probability of each sampled token as it goes. Everything stays on the
        device until the end: one host sync per step (the all-done check).
        """
        device = self.model.device
        batch = len(rows)
        prompt_lens = torch.tensor([len(ids) for _, ids in rows], device=device)
        width = int(prompt_lens.max())
        span = width + params.max_tokens
        if self.static:
            span = -(-span // STATIC_LEN_STEP) * STATIC_LEN_STEP
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        # Generated slots are 1 from the start: causality hides a slot until its token is written.
        attention = torch.ones((batch, span), dtype=torch.long)
        for r, (_, ids) in enumerate(rows):
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention[r, : width - len(ids)] = 0
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention[:, :width].cumsum(-1) - 1).clamp(min=0)
        eos = torch.tensor(sorted(self.eos_ids) or [-1], device=device)
        past = StaticCache(config=self.model.config, max_cache_len=span) if self.static else DynamicCache()
        steps_tokens, steps_lps, steps_top, alive_at = [], [], [], []
        alive = torch.ones(batch, dtype=torch.bool, device=device)  # still generating before this step
        stopped_by_string = [False] * batch
        # `live`: the rows of the whole batch that the model still decodes. With a dynamic cache, rows
        # that have ended leave the batch (their cache rows too, `COMPACT_AT`), so the long tail of a
        # batch costs what its live rows cost. Each step still draws one uniform per row of the whole
        # batch, so every row's tokens are those it gets without the compaction.
        live = torch.arange(batch, device=device)
        sampled = params.temperature != 0
        step_ids = input_ids
        for step in range(params.max_tokens):
            forward = self.model  # the prefill's shape changes with every batch: never compiled
            if step > 0 and decode_step is not self.model:
                forward = decode_step
                torch.compiler.cudagraph_mark_step_begin()
            out = forward(
                input_ids=step_ids,
                attention_mask=attention if self.static else attention[:, : width + step],
                position_ids=positions,
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,  # the prefill needs only the last position's logits
            )
            raw = out.logits[:, -1].float().log_softmax(-1)  # [live, vocab], the unmodified distribution
            u = torch.rand((batch, 1), dtype=raw.dtype, device=device)[live] if sampled else None
            chosen = sample_next(raw, params, u)
            lp = raw.gather(1, chosen[:, None])[:, 0]
            top = raw.topk(params.logprobs, dim=-1) if params.logprobs else None
            if len(live) < batch:  # back to whole-batch rows; rows that have ended get filler
                chosen = torch.full((batch,), self.pad_id, dtype=chosen.dtype, device=device).index_copy(
                    0, live, chosen
                )
                lp = torch.zeros(batch, dtype=lp.dtype, device=device).index_copy(0, live, lp)
                if top is not None:
                    top = _scatter_topk(top, live, batch)
            steps_tokens.append(chosen)
            steps_lps.append(lp)
            if top is not None:
                steps_top.append(top)
            alive_at.append(alive)
            alive = alive & ~torch.isin(chosen, eos)
            if params.stop:  # stop strings need text: decode the tails on the host
                tokens_so_far = torch.stack(steps_tokens, 1).tolist()
                lengths_now = torch.stack(alive_at, 1).sum(1).tolist()
                for r, was_alive in enumerate(alive_at[-1].tolist()):
                    if was_alive and not stopped_by_string[r]:
                        stopped_by_string[r] = self._hit_stop(tokens_so_far[r][: lengths_now[r]], params.stop)
                alive = alive & ~torch.tensor(stopped_by_string, device=device)
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if not self.static and n_alive <= COMPACT_AT * len(live):
                keep = alive[live].nonzero()[:, 0]
                past.batch_select_indices(keep)
                live, attention = live[keep], attention[keep]
            step_ids = chosen[live][:, None]
            positions = (prompt_lens[live] + step)[:, None]  # right after the tokens so far
        return self._completions(
            rows, params, steps_tokens, steps_lps, steps_top, alive_at, stopped_by_string
        )

    def _completions(self, rows, params, steps_tokens, steps_lps, steps_top, alive_at, stopped_by_string):
        """Per-step device tensors -> one `Completion` per row, cut at its own end."""
        tokens = torch.stack(steps_tokens, 1).tolist()
        lps = torch.stack(steps_lps, 1).tolist()
        lengths = torch.stack(alive_at, 1).sum(1).tolist()
        top_idx = torch.stack([t.indices for t in steps_top], 1).tolist() if steps_top else None
        top_val = torch.stack([t.values for t in steps_top], 1).tolist() if steps_top else None
        completions = []
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
                    top.append(dict(sorted(entry.items(), key=lambda kv: -kv[1])))
            text_ids = ids[:-1] if ended_eos else ids
            text, _ = cut_at_stop(self.tokenizer.decode(text_ids, skip_special_tokens=True), params.stop)
            completions.append(Completion(idx, text, ids, row_lps, top, finish))
        return completions

    def _hit_stop(self, ids: list[int], stops: Sequence[str]) -> bool:
        # the last few tokens decide: decode a tail long enough to hold the longest stop string
        tail = self.tokenizer.decode(ids[-(max(len(s) for s in stops) + 8) :], skip_special_tokens=True)
        return cut_at_stop(tail, stops)[1]


BACKENDS = ("auto", "hf", "vllm")

CPU_VLLM_MIN_PARAMS = 50_000_000
"""On the CPU, "auto" gives a saved model of at least this many parameters to vLLM, a smaller one (or an
in-memory model) to our HF loop. Measured by `benchmarks/generation_speed.py` (64 prompts x 128 new tokens,
T = 1, one thread, tokens per CPU-second; benchmarks/RESULTS.md): SmolLM2-135M-Instruct vLLM 189, HF loop
132, transformers' generate 83; the toy student (0.1M parameters, 588-token vocabulary) HF loop 12,680,
generate 10,459, vLLM 5,537 (vLLM's per-step scheduling outweighs a tiny model's compute). Nothing between
3M and 135M parameters was measured; the threshold sits between the two."""


def saved_parameters(model_or_path) -> int | None:
    """Parameters of a saved model (a folder of *.safetensors, a short name or a cached hub id), read from
    the safetensors headers (no weights loaded); None for an in-memory model or when it cannot be read."""
    if isinstance(model_or_path, torch.nn.Module):
        return None
    try:
        from safetensors import safe_open

        files = sorted(Path(resolve(model_or_path)).expanduser().glob("*.safetensors"))
        total = 0
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                    total += math.prod(f.get_slice(name).get_shape())
        return total or None
    except Exception:  # a hub id not on disk, an unreadable folder: no count, so no vLLM on the CPU
        return None


def resolve_backend(backend: str = "auto", model_or_path=None) -> str:
    """ "hf" or "vllm" for a requested backend. "auto" follows what `benchmarks/generation_speed.py`
    measured: no vLLM installed or an in-memory model -> HF; CUDA -> vLLM; CPU -> vLLM for a saved model of
    at least `CPU_VLLM_MIN_PARAMS` parameters, HF for smaller or unknown ones (`model_or_path` None)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if not vllm_available() or isinstance(model_or_path, torch.nn.Module):
        return "hf"  # vLLM loads a folder: an in-memory model stays on the HF loop
    if torch.cuda.is_available():
        return "vllm"
    n = saved_parameters(model_or_path) if model_or_path is not None else None
    return "vllm" if n is not None and n >= CPU_VLLM_MIN_PARAMS else "hf"


def make_generator(model_or_path, tokenizer=None, backend: str = "auto", **kwargs) -> Generator:
    """HF or vLLM. "auto": `resolve_backend` (vLLM on CUDA where installed; on the CPU vLLM only for a saved
    model of `CPU_VLLM_MIN_PARAMS` parameters or more, as measured).

    `model_or_path`: an in-memory model (HF only), a folder, hub id or short name. `kwargs` go to
    `HFGenerator` or to `VLLMGenerator` (seed and vLLM engine arguments).
    """
    backend = resolve_backend(backend, model_or_path)
    in_memory = isinstance(model_or_path, torch.nn.Module)
    if backend == "vllm":
        if in_memory:
            raise ValueError("the vLLM backend needs a model folder: save it first with save_for_vllm()")
        return VLLMGenerator(model_or_path, tokenizer=tokenizer, **kwargs)
    model = model_or_path if in_memory else load_causal_lm(model_or_path)
    if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
        if tokenizer is None and in_memory:
            raise ValueError("HFGenerator needs a tokenizer for an in-memory model")
        tokenizer = load_tokenizer(tokenizer or model_or_path)
    return HFGenerator(model, tokenizer, **kwargs)
