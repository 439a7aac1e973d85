"""IPVRM + DistRL run configuration: one `IPVRMConfig` (a frozen dataclass per stage) and its presets.

    python -m common.reproduce ipvrm                                   # toy: CPU, 2 cores
    python -m common.reproduce ipvrm --set rl.seeds=[0] --set rl.chunks=10   # any field

Only the toy preset exists (small / paper: not built, the README says so). Sources of defaults: "spec" =
shared/papers/ipvrm.md "Toy-scale check"; "ours" = a choice made here (README "Deviations", NOTES.md);
UNCONFIRMED = nobody says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import ConfigError
from common.models import TINY_PRESETS
from papers.ipvrm.training import RM_KINDS
from papers.ipvrm.world import WorldSpec

RL_METHODS = {  # method name (claims.yaml) -> (candidate top-k, alpha, GAE coefficient of the RM's TD)
    "GRPO w/ VR": (1, 0.0, 0.0),  # calibration arm: the verifier's outcome only
    "GRPO w/ IPVRM": (1, 0.0, None),  # None: the code's 0.05 (`rl.gae_coef`)
    "DistRL w/ IPVRM": (5, None, None),  # None: `rl.alpha`
}


@dataclass(frozen=True)
class SFTConfig:
    """pi_SFT: teacher-forced NLL on training-format trajectories (one pass over fresh samples)."""

    preset: str = "tiny-student"  # common.models tiny preset (spec: a 2-layer d 64 GPT, ~0.1M params)
    steps: int = 1000  # ours (spec 500: the SFT probes stayed near chance there, NOTES.md)
    batch: int = 128  # spec
    lr: float = 3e-3  # spec (Adam)
    warmup: int = 0  # ours: > 0 turns on linear warm-up + cosine decay to 0.1 lr
    seed: int = 0
    val_prompts: int = 500  # ours: validation probes (never the test prompts)


@dataclass(frozen=True)
class RMConfig:
    """The reward models: copies of pi_SFT trained on labelled training-format trajectories (spec)."""

    kinds: tuple[str, ...] = ("IPVRM", "Implicit PRM", "DPO-RM")  # paper (Q-RM, EndoRM: not built)
    seeds: tuple[int, ...] = (0, 1, 2)
    train_rows: int = 4000  # spec
    steps: int = 200  # ours (spec 400; CPU budget)
    batch: int = 64  # spec
    lr: float = 3e-4  # spec (Adam)
    beta_ipvrm: float = 1.0  # spec toy (paper: 10)
    margin: float = 0.5  # spec toy (paper: 5)
    beta_implicit: float = 1.0  # spec toy (paper: 0.05)
    beta_dpo: float = 1.0  # ours, as the toy's other betas (paper: 0.05)
    eval_rows: int = 1000  # spec: ProcessBench-style F1 on 1,000 evaluation trajectories
    val_rows: int = 600  # spec: the threshold is chosen on a separate 600-trajectory validation set
    auc_steps: tuple[int, ...] = (1, 3, 5)  # spec: prefix AUC after 1, 3, 5 steps


@dataclass(frozen=True)
class RLConfigIPVRM:
    """Part B: DistRL vs GRPO with the same frozen IPVRM (seed `rm_seed`'s), plus GRPO w/ VR."""

    enabled: bool = True
    methods: tuple[str, ...] = tuple(RL_METHODS)
    seeds: tuple[int, ...] = (0, 1, 2)
    rm_seed: int = 0
    chunks: int = 40  # ours (spec 150 RL steps, one update each; CPU budget)
    prompts_per_chunk: int = 32  # spec
    samples_per_prompt: int = 4  # spec
    lr: float = 1e-4  # spec (Adam); checked on validation prompts, NOTES.md (1e-3 was unstable)
    temperature: float = 1.0  # spec
    alpha: float = 0.1  # spec
    top_k: int = 5  # spec
    p_min: float = 0.1  # spec
    gae_coef: float = 0.05  # spec ("as in the official code")
    mixed_only: bool = True  # spec: keep only prompts with mixed outcomes
    max_grad_norm: float | None = 1.0  # ours (run_rl's default; the spec does not say: UNCONFIRMED)
    last_fraction: float = 1 / 3  # spec: metrics over the last 50 of 150 steps
    train_prompts: int = 20000  # ours: the RL prompt pool
    eval_prompts: int = 500  # spec: final greedy accuracy on 500 held-out prompts


@dataclass(frozen=True)
class RealProcessBenchConfig:
    """ProcessBench (real data, `processbench_lm.py`) scored by a real LM pair. Toy: SmolLM2-135M-Instruct
    as both RM and reference on a seeded sample, the issue's end-to-end check (a floor: every ratio is 0)."""

    enabled: bool = True
    rm: str = "smollm2-135m-instruct"
    ref: str = "smollm2-135m-instruct"
    per_subset: int = 6  # ours: rows per subset (seeded, 3 erroneous + 3 correct; the CPU budget)
    seed: int = 0
    coef: float = 0.001  # code default (process_eval.py --coef); no prediction depends on it


@dataclass(frozen=True)
class BoNConfig:
    """Best-of-N (paper step 4, Table 1): candidates from pi_SFT on the test prompts, scored by every
    trained RM (`bon.py`: consecutive N-groups, one solution score per RM kind), graded by math-verify
    on the final answer; one candidate pool per RM seed (its seed = `seed_base` + the RM seed)."""

    enabled: bool = True
    problems: int = 500  # ours: the first `problems` of the 500 test prompts (the policy-eval set)
    samples: int = 64  # paper: 64 candidates per problem (N up to 64)
    ns: tuple[int, ...] = (4, 16, 64)  # paper
    temperature: float = 1.0  # UNCONFIRMED: the paper does not state the BoN sampling temperature
    seed_base: int = 1000  # ours


@dataclass(frozen=True)
class IPVRMConfig:
    scale: str
    world: WorldSpec = field(default_factory=WorldSpec)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    rl: RLConfigIPVRM = field(default_factory=RLConfigIPVRM)
    processbench: RealProcessBenchConfig = field(default_factory=RealProcessBenchConfig)
    bon: BoNConfig = field(default_factory=BoNConfig)
    threads: int = 1  # torch CPU threads per process
    workers: int = 2  # processes for the RM and RL runs

    def __post_init__(self) -> None:
        check_config(self)


def _positive(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0):
            raise ConfigError(f"ipvrm: {name} must be > 0, got {v!r}")


def check_config(cfg: IPVRMConfig) -> None:
    """One-line `ConfigError` (a ValueError) for a value outside its range or the tables above."""
    s, rm, rl = cfg.sft, cfg.rm, cfg.rl
    if s.preset not in TINY_PRESETS:
        raise ConfigError(f"ipvrm: sft.preset {s.preset!r}; valid: {', '.join(TINY_PRESETS)}")
    for what, values, valid in (("rm.kinds", rm.kinds, RM_KINDS), ("rl.methods", rl.methods, RL_METHODS)):
        bad = [v for v in values if v not in valid]
        if bad:
            raise ConfigError(f"ipvrm: unknown {what} entry {bad[0]!r}; valid: {', '.join(valid)}")
    if "IPVRM" not in rm.kinds and rl.enabled and rl.methods != ("GRPO w/ VR",):
        raise ConfigError("ipvrm: the RL arms use the IPVRM, so rm.kinds must include 'IPVRM'")
    if not rm.seeds or not rl.seeds or not rl.methods:
        raise ConfigError("ipvrm: rm.seeds, rl.seeds and rl.methods must be non-empty")
    if rl.enabled and rl.rm_seed not in rm.seeds:
        raise ConfigError(f"ipvrm: rl.rm_seed {rl.rm_seed} is not one of rm.seeds {list(rm.seeds)}")
    _positive(
        **{"sft.steps": s.steps, "sft.batch": s.batch, "sft.lr": s.lr, "sft.val_prompts": s.val_prompts},
        **{"rm.steps": rm.steps, "rm.batch": rm.batch, "rm.lr": rm.lr, "rm.train_rows": rm.train_rows},
        **{"rm.beta_ipvrm": rm.beta_ipvrm, "rm.beta_implicit": rm.beta_implicit, "rm.beta_dpo": rm.beta_dpo},
        **{"rm.eval_rows": rm.eval_rows, "rm.val_rows": rm.val_rows, "rl.chunks": rl.chunks},
        **{"rl.prompts_per_chunk": rl.prompts_per_chunk, "rl.lr": rl.lr, "rl.temperature": rl.temperature},
        **{"rl.top_k": rl.top_k, "rl.train_prompts": rl.train_prompts, "rl.eval_prompts": rl.eval_prompts},
        **{"threads": cfg.threads, "workers": cfg.workers},
        **{
            "processbench.per_subset": cfg.processbench.per_subset,
            "processbench.coef": cfg.processbench.coef,
        },
    )
    if cfg.processbench.per_subset < 2:
        raise ConfigError(
            f"ipvrm: processbench.per_subset must be >= 2 (an erroneous and a correct row), got "
            f"{cfg.processbench.per_subset}"
        )
    b = cfg.bon
    _positive(**{"bon.problems": b.problems, "bon.samples": b.samples, "bon.temperature": b.temperature})
    if not b.ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in b.ns):
        raise ConfigError(f"ipvrm: bon.ns must be a non-empty list of ints >= 1, got {list(b.ns)}")
    if max(b.ns) > b.samples:
        raise ConfigError(
            f"ipvrm: bon.ns has N = {max(b.ns)}, more than the bon.samples = {b.samples} candidates drawn "
            "per problem"
        )
    if rl.samples_per_prompt < 2:
        raise ConfigError(
            f"ipvrm: rl.samples_per_prompt must be >= 2 (GRPO groups), got {rl.samples_per_prompt}"
        )
    if s.warmup < 0 or rm.margin < 0 or rl.alpha < 0 or rl.gae_coef < 0:
        raise ConfigError("ipvrm: sft.warmup, rm.margin, rl.alpha and rl.gae_coef must be >= 0")
    if not 0 < rl.last_fraction <= 1 or not 0 <= rl.p_min < 1:
        raise ConfigError(
            f"ipvrm: rl.last_fraction in (0, 1] and rl.p_min in [0, 1), got {rl.last_fraction}, {rl.p_min}"
        )
    if any(not 1 <= k <= cfg.world.digits for k in rm.auc_steps):
        raise ConfigError(
            f"ipvrm: rm.auc_steps must lie in [1, {cfg.world.digits}], got {list(rm.auc_steps)}"
        )


TOY = IPVRMConfig(scale="toy")
PRESETS = {"toy": TOY}


def get_config(scale: str) -> IPVRMConfig:
    """The preset of a scale (`common.config.apply_overrides` changes any field of it)."""
    if scale not in PRESETS:
        raise ValueError(f"only the toy preset is built; {scale!r} is not (valid: {', '.join(PRESETS)})")
    return PRESETS[scale]
