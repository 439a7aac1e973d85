"""Q-RM run configuration: one `QRMConfig` (a frozen dataclass per stage group), three presets, the method table.

    python -m common.reproduce qrm                              # toy: CPU, 2 cores, < 10 min
    python -m common.reproduce qrm --scale small                # 1 GPU: Qwen2.5-0.5B policy, 1.5B RMs
    accelerate launch --config_file papers/qrm/configs/zero3.yaml -m common.reproduce qrm --scale paper
    python -m common.reproduce qrm --set seeds=[0] --set reinforce.chunks=4   # any field, type-checked

Sources of defaults: "spec" = shared/papers/qrm.md (which read the official scripts of homzer/Q-RM @ 74fd338),
"code" = a value only the official code gives, "ours" = a choice made here (toy budget), UNCONFIRMED = neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import ConfigError
from common.synthetic.flaws import HABITS

METHODS = {  # method name (published.csv / claims.yaml) -> (algorithm, reward model)
    "REINFORCE+Q-RM": ("reinforce", "qrm"),
    "REINFORCE+ORM": ("reinforce", "orm"),
    "PPO+Q-RM": ("ppo", "qrm"),
    "PPO+ORM": ("ppo", "orm"),
    "REINFORCE+DPO-RM": ("reinforce", "dpo"),
    "PPO+DPO-RM": ("ppo", "dpo"),
    "REINFORCE+Implicit-PRM": ("reinforce", "implicit"),
    "PPO+Implicit-PRM": ("ppo", "implicit"),
    "REINFORCE+oracle": ("reinforce", "oracle"),  # ours: calibration, the answer's correctness as reward
}
LOG_RATIO_KINDS = ("dpo", "implicit")  # DPORewardModel: policy + frozen reference, beta * log-ratio rewards
RM_NAMES = {"qrm": "Q-RM", "orm": "ORM", "dpo": "DPO-RM", "implicit": "Implicit-PRM"}
TASKS = ("arith", "gsm8k", "math")  # arith: the toy world (common/synthetic); gsm8k, math: the spec's


@dataclass(frozen=True)
class RMConfig:
    """Reward-model training (Q-RM, ORM, DPO-RM; spec "Q-RM training loss", scripts/train-q-rm.sh)."""

    backbone: str = "meta-llama/Meta-Llama-3-70B-Instruct"  # spec Setup; toy: a base-model size
    lora_rank: int | None = 128  # spec: LoRA 128 on q,k,v,o,w1,w2,w3; None = full fine-tuning
    beta: float = 0.2  # spec: Q-RM beta
    gamma: float = 2.0  # spec: Q-RM gamma
    lr: float = 1e-5  # spec: Adam, no weight decay, no schedule
    batch_size: int = 2  # spec: 2 pairs per step (no data parallelism in the code)
    max_steps: int | None = None  # None: 1 epoch (spec) = pairs / batch_size
    max_len: int = 1024  # spec: prompt kept, response truncated from the end
    seed: int = 1  # code default seed
    dpo_beta: float = 0.1  # spec: DPO-RM beta (scripts/train-dpo-rm.sh); token reward beta * log-ratio
    dpo_lr: float = 1e-6  # spec: DPO-RM lr (the implicit PRM uses it too, UNCONFIRMED)
    dpo_official_shift: bool = False  # True: the repo's one-token-early DPO-RM rewards (spec); False: aligned
    eval_batch_size: int = 8  # ours: pairs per forward when measuring pairwise accuracy (memory only)
    dpo_eval_batch_size: int = 8  # ours: the same for the DPO-RM / implicit PRM


@dataclass(frozen=True)
class ReinforceConfig:
    """REINFORCE + RM (spec, scripts/train-reinforce-with-q-rm.sh, policy_train_policy_gradient.py)."""

    lr: float = 1e-6  # spec
    minibatch_size: int = 8  # spec: batch 8
    chunk_size: int = 3072  # spec: prompts per chunk
    chunks: int = 12  # spec: 1 epoch of the GSM8K stream = 12 chunks
    samples_per_prompt: int = 1  # spec
    temperature: float = 1.0  # spec
    top_p: float = 1.0  # spec
    max_tokens: int = 1024  # spec: max total length 1024 (we cap new tokens)
    sub_mean: bool = False  # code default: r = Z / std (paper: standardised, flag True)
    eos_overwrite: bool = True  # code: re_scoring_eos_rewards
    baseline: str = "none"  # code: none; "group" (ours): leave-one-out mean over a prompt's samples
    max_grad_norm: float | None = 1.0  # ours; None = off as in the code
    warm_lr_factor: float = 1.0  # spec: no warm-up for REINFORCE (ours at toy scale: lr x this at first)
    warm_chunks: int = 0


@dataclass(frozen=True)
class PPOConfig:
    """PPO + RM (spec, scripts/train-ppo-with-q-rm.sh, src/ppo/{buffer,trainer}.py)."""

    lr: float = 5e-6  # spec
    warm_lr_factor: float = 0.075  # spec: actor lr x 0.075 for chunks 0-1
    warm_chunks: int = 2  # spec
    critic_lr: float = 1e-5  # spec: max(1e-5, lr)
    critic_init: str = "rm"  # code: the critic starts from the (Q-)RM with a fresh head; "policy" (toy, ours)
    minibatch_size: int = 10  # spec: actor batch 10 (critic batch 1 in the code; ours: same minibatch)
    chunk_size: int = 3072  # spec
    chunks: int = 12  # spec
    kl_coef: float = 0.01  # spec: |log pi_old - log pi_ref| penalty
    clip: float = 0.2  # spec
    value_coef: float = 0.01  # code reward_is_q: A = r - 0.01 V (paper: A = r - V -> 1.0)
    normalize_values: bool = True  # code: V / std_chunk(V) before the advantage
    gae_gamma: float = 0.9  # code defaults for the non-Q-RM PPO runs (ORM, DPO-RM)
    gae_lambda: float = 0.8
    temperature: float = 1.0  # spec
    top_p: float = 1.0  # spec
    max_tokens: int = 1024  # spec
    sub_mean: bool = False  # code default (paper flag True)
    max_grad_norm: float | None = 1.0  # ours; None = off as in the code


@dataclass(frozen=True)
class EvalConfig:
    """Pass@1 (greedy) and Pass@k (spec "Evaluation")."""

    max_tokens: int = 1024  # spec: max_seq_len 1024
    pass_k: int = 16  # spec: Pass@16; 0 = not measured
    pass_k_temperature: float = 1.0  # UNCONFIRMED (the authors' later script: 1.0)
    eval_every: int = 1  # spec: the test set is evaluated after every chunk
    sampled_n: int = 0  # ours: > 0 adds an unbiased sampled Pass@1 (n samples at pass_k_temperature)
    batch_size: int = 128  # ours: rows per HF generation batch (speed and memory only; vLLM takes all)


@dataclass(frozen=True)
class DataConfig:
    """Which tasks and how much of each (spec "Setup": GSM8K and MATH)."""

    tasks: tuple[str, ...] = ("gsm8k", "math")  # spec: each with its own RMs and RL runs; toy: ("arith",)
    math_test: str = "math"  # spec: the repo's 4,926 MATH test problems; "math500" (ours, small scale)
    train_problems: int | None = None  # RL prompts / pair questions from the first N (None: all)
    val_problems: int | None = None  # curve problems: toy validation split; real: the first N test problems
    test_problems: int | None = None  # None: the whole test set (spec)
    rm_pairs: int | None = None  # cap on RM training pairs (None: all; ours)
    rm_eval_pairs: int | None = None  # held-out pairs (None: all 787 / 2,291; spec)
    gsm8k_mode: str = "flexible"  # GSM8K answer extraction: last number (ours: an instruct model's format)
    pair_habit: str | None = None  # toy: the policy's habit, carried by `pair_habit_share` of the rejected
    pair_habit_share: float = 0.0  # rationales (flaws.preference_pairs), as pairs sampled from it would be


@dataclass(frozen=True)
class PrefsConfig:
    """Pairs sampled from the policy (real tasks; the paper's construction is UNCONFIRMED: all ours)."""

    samples: int = 8  # responses per question
    pairs_per_question: int = 4  # cap on correct x wrong pairs kept per question
    temperature: float = 1.0  # the RL rollouts' temperature (spec)
    max_tokens: int = 1024  # new tokens per response
    chunk_questions: int = 256  # questions per resumable chunk
    seed: int = 0


@dataclass(frozen=True)
class GRUConfig:
    """The spec's calibrated GRU check ("Toy-scale check")."""

    enabled: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)  # spec
    iterations: int = 200  # spec
    rm_steps: int = 1500  # spec: 1,500 RM steps each
    oracles: bool = False  # ours: also the token / sequence oracle arms


@dataclass(frozen=True)
class QRMConfig:
    scale: str
    policy: str  # spec Setup: meta-llama/Llama-3.2-3B-Instruct, full fine-tuning; toy: a base-model size
    rm: RMConfig = field(default_factory=RMConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prefs: PrefsConfig = field(default_factory=PrefsConfig)
    gru: GRUConfig = field(default_factory=GRUConfig)
    seeds: tuple[int, ...] = (1,)  # code default seed 1
    methods: tuple[str, ...] = (
        "REINFORCE+Q-RM",
        "REINFORCE+ORM",
        "REINFORCE+DPO-RM",
        "PPO+Q-RM",
        "PPO+ORM",
        "PPO+DPO-RM",
    )
    backend: str = "auto"  # generation: vLLM on CUDA when installed, else HF
    vllm_memory: float = 0.3  # vLLM's share of the GPU, the rest is for training (ours)
    forward_batch_size: int | None = 16  # rows per no-grad forward of the RMs / log-probs (None: a chunk)
    threads: int | None = None  # torch CPU threads; toy: 1 (ours: 2 shared cores thrash with 2 per process)
    workers: int = 1  # processes for the GRU check, the RMs and the RL runs (toy: 2; ours)
    deepspeed_config: str | None = None  # paper: papers/qrm/configs/zero3.yaml (accelerate launch)


# Toy: the RL testbed of common/synthetic (README "RL testbed"): the policy is the `rl-student` SFT model
# (tiny-student preset, 169k params, whose errors are mostly one habit, stopping one operation early), the
# RMs on the larger mid model (469k params, full fine-tuning), bigger than the policy as in the paper (70B
# RMs, 3B policy), trained on the world's pairs with half of the rejected rationales carrying the policy's
# habit. The RL regime is the testbed's calibrated one (common.synthetic.rl_gate.GateConfig: 16 prompts x 8
# samples at T = 1 per update, lr 3e-4 after 4 warm-up updates at x0.1), for every arm; ours, chosen on
# the validation split with the oracle arm (NOTES.md "Toy design").
TOY = QRMConfig(
    scale="toy",
    policy="rl-student",
    # RMs: 100 steps of 32 pairs on the mid backbone, lr 1e-4 for all three (validation pairwise accuracy
    # per choice in NOTES.md). The DPO-RM lr is ours (the spec's 1e-6 is for LoRA on a 70B model).
    rm=RMConfig(
        backbone="mid",
        lora_rank=None,
        lr=1e-4,
        batch_size=32,
        max_steps=100,
        max_len=256,
        seed=0,
        dpo_lr=1e-4,
        eval_batch_size=16,
        dpo_eval_batch_size=32,
    ),
    # REINFORCE: one update per chunk of 16 prompts x 8 samples at T = 1 (the loss's temperature), the
    # leave-one-out group baseline, for every REINFORCE arm.
    reinforce=ReinforceConfig(
        lr=3e-4,
        minibatch_size=128,
        chunk_size=16,
        samples_per_prompt=8,
        chunks=12,
        temperature=1.0,
        max_tokens=80,
        baseline="group",
        warm_lr_factor=0.1,
        warm_chunks=4,
    ),
    # PPO: the same samples per update (128 prompts x 1, the spec's one sample per prompt), one update per
    # chunk, the same lr schedule; no V / std_chunk(V) (an untrained critic's noise), value_coef the code's
    # 0.01; the critic is a fresh head on the policy backbone.
    ppo=PPOConfig(
        lr=3e-4,
        warm_lr_factor=0.1,
        warm_chunks=4,
        critic_lr=1e-3,
        critic_init="policy",
        minibatch_size=128,
        chunk_size=128,
        chunks=12,
        max_tokens=80,
        normalize_values=False,
    ),
    eval=EvalConfig(max_tokens=80, pass_k=0, eval_every=4, sampled_n=2, batch_size=512),
    data=DataConfig(
        tasks=("arith",),
        train_problems=4000,
        val_problems=200,
        test_problems=500,
        gsm8k_mode="strict",  # the world's answers end with a `#### n` line
        pair_habit="skip-last",
        pair_habit_share=0.5,
    ),
    gru=GRUConfig(enabled=True),
    methods=(
        "REINFORCE+oracle",
        "REINFORCE+Q-RM",
        "REINFORCE+ORM",
        "REINFORCE+DPO-RM",
        "PPO+Q-RM",
        "PPO+ORM",
    ),
    seeds=(0, 1, 2),
    forward_batch_size=None,
    threads=1,
    workers=2,
)

# Small: one GPU; Qwen2.5-0.5B-Instruct policy (full FT), Qwen2.5-1.5B-Instruct RMs with LoRA 128, GSM8K and
# MATH500. Chunks of 512 prompts so that 12 chunks take a few hours (ours); 8,000 pairs per task keep each RM
# under ~1 h on one GPU (UNCONFIRMED timing); responses up to 512 new tokens.
SMALL = QRMConfig(
    scale="small",
    policy="Qwen/Qwen2.5-0.5B-Instruct",
    rm=RMConfig(backbone="Qwen/Qwen2.5-1.5B-Instruct", lr=1e-5, batch_size=8),
    reinforce=ReinforceConfig(chunk_size=512, max_tokens=512),
    ppo=PPOConfig(chunk_size=512, max_tokens=512),
    eval=EvalConfig(max_tokens=512),
    data=DataConfig(math_test="math500", rm_pairs=8000),
    prefs=PrefsConfig(max_tokens=512),
)

PAPER = QRMConfig(
    scale="paper",
    policy="meta-llama/Llama-3.2-3B-Instruct",
    deepspeed_config="papers/qrm/configs/zero3.yaml",
)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}


def get_config(scale: str) -> QRMConfig:
    """The preset of a scale (`common.config.apply_overrides` changes any field of it)."""
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[scale]


def check_config(cfg: QRMConfig) -> None:
    """One-line `ConfigError` (a ValueError) for a method, task or option outside the tables above."""
    for name, value, valid in (
        ("method", [m for m in cfg.methods if m not in METHODS], METHODS),
        ("dataset", [t for t in cfg.data.tasks if t not in TASKS], TASKS),
        (
            "dataset",
            [cfg.data.math_test] if cfg.data.math_test not in ("math", "math500") else [],
            ("math", "math500"),
        ),
        (
            "critic_init",
            [cfg.ppo.critic_init] if cfg.ppo.critic_init not in ("rm", "policy") else [],
            ("rm", "policy"),
        ),
        (
            "baseline",
            [cfg.reinforce.baseline] if cfg.reinforce.baseline not in ("none", "group") else [],
            ("none", "group"),
        ),
    ):
        if value:
            raise ConfigError(f"qrm: unknown {name} {value[0]!r}; valid: {', '.join(valid)}")
    if cfg.data.pair_habit is not None and cfg.data.pair_habit not in HABITS:
        raise ConfigError(f"qrm: unknown data.pair_habit {cfg.data.pair_habit!r}; valid: {', '.join(HABITS)}")
    if not 0.0 <= cfg.data.pair_habit_share <= 1.0:
        raise ConfigError(f"qrm: data.pair_habit_share must be in [0, 1], got {cfg.data.pair_habit_share}")
    if not cfg.data.tasks or not cfg.methods:
        raise ConfigError("qrm: data.tasks and methods must not be empty")
