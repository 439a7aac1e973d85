"""alpha-UMi run configuration: one `UmiConfig`, three presets (`get_config("toy"|"small"|"paper")`).

    make reproduce PAPER=umi                       # toy: MiniToolBench x 4 conditions x 3 seeds + SmolLM2
                                                   # zero-shot on ToolBench OOD steps (CPU, minutes)
    make reproduce PAPER=umi SCALE=small           # 1 GPU: Qwen2.5-0.5B-Instruct GLPFT on the mirrored role data
    python -m common.reproduce umi --set train.s1=200 --set seeds=[0]

Sources: "paper" / "code" (the spec's reading of X-PLUG/Multi-LLM-Agent f9eeef7), "spec toy" (its toy
check), "ours" (a CPU-budget choice, listed in the README's deviations). UNCONFIRMED as marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from common.config import ConfigError


@dataclass(frozen=True)
class WorldConfig:
    n_train: int = 3000
    """Training trajectories per seed (spec toy: 3,000)."""
    n_test: int = 300
    """Test trajectories per seed (spec toy: 300, about 1,200 steps)."""
    n_live: int = 100
    """Test queries run through the live agent loop per seed and condition (ours)."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "tiny"
    """`tiny`: the spec toy's decoder (Qwen2 blocks); else an HF id / short name (paper: LLaMA-2-chat-7B)."""
    hidden: int = 48
    layers: int = 2
    heads: int = 4
    ffn: int = 192
    context: int = 256
    """Spec toy: 2 layers, d_model 48, 4 heads, FFN 192, context 256, tied embeddings (~0.1M params)."""
    lora: bool = False
    """peft LoRA instead of full fine-tuning (paper: full fine-tuning)."""
    lora_r: int = 16


@dataclass(frozen=True)
class TrainConfig:
    s1: int = 1000
    """Stage-1 (global) optimizer steps; every condition gets S = s1 + s2 (spec toy: 1,000)."""
    s2: int = 300
    """Stage-2 (local) steps per role (spec toy: 300)."""
    batch_size: int = 32
    lr: float = 1e-3
    """AdamW, cosine, 5 % warmup (spec toy); paper: stage 1 5e-5, stage 2 1e-5."""
    lr_stage2: float | None = None
    """Stage-2 learning rate; None: `lr`."""
    warmup: float = 0.05
    weight_decay: float = 0.0
    max_len: int = 256
    """model_max_length: longer samples keep their last tokens (code: 4096)."""
    system_prefix: bool = False
    """Prepend the official "system: " to training inputs (code: True; the toy templates have none)."""
    stale_giveup_input: bool = False
    """Official bug (d): the backbone give-up sample reuses the previous input (code: True)."""


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 48
    """Per role output (code: 512)."""
    batch_size: int = 64
    greedy: bool = True
    """Greedy decoding (ours, the default); False: the official sampling."""
    temperature: float = 0.6
    top_p: float = 0.9
    """Official sampling settings if inherited from LLaMA-2-chat's generation_config: UNCONFIRMED."""
    official_prompts: bool = False
    """True: the official static-eval prompts (no "system: " prefix, "planner: " tag before the
    caller / summarizer); False (ours): as at training."""
    live_max_steps: int = 8
    """Planner turns per live query (ToolBench DFSDT: 12 per chain)."""


@dataclass(frozen=True)
class RealConfig:
    enabled: bool = True
    """Run the static eval on the real ToolBench OOD steps."""
    model: str = "smollm2-135m-instruct"
    """Zero-shot floor at toy scale; at small scale the GLPFT-trained backbone."""
    limit: int | None = 16
    """Steps evaluated (stratified subsample; None: all 1,547)."""
    max_input_tokens: int = 768
    """Left truncation of the prompt (code: 3750)."""
    max_new_tokens: int = 32
    backend: str = "auto"
    """Generation backend of the three roles: "hf" (our decode loop), "vllm" (one vLLM engine per distinct
    role model, the GPU's memory shared between them), or "auto" (`common.generation.resolve_backend`: vLLM
    where installed on CUDA, else HF). The official code serves each role from its own server."""
    train: bool = False
    """Train GLPFT (stage 1 + three stage-2 copies) on the mirrored train-example role data first."""
    train_steps: int = 40
    train_batch: int = 4

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"umi: real.limit must be >= 1 or null (all 1,547 steps), got {self.limit}")
        if self.backend not in ("auto", "hf", "vllm"):
            raise ConfigError(f"umi: real.backend must be one of auto, hf, vllm, got {self.backend!r}")


@dataclass(frozen=True)
class UmiConfig:
    scale: str = "toy"
    seeds: tuple[int, ...] = (0, 1, 2)
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    real: RealConfig = field(default_factory=RealConfig)
    toy: bool = True
    """Run the MiniToolBench check."""
    torch_threads: int = 1


TOY = UmiConfig(
    world=WorldConfig(n_train=3000, n_test=60, n_live=30),
    train=TrainConfig(s1=120, s2=40, batch_size=8, lr=3e-3),
    eval=EvalConfig(max_new_tokens=40),
)
"""Spec toy scaled to the 2-core budget (measured 0.08 s per step of batch 8 under load 3.5): S1 120, S2 40,
batch 8, lr 3e-3, 60 test trajectories (about 250 steps), 30 live queries; the spec's 1,000 / 300 / 32 run with `--set`."""
SMALL = replace(
    UmiConfig(scale="small", seeds=(0,), toy=False),
    model=ModelConfig(backbone="Qwen/Qwen2.5-0.5B-Instruct", context=4096),
    train=TrainConfig(lr=5e-5, lr_stage2=1e-5, batch_size=4, max_len=4096, system_prefix=True),
    eval=EvalConfig(max_new_tokens=512, batch_size=8),
    real=RealConfig(model="Qwen/Qwen2.5-0.5B-Instruct", limit=None, max_input_tokens=3750, max_new_tokens=512,
                    train=True, train_steps=200, train_batch=4),
)  # fmt: skip
PAPER = replace(
    SMALL,
    scale="paper",
    model=ModelConfig(backbone="meta-llama/Llama-2-7b-chat-hf", context=4096),
    real=replace(SMALL.real, model="meta-llama/Llama-2-7b-chat-hf"),
)


def get_config(scale: str = "toy") -> UmiConfig:
    presets = {"toy": TOY, "small": SMALL, "paper": PAPER}
    if scale not in presets:
        raise KeyError(scale)
    return presets[scale]
