"""LCO run configuration: one `LCOConfig` (a frozen dataclass per stage), three presets, the method table.

    python -m common.reproduce lco                               # toy: CPU, 2 cores
    python -m common.reproduce lco --scale small                 # 1 GPU: Qwen2.5-0.5B-Instruct on GSM8K
    accelerate launch --config_file papers/lco/configs/zero3.yaml -m common.reproduce lco --scale paper
    python -m common.reproduce lco --set rl.seeds=[0] --set stability.enabled=false   # any field

Sources of defaults: "spec" = shared/papers/lco.md, "code" = homzer/llama-rlhf's LCO scripts as the spec
read them (not confirmed as the paper's code), "gate" = `common.synthetic.rl_gate.GateConfig()` (the RL
testbed's calibrated regime, read by reference at run time: a field left None takes the gate's value, so a
recalibrated gate flows in), "ours" = a choice made here, UNCONFIRMED = nobody says.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from common.config import ConfigError
from common.models import ModelNotFoundError, check_local_path
from common.rl import GROUP_ADVANTAGES, LOSS_NORMS
from common.rl_loop import RLConfig
from common.synthetic.rl_gate import GateConfig
from papers.lco.lco import ANCHORS

METHODS = {  # method name (claims.yaml) -> (run_rl algorithm, LCO loss variant or None)
    "PPO": ("ppo", None),  # PPO-clip with a critic and GAE (the framework's PPO baseline)
    "GRPO": ("reinforce", None),  # group advantages, ratio 1 at one update per chunk (the gate's arm)
    "LCO-KLD": ("reinforce", "kld"),
    "LCO-MSE": ("reinforce", "mse"),
    "LCO-LCH": ("reinforce", "lch"),
}
DENSE_SOURCES = {"Q-RM": "qrm", "DPO-RM": "dpo"}  # row name -> arms.DenseSource kind
DENSE_METHODS = ("LCO-KLD", "PPO")  # LCO-KLD vs the gradient-norm study's PPO-clip on the same source
TASKS = ("arith", "gsm8k", "math")
ADVANTAGE_KINDS = (*GROUP_ADVANTAGES, "raw")  # raw: the verifier's +1 / -1 itself (code's LCO scripts)
# The gate's run_seed leaves RLConfig's gradient clipping at its default: read it, do not copy it.
GATE_CLIP = next(f.default for f in fields(RLConfig) if f.name == "max_grad_norm")


@dataclass(frozen=True)
class StabilityConfig:
    """The spec's calibrated GRU check ("Toy-scale check"); every value is the spec's."""

    enabled: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    iterations: int = 150
    beta: float = 0.3  # LCO-KLD's beta, symmetric
    aggressive_lr: float = 1e-2
    normal_lr: float = 3e-3


@dataclass(frozen=True)
class LCOLossConfig:
    """The LCO arms' target and loss (spec sections 2, 3, 6). Paper form by default; code variants opt in."""

    beta: float = 2.0  # code v2 default (paper's UNCONFIRMED); toy: ours
    negative_beta_scale: float = 1.0  # paper: one beta; code rule-RM trainers: 100 (beta_eff, A <= 0)
    anchor: str = "old"  # MSE / LCH target z_old + A/beta (paper); "current": z.detach() + A/beta (code)
    logits_topk: int | None = None  # None: full pi_old (paper); 5: the code's top-5 truncated pi_old


@dataclass(frozen=True)
class RLConfigLCO:
    """RL on a task with the verifier reward. A None regime field takes `GateConfig()`'s value (toy)."""

    enabled: bool = False
    task: str = "gsm8k"  # arith (toy world) | gsm8k | math
    policy: str | None = None  # None: the gate's policy (rl-student); real: an HF id
    methods: tuple[str, ...] = ("PPO", "GRPO", "LCO-KLD", "LCO-MSE", "LCO-LCH")
    seeds: tuple[int, ...] = (0,)
    lr_factors: tuple[float, ...] = (1.0, 3.0)  # ours: the regime's lr x these (normal, aggressive)
    factor_methods: tuple[str, ...] = ()  # methods run at every factor (empty: all); the others at 1.0
    chunks: int | None = None  # gate
    prompts_per_chunk: int | None = None  # gate
    samples_per_prompt: int | None = None  # gate (the GRPO group); code: 1
    lr: float | None = None  # gate; code: 1e-5
    warm_chunks: int | None = None  # gate (lr x 0.1 for these chunks)
    advantage: str | None = None  # gate (grpo); "raw": the code's +1 / -1
    loss_norm: str | None = None  # gate
    temperature: float | None = None  # gate; code 1.0
    max_tokens: int | None = None  # gate
    val_problems: int | None = None  # gate: the curve problems (toy validation split)
    eval_every: int | None = None  # gate (4): chunks between curve evaluations
    sampled_n: int = 4  # ours (gate: 8): samples per val problem for sampled Pass@1; 1 = greedy only
    updates_per_chunk: int = 1  # ours = the gate's one update per chunk; the code: minibatches of 1 chunk
    test_problems: int = 500  # ours: final greedy Pass@1 on the first N test problems
    critic_lr: float = 1e-3  # PPO only; ours (a fresh value head). Code: 1e-5
    gae_gamma: float = 0.9  # code (PPO with rule RM)
    gae_lambda: float = 0.95  # code
    max_grad_norm: float | None = None  # code: no clipping
    forward_batch_size: int | None = None  # rows per no-grad forward (memory only)


@dataclass(frozen=True)
class DenseConfig:
    """RL with the dense advantage sources (spec sections 4 and 6): a Q-RM and a DPO-RM trained on pairs of
    the starting policy's own samples (verifier-correct chosen, incorrect rejected, training split only),
    then LCO-KLD with their top-k advantages and PPO-clip with the same RM's token reward. The regime is
    `rl`'s (`config.regime`), at its lr (factor 1). Results: results/<scale>-dense/ (a separate run)."""

    enabled: bool = False
    sources: tuple[str, ...] = ("Q-RM", "DPO-RM")
    methods: tuple[str, ...] = DENSE_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    k: int = 5  # spec: the k tokens of the dense advantage (code logits_topk 5)
    beta: float = 2.0  # code: policy_train_lco_with_qrm_v2 / _with_dpo_rm defaults (paper UNCONFIRMED)
    reward_sub_mean: bool = False  # PPO's token reward: Q-RM code's Z / std (True: (Z - mean) / std)
    pair_prompts: int = 512  # ours: training-split prompts sampled for the RM pairs
    pair_samples: int = 4  # ours: samples per prompt (T = rl.temperature; the code's 1.0)
    pairs_per_prompt: int = 2  # ours: (correct, incorrect) pairs kept per prompt
    heldout_pairs: int = 200  # ours: pairs (of other training prompts) for the RMs' pairwise accuracy
    rm_lr: float = 1e-4  # ours: qrm's toy RMs (Q-RM code: 1e-5 for LoRA on a 70B LM)
    rm_batch_size: int = 32  # ours: qrm's toy RMs (code: 2)
    rm_steps: int = 100  # ours: qrm's toy RMs (100 steps of 32 pairs)
    qrm_beta: float = 0.2  # spec (code QRMLoss): Q-RM beta
    qrm_gamma: float = 2.0  # spec (code QRMLoss): Q-RM gamma
    dpo_beta: float = 0.1  # Q-RM paper's DPO-RM beta (LCO's DPO-RM training: UNCONFIRMED)
    rm_max_len: int = 256  # ours: prompt + response tokens (toy responses are < 100)


@dataclass(frozen=True)
class LCOConfig:
    scale: str
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    rl: RLConfigLCO = field(default_factory=RLConfigLCO)
    loss: LCOLossConfig = field(default_factory=LCOLossConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    backend: str = "auto"  # generation: vLLM on CUDA when installed, else HF
    vllm_memory: float = 0.3  # ours: vLLM's share of the GPU
    threads: int | None = None  # torch CPU threads (toy: 1 per process)
    workers: int = 1  # processes for the stability runs and the RL runs (toy: 2)
    deepspeed_config: str | None = None  # paper: papers/lco/configs/zero3.yaml (accelerate launch)

    def __post_init__(self) -> None:
        check_config(self)


def regime(rl: RLConfigLCO) -> RLConfigLCO:
    """`rl` with every None regime field replaced by `GateConfig()`'s value (read now, not copied)."""
    gate = GateConfig()
    filled = {
        f.name: getattr(gate, f.name)
        for f in fields(rl)
        if getattr(rl, f.name) is None and hasattr(gate, f.name) and f.name != "policy"
    }
    return replace(rl, **filled, policy=rl.policy or gate.policy)


def check_config(cfg: LCOConfig) -> None:
    """One-line `ConfigError` (a ValueError) for a value outside the tables above."""
    rl, loss, dense = cfg.rl, cfg.loss, cfg.dense
    for what, values, valid in (
        ("dense source", dense.sources, DENSE_SOURCES),
        ("dense method", dense.methods, DENSE_METHODS),
        ("method", rl.methods, METHODS),
        ("method", rl.factor_methods, METHODS),
        ("task", (rl.task,), TASKS),
        ("anchor", (loss.anchor,), ANCHORS),
        ("advantage", (rl.advantage,) if rl.advantage else (), ADVANTAGE_KINDS),
        ("loss_norm", (rl.loss_norm,) if rl.loss_norm else (), LOSS_NORMS),
        ("backend", (cfg.backend,), ("auto", "hf", "vllm")),
    ):
        bad = [v for v in values if v not in valid]
        if bad:
            raise ConfigError(f"lco: unknown {what} {bad[0]!r}; valid: {', '.join(valid)}")
    if not loss.beta > 0 or not cfg.stability.beta > 0:
        raise ConfigError(
            f"lco: beta must be > 0, got loss.beta={loss.beta}, stability.beta={cfg.stability.beta}"
        )
    if not loss.negative_beta_scale > 0:
        raise ConfigError(f"lco: loss.negative_beta_scale must be > 0, got {loss.negative_beta_scale}")
    if loss.logits_topk is not None and loss.logits_topk < 1:
        raise ConfigError(f"lco: loss.logits_topk must be >= 1 or null, got {loss.logits_topk}")
    if not rl.methods or not rl.seeds or not rl.lr_factors or any(f <= 0 for f in rl.lr_factors):
        raise ConfigError("lco: rl.methods, rl.seeds and rl.lr_factors must be non-empty (factors > 0)")
    if dense.enabled and (not dense.sources or not dense.methods or not dense.seeds):
        raise ConfigError("lco: dense.sources, dense.methods and dense.seeds must be non-empty")
    if not dense.beta > 0 or dense.k < 1:
        raise ConfigError(f"lco: dense.beta must be > 0 and dense.k >= 1, got {dense.beta}, {dense.k}")
    if rl.updates_per_chunk < 1:
        raise ConfigError(f"lco: rl.updates_per_chunk must be >= 1, got {rl.updates_per_chunk}")
    try:  # now, not after the stability runs and the SFT stage
        check_local_path(rl.policy or "", "rl.policy")
    except ModelNotFoundError as err:
        raise ConfigError(f"lco: {err}") from None


# Toy: the GRU stability check, then the RL testbed's policy and regime (by reference) on the arithmetic world.
# LCO beta 1.0 for the z-scored group advantages (ours; the spec's GRU check uses 0.3 with the same z-scores).
TOY = LCOConfig(
    scale="toy",
    stability=StabilityConfig(enabled=True),
    rl=RLConfigLCO(
        enabled=True,
        task="arith",
        seeds=(0, 1, 2),
        test_problems=200,  # ours: 200 test problems (was 500; the cost is greedy decoding per arm)
        factor_methods=("PPO", "GRPO", "LCO-KLD"),
        max_grad_norm=GATE_CLIP,
    ),
    loss=LCOLossConfig(beta=1.0),
    dense=DenseConfig(enabled=True),  # results/toy-dense/ (a separate run: see README "How to run")
    threads=1,
    workers=2,
)

# Small: one GPU, Qwen2.5-0.5B-Instruct on GSM8K, the code's LCO regime (1 sample per prompt, raw +/-1,
# beta 2, lr 1e-5) with a GRPO group of 4 for the GRPO arm's sake (ours). Runtime estimate in the README.
SMALL = LCOConfig(
    scale="small",
    rl=RLConfigLCO(
        enabled=True,
        task="gsm8k",
        policy="Qwen/Qwen2.5-0.5B-Instruct",
        chunks=12,
        prompts_per_chunk=512,
        samples_per_prompt=4,
        lr=1e-6,
        warm_chunks=0,
        advantage="grpo",
        loss_norm="token",
        temperature=1.0,
        max_tokens=512,
        val_problems=200,
        updates_per_chunk=64,
        test_problems=1319,
        factor_methods=("PPO", "LCO-KLD"),
        critic_lr=1e-5,
        forward_batch_size=16,
    ),
    loss=LCOLossConfig(beta=2.0, logits_topk=5),
)

# Paper: Qwen2.5-3B-Instruct (the one model an aggregator names; base vs instruct UNCONFIRMED), MATH, the code's
# defaults (lr 1e-5, beta 2, top-5 old logits, 1 sample per prompt, raw +/-1 advantages); chunks UNCONFIRMED.
PAPER = LCOConfig(
    scale="paper",
    rl=replace(
        SMALL.rl,
        task="math",
        policy="Qwen/Qwen2.5-3B-Instruct",
        samples_per_prompt=1,
        advantage="raw",
        lr=1e-5,
        max_tokens=1024,
        prompts_per_chunk=3072,
        updates_per_chunk=384,
        test_problems=500,
        methods=("PPO", "LCO-KLD", "LCO-MSE", "LCO-LCH"),
    ),
    loss=LCOLossConfig(beta=2.0, logits_topk=5),
    deepspeed_config="papers/lco/configs/zero3.yaml",
)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}


def get_config(scale: str) -> LCOConfig:
    """The preset of a scale (`common.config.apply_overrides` changes any field of it)."""
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[scale]
