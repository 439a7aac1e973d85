"""The stages of the Q-RM small/paper run (`scaled.py` drives them): their settings, the three reward
models, the RL runs and the test-set scores.

Spec `shared/papers/qrm.md`. `rm_stage` trains Q-RM (`qrm_loss`), ORM (BT on the last token) or DPO-RM
(`train_dpo_reward_model`) on the task's pairs with the RM backbone + LoRA (`cfg.rm`), prompts in the
chat template of the POLICY's tokenizer (the RMs score the rollouts' token ids; `check_tokenizers`
refuses an RM whose tokenizer differs), and measures pairwise accuracy on the repo's held-out pairs
(Q-RM: mean token score; ORM: last score; DPO-RM: summed log-ratio). `rl_stage` is one `run_rl` run
with the toy pipeline's RL configs (`pipeline.rl_config`) and reward functions
(`toy_rewards.make_reward_fn`), the RM run in row batches so a real one fits in memory; the DPO-RM arms
use 0.1 (log pi_dpo - log pi_ref) as token rewards through the Q-RM arm's normalisation
(REINFORCE: Z / std + EOS overwrite; PPO: Z / std - KL with GAE, as the code's non-Q-RM PPO runs;
UNCONFIRMED how the paper normalised them). PPO critics start from the arm's RM with a fresh head (the
code: from the Q-RM, LoRA 128; the DPO-RM arm here: from the ORM). Every stage is cached by a hash of
its settings; only the main process writes (`accelerate launch`: see `scaled.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.generation import HFGenerator, vllm_available
from common.models import load_causal_lm
from common.rl_loop import VLLMPolicyEngine, evaluate_pass_at_k, run_rl
from papers.qrm.config import QRMConfig
from papers.qrm.pairwise import evaluate as pairwise_evaluate
from papers.qrm.pipeline import METHODS, SCALED_ONLY_METHODS, rl_config
from papers.qrm.prefs import PrefsConfig, format_prompt
from papers.qrm.reward_models import (
    DPORewardModel,
    RMTrainConfig,
    TokenScorer,
    log_ratio_margins,
    train_dpo_reward_model,
    train_implicit_prm,
    train_reward_model,
)
from papers.qrm.toy_rewards import make_reward_fn as toy_make_reward_fn
from papers.qrm.toy_rms import cached_json, stage_hash

VERSION = 1  # bump to invalidate every cached stage of the scaled run
ALL_METHODS = {  # method name (published.csv) -> (algorithm, reward model): the toy's, less its oracle arm
    m: arm for m, arm in (METHODS | SCALED_ONLY_METHODS).items() if arm[1] != "oracle"
}
LOG_RATIO_KINDS = ("dpo", "implicit")  # DPORewardModel: policy + frozen reference, beta * log-ratio rewards


@dataclass(frozen=True)
class ScaledConfig:
    """Stage settings the presets of config.py do not hold."""

    tasks: tuple[str, ...] = ("gsm8k", "math")  # spec: GSM8K and MATH, each with its own RMs and RL runs
    math_test: str = "math"  # spec: the repo's 4,926 MATH test problems; "math500" (ours, small scale)
    prefs: PrefsConfig = field(default_factory=lambda: PrefsConfig(max_tokens=1024))  # ours, see prefs.py
    rm_pairs: int | None = None  # cap on RM training pairs per task (None: all; ours)
    rm_eval_pairs: int | None = None  # held-out pairs per set (None: all 787 / 2,291; spec)
    test_problems: int | None = None  # None: whole test sets (spec); the first N otherwise
    forward_batch_size: int = 16  # rows per no-grad forward in the RL loop (ours; memory only)
    vllm_memory: float = 0.3  # vLLM's share of the GPU, the rest is for training (ours)


SCALED = {
    # small: MATH500 instead of the 4,926 problems (10x fewer to sample 16 times per problem); 8,000 pairs
    # per task keep each RM under ~1 h on one GPU (UNCONFIRMED timing); responses up to 512 new tokens.
    "small": ScaledConfig(math_test="math500", prefs=PrefsConfig(max_tokens=512), rm_pairs=8000),
    "paper": ScaledConfig(),
}


class Pairs(list):
    """A list of pairs that carries `key`, the cache key of the stage that built them."""

    def __init__(self, pairs: list[dict], key: str):
        super().__init__(pairs)
        self.key = key


class RowBatched(torch.nn.Module):
    """A reward model or critic run `batch_size` rows at a time: `forward(input_ids, attention_mask)`
    (a TokenScorer's scores) and `token_rewards(...)` (a DPORewardModel's), both [batch, seq]."""

    def __init__(self, model: torch.nn.Module, batch_size: int):
        super().__init__()
        self.model, self.batch_size = model, batch_size

    def _rows(self, fn, *tensors) -> torch.Tensor:
        b = self.batch_size
        return torch.cat([fn(*(t[s : s + b] for t in tensors)) for s in range(0, len(tensors[0]), b)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._rows(self.model, input_ids, attention_mask)

    def token_rewards(self, input_ids, attention_mask, response_mask, beta: float, official_shift: bool):
        fn = lambda i, a, m: self.model.token_rewards(i, a, m, beta, official_shift)  # noqa: E731
        return self._rows(fn, input_ids, attention_mask, response_mask)


def main_process() -> tuple[bool, Callable[[], None]]:
    """(is main process, barrier); one process without a process group: (True, no-op).

    The first call creates the process group under `accelerate launch`, with a 48 h timeout: the other
    processes wait at barriers while the main one samples pairs or runs RL for hours (the default
    NCCL timeout would end them).
    """
    from accelerate import PartialState

    state = PartialState(timeout=timedelta(hours=48))
    return state.is_main_process, state.wait_for_everyone


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_tokenizers(policy_tok, rm_tok, policy: str, rm: str) -> None:
    """RMs and critics score the rollouts' token ids: the two tokenizers must agree."""
    probe = "Q-RM: 12 eggs cost $3.50 each; \\frac{1}{2} of them."
    if (
        policy_tok.vocab_size != rm_tok.vocab_size
        or policy_tok(probe)["input_ids"] != rm_tok(probe)["input_ids"]
    ):
        raise ValueError(f"qrm: the RM backbone {rm} does not share the tokenizer of the policy {policy}")


def _save_dpo(dpo: DPORewardModel, path: Path) -> None:
    trainable = {
        f"policy.{n}": p.detach().cpu().clone() for n, p in dpo.policy.named_parameters() if p.requires_grad
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file(trainable, path / "trainable.safetensors")


def _load_dpo(cfg: QRMConfig, path: Path) -> DPORewardModel:
    dpo = DPORewardModel(load_causal_lm(cfg.rm.backbone, dtype=torch.float32), cfg.rm.lora_rank)
    missing, unexpected = dpo.load_state_dict(load_file(path / "trainable.safetensors"), strict=False)
    if unexpected:
        raise ValueError(f"{path}: unexpected weights {unexpected[:3]}")
    return dpo.eval()


def rm_stage(
    task: str, kind: str, cfg: QRMConfig, sc: ScaledConfig, tok, pairs, heldout, work: Path, force: bool
) -> tuple[torch.nn.Module, dict, Path]:
    """Train (or load) one reward model of a task: (model on the CPU, eval mode; info with held-out
    accuracy; its folder). `pairs` must hold a `key` naming where they came from (cache key)."""
    rm = cfg.rm
    lr = rm.dpo_lr if kind in LOG_RATIO_KINDS else rm.lr  # implicit PRM: the DPO-RM's lr (UNCONFIRMED)
    settings = {
        "task": task,
        "kind": kind,
        "rm": asdict(rm),
        "lr": lr,
        "dpo_beta": cfg.rm.dpo_beta,
    }
    key = stage_hash(settings | {"pairs": pairs.key, "n": len(pairs), "heldout": len(heldout), "v": VERSION})
    out = work / f"rm-{task}-{kind}-{key}"
    main, barrier = main_process()
    if not (out / "info.json").exists() or force:
        train_cfg = RMTrainConfig(
            lr=lr,
            batch_size=rm.batch_size,
            max_steps=rm.max_steps,
            max_len=rm.max_len,
            beta=rm.beta,
            gamma=rm.gamma,
            dpo_beta=cfg.rm.dpo_beta,
            chat_template=True,
            seed=rm.seed,
        )
        start = time.perf_counter()
        if kind in LOG_RATIO_KINDS:
            model = DPORewardModel(load_causal_lm(rm.backbone, dtype=torch.float32), rm.lora_rank)
            fit = train_dpo_reward_model if kind == "dpo" else train_implicit_prm
            losses = fit(model, tok, pairs, train_cfg)
            margins = log_ratio_margins(model, tok, heldout, 8, max_len=rm.max_len, chat_template=True)
            accuracy = sum(m > 0 for m in margins) / len(margins)
        else:
            model = TokenScorer.from_backbone(rm.backbone, lora_rank=rm.lora_rank, seed=rm.seed)
            losses = train_reward_model(model, tok, pairs, kind, train_cfg)
            reduce = "mean" if kind == "qrm" else "last"
            accuracy = pairwise_evaluate(model, tok, heldout, reduce, max_len=rm.max_len)["accuracy"]
        info = {
            "task": task,
            "kind": kind,
            "heldout_pairwise_accuracy": accuracy,
            "heldout_pairs": len(heldout),
            "train_pairs": len(pairs),
            "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
            "steps": len(losses),
            "wall_s": round(time.perf_counter() - start, 1),
        }
        if main:
            _save_dpo(model, out / "model") if kind in LOG_RATIO_KINDS else model.save(out / "model")
            (out / "info.json").write_text(json.dumps(info, indent=1))
        barrier()
        return model.cpu().eval(), info, out / "model"
    model = _load_dpo(cfg, out / "model") if kind in LOG_RATIO_KINDS else TokenScorer.load(out / "model")
    return model.eval(), json.loads((out / "info.json").read_text()), out / "model"


def make_reward_fn(method: str, cfg: QRMConfig, sc: ScaledConfig, model: torch.nn.Module):
    """Token rewards [batch, seq] of one arm: the toy pipeline's (`toy_rewards.make_reward_fn`, the
    official code's maths) over the RM run `sc.forward_batch_size` rows at a time."""
    algorithm, kind = ALL_METHODS[method]
    return toy_make_reward_fn(
        algorithm,
        kind,
        cfg.reinforce if algorithm == "reinforce" else cfg.ppo,
        RowBatched(model, sc.forward_batch_size),
        dpo_beta=cfg.rm.dpo_beta,
        official_shift=cfg.rm.dpo_official_shift,
    )


class Sampler:
    """Generators for a policy in memory: one vLLM engine that follows it (CUDA), else HF."""

    def __init__(self, cfg: QRMConfig, sc: ScaledConfig, tok, work: Path):
        use_vllm = cfg.backend == "vllm" or (
            cfg.backend == "auto" and vllm_available() and torch.cuda.is_available()
        )
        on_cuda = torch.cuda.is_available()
        kwargs = {"gpu_memory_utilization": sc.vllm_memory, "dtype": "bfloat16"} if on_cuda else {}
        self.tok = tok
        self.engine = VLLMPolicyEngine(tok, work / "vllm-engine", **kwargs) if use_vllm else None

    def __call__(self, policy: torch.nn.Module):
        return (
            self.engine(policy) if self.engine is not None else HFGenerator(policy, self.tok, progress=False)
        )


def score_test_set(
    policy, tok, sampler: Sampler, problems: list[dict], grade, cfg: QRMConfig, k: int | None
) -> dict:
    """Greedy Pass@1 (and unbiased Pass@k from k samples) in percent on `problems`."""
    prompts = [format_prompt(tok, p["question"]) for p in problems]
    is_correct = lambda i, text: grade(text, problems[i]["answer"])  # noqa: E731
    gen = sampler(policy)
    mt = cfg.eval.max_tokens
    out = {
        "Pass@1": 100
        * evaluate_pass_at_k(policy, tok, prompts, is_correct, max_tokens=mt, generator=gen)["pass@1"]
    }
    if k:
        t = cfg.eval.pass_k_temperature
        scores = evaluate_pass_at_k(
            policy, tok, prompts, is_correct, n=k, ks=(k,), temperature=t, max_tokens=mt, generator=gen
        )
        out[f"Pass@{k}"] = 100 * scores[f"pass@{k}"]
    return out


def rl_stage(
    task, method, seed, cfg, sc, tok, rm, critic_from: Path, data: dict, sampler: Sampler, work, force
) -> dict:
    """One RL run (resumable by chunk) and its final test scores (cached)."""
    algorithm, kind = ALL_METHODS[method]
    rl_cfg = rl_config(method, cfg, seed, work / "tmp")
    key = stage_hash(
        {
            "task": task,
            "method": method,
            "rl": asdict(rl_cfg) | {"output_dir": ""},
            "cfg": cfg.as_dict(),
            "sc": asdict(sc),
            "n": [len(data["train"]), len(data["test"])],
            "v": VERSION,
        }
    )
    out = work / f"rl-{task}-{method.replace('+', '_')}-s{seed}-{key}"
    rl_cfg.output_dir = str(out)

    def compute() -> dict:
        if force and (out / "rl_state.pt").exists():
            (out / "rl_state.pt").unlink()
        device = default_device()
        torch.manual_seed(seed)
        policy = load_causal_lm(cfg.policy, dtype=torch.float32, device=str(device))
        critic = ref = None
        if algorithm == "ppo":
            ref = load_causal_lm(cfg.policy, dtype=torch.float32, device=str(device)).eval()
            scorer = TokenScorer.load(critic_from)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 + seed)  # the code re-initialises the critic's value head
                scorer.head.reset_parameters()
            critic = RowBatched(scorer.to(device).train(), sc.forward_batch_size)
        reward_fn = make_reward_fn(method, cfg, sc, rm)
        grade = data["grade"]
        curve_problems = data["test"][: cfg.eval.problems]
        start = time.perf_counter()
        curve = run_rl(
            policy,
            tok,
            [format_prompt(tok, q["question"]) for q in data["train"]],
            reward_fn,
            rl_cfg,
            critic=critic,
            ref_model=ref,
            evaluate=lambda m: {
                "test_Pass@1": score_test_set(m, tok, sampler, curve_problems, grade, cfg, None)["Pass@1"]
            },
            generator_factory=sampler.engine,
            forward_batch_size=sc.forward_batch_size,
        )
        final = score_test_set(policy, tok, sampler, data["test"], grade, cfg, cfg.eval.pass_k)
        return {
            "task": task,
            "method": method,
            "seed": seed,
            "curve": curve,
            "final": final,
            "wall_s": round(time.perf_counter() - start, 1),
        }

    return cached_json(out / "result.json", force, compute, write=main_process()[0])


class LazyGenerator:
    """Loads the policy and starts its generator only when a chunk of pairs is still missing."""

    def __init__(self, cfg: QRMConfig, sampler: Sampler):
        self.cfg, self.sampler, self.policy = cfg, sampler, None

    def generate(self, prompts, params):
        if self.policy is None:
            self.policy = load_causal_lm(self.cfg.policy, device=str(default_device()))
        return self.sampler(self.policy).generate(prompts, params)
