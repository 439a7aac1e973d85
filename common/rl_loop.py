"""The chunked rollout -> reward -> advantage -> update loop, with checkpoint/resume and learning curves.

    curve = run_rl(policy, tok, prompts, reward_fn, RLConfig(output_dir=..., algorithm="ppo", ...),
                   critic=critic, ref_model=ref, evaluate=lambda m: evaluate_pass_at_k(m, tok, ...))

Per chunk k (homzer/Q-RM's chunked loop, spec "Using Q-RM in RL"): take the next `prompts_per_chunk`
prompts, sample `samples_per_prompt` responses each with the current policy (`common.generation`),
recompute log pi_old with the training model (`sequence_logprobs`; not for plain REINFORCE, whose loss has no
ratio: the generator's log-probs stay on the rollout), get token rewards from
`reward_fn(rollout) -> [batch, seq]` (any token-level reward; an outcome reward is a reward at the last
response token), then one or more passes of minibatch updates:
- "reinforce": `reinforce_loss(logp, rewards)` (no baseline, no ratio: the code's trainer);
- "ppo": critic values V (read at the position before each token, i.e. at state s_t), divided by their
  chunk std as in the code's buffer (`normalize_values`), advantages by `reward_is_q` (A = r - c V,
  returns r) or `gae`, `ppo_clip_loss` for the actor and `value_loss` for the critic;
- "grpo": `ppo_clip_loss` on the reward_fn's token values taken as the advantages (e.g. group advantages,
  `common.rl.group_advantages`), no critic: several minibatches / `inner_epochs` reuse one chunk's samples
  with the ratio to pi_old clipped (GRPO's mu > 1 iterations).
The reference policy's log-probs (for a KL term inside `reward_fn`) are put on the rollout as `logp_ref`.
Each chunk's loss and rewards (and the evaluation, when there is one) go to a tracker
(`cfg.report_to`: TensorBoard under `output_dir/tensorboard` by default, wandb, or none;
`common.tracking`) as scalars `rl/<name>` against the policy's optimizer step.
After every chunk the policy, critic, both optimizers and the curve are saved atomically; a killed run
restarts at the next chunk and equals the uninterrupted run (sampling seeds and minibatch orders are
functions of (seed, chunk), never of the RNG state left by earlier chunks).

Rollout backend: by default an `HFGenerator` over the in-memory policy. `generator_factory(policy) ->
Generator`, called at the start of every chunk with the current policy, lets a caller roll out with
another engine; `VLLMPolicyEngine` (`common.generation_vllm`) is the vLLM one: it saves the policy
once, starts a vLLM engine on that folder, and before each later chunk copies the policy's updated
weights into the engine in place (vLLM's worker `reload_weights`, through `LLM.collective_rpc`), so
rollouts always sample the current policy. Log pi_old is recomputed with the training model either way,
so the engine's log-probs never enter a loss.

With `data_parallel=True` under `accelerate launch`, each process samples a share of the chunk's prompts,
every process holds the gathered rollout, and each minibatch is split over the processes with its
gradients summed; only the main process writes (`common.rl_parallel`).

Departures from the official code: one Adam optimizer kept across chunks (the code makes a new one
per chunk and reloads the model from disk); gradient-norm clipping (`max_grad_norm`, None = off).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from common.generation import Generator, HFGenerator, SamplingParams
from common.generation_vllm import VLLMPolicyEngine as VLLMPolicyEngine  # papers import it from here
from common.rl import (
    BUCKET_ROWS,
    LOSS_NORMS,
    Rollout,
    gae,
    pass_at_k,
    ppo_clip_loss,
    reinforce_loss,
    reward_is_q_advantages,
    sequence_logprobs,
    value_loss,
)
from common.rl_parallel import minibatch_shares, sharded_rollout, share, sum_gradients, sum_over_processes
from common.stages import StageError, atomic_write_json, barrier, hold_after_write, temp_path, world
from common.tracking import check_report_to, start_tracker

ALGORITHMS = ("reinforce", "ppo", "grpo")
ADVANTAGES = ("reward_is_q", "gae")
STATE_FILE = "rl_state.pt"


@dataclass
class RLConfig:
    """One RL run. Defaults are algorithm-neutral (the textbook forms); each paper's config sets its own
    (e.g. papers/qrm/config.py: the Q-RM code's reward-is-Q advantage, 0.01 value coefficient, GAE 0.9/0.8)."""

    output_dir: str
    chunks: int
    prompts_per_chunk: int
    algorithm: str = "reinforce"  # reinforce | ppo | grpo (clipped ratio on reward_fn advantages, no critic)
    advantage: str = "gae"  # ppo only: gae | reward_is_q (A = r - value_coef * V, returns r)
    samples_per_prompt: int = 1
    minibatch_size: int = 8
    inner_epochs: int = 1  # passes over each chunk
    lr: float = 1e-6
    warm_lr_factor: float = 1.0  # lr x this for the first `warm_chunks` chunks
    warm_chunks: int = 0
    critic_lr: float = 1e-5
    value_coef: float = 1.0  # reward_is_q only: A = r - value_coef * V
    normalize_values: bool = False  # True: V / std_chunk(V) before the advantage
    gamma: float = 1.0  # GAE discount
    lam: float = 0.95  # GAE lambda
    clip: float = 0.2
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    max_grad_norm: float | None = 1.0  # None = off
    loss_norm: str = "token"  # token | sequence (GRPO) | constant (Dr. GRPO); common.rl.aggregate
    eval_every: int = 1  # chunks between evaluations
    generation_batch_size: int = 128
    seed: int = 0
    progress: bool = True
    report_to: str = "tensorboard"  # tensorboard (output_dir/tensorboard) | wandb | none (common.tracking)
    log_grad_norm: bool = False  # True: each chunk logs `grad_norm`, the mean policy gradient norm (pre-clip)

    def __post_init__(self) -> None:
        check_report_to(self.report_to, "RLConfig")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"RLConfig.algorithm: {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        if self.loss_norm not in LOSS_NORMS:
            raise ValueError(f"RLConfig.loss_norm: {self.loss_norm!r}; valid: {', '.join(LOSS_NORMS)}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"RLConfig.advantage: {self.advantage!r}; valid: {', '.join(ADVANTAGES)}")
        for name in ("chunks", "prompts_per_chunk", "samples_per_prompt", "minibatch_size", "inner_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RLConfig.{name}: must be an integer >= 1, got {value!r}")
        if not (self.lr > 0 and self.critic_lr > 0 and self.clip > 0):
            raise ValueError("RLConfig: lr, critic_lr and clip must be > 0")


class PolicyLoss(Protocol):
    """An actor loss for `run_rl` in place of REINFORCE / PPO-clip (the seam LCO's losses use).

    `prepare(policy, ro)`: once per chunk, without gradients, after `ro.logp_old` is set (e.g. record the
    old policy's logits); `__call__(policy, ro, idx, advantages)`: the loss of the minibatch rows `idx`,
    `advantages` [len(idx), seq] (the reward_fn's output, or PPO's advantages when there is a critic)."""

    def prepare(self, policy: torch.nn.Module, ro: Rollout) -> None: ...

    def __call__(
        self, policy: torch.nn.Module, ro: Rollout, idx: torch.Tensor, advantages: torch.Tensor
    ) -> torch.Tensor: ...


def chunk_prompts(prompts: list, chunk: int, size: int, seed: int) -> list:
    """The prompts of chunk k: consecutive slices of a seeded permutation, reshuffled at each pass."""
    out, start = [], chunk * size
    while len(out) < size:
        epoch, offset = divmod(start + len(out), len(prompts))
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.extend(prompts[i] for i in order[offset : offset + size - len(out)].tolist())
    return out


def critic_values(critic: torch.nn.Module, ro: Rollout) -> torch.Tensor:
    """V(s_t) at each token position t: the critic's output at position t-1 (the state before a_t)."""
    out = critic(ro.input_ids, ro.attention_mask)
    if out.shape != ro.input_ids.shape:
        raise ValueError(f"critic returned shape {tuple(out.shape)}, expected {tuple(ro.input_ids.shape)}")
    return torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1).float()


def _chunk_logprobs(model: torch.nn.Module, ro: Rollout, batch_size: int | None) -> torch.Tensor:
    """`sequence_logprobs` over a whole rollout, `batch_size` rows per forward (None: `BUCKET_ROWS`)."""
    return sequence_logprobs(model, ro.input_ids, ro.attention_mask, rows=batch_size or BUCKET_ROWS)


def _std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[mask].float().std(unbiased=False).clamp_min(1e-8)


def _step(
    loss: torch.Tensor | None,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    clip: float | None,
    norm: bool = False,
    n_procs: int = 1,
) -> float | None:
    """One optimizer step; returns the gradient norm before clipping when `clip` is set or `norm` asked.

    With `n_procs` > 1, `loss` is this process's weighted share (None: no rows here) and the gradients are
    summed over the processes first, so every process steps on the whole minibatch's gradient."""
    opt.zero_grad(set_to_none=True)
    if loss is not None:
        loss.backward()
    if n_procs > 1:
        sum_gradients(model)
    total = None
    if clip is not None:
        total = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    elif norm:
        grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
        total = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
    opt.step()
    return total


def _save(path: Path, state: dict) -> None:
    """torch.save through the stage convention's temporary name and a rename (never half-written).

    Only tensors, numbers, strings, lists and dicts go in (the curve and config through JSON, so a numpy
    float from an evaluator becomes a float), so `torch.load(weights_only=True)` reads it back."""
    plain = {k: json.loads(json.dumps(state[k], default=float)) for k in ("curve", "config") if k in state}
    tmp = temp_path(path)
    torch.save(state | plain, tmp)
    os.replace(tmp, path)
    hold_after_write(path)


def write_curve(curve: list[dict], out_dir: str | Path, name: str = "curve") -> Path:
    """`<name>.csv` with every logged field (one row per evaluation)."""
    out = Path(out_dir) / f"{name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in curve for k in row))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(curve)
    return out


def run_rl(
    policy: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    reward_fn: Callable[[Rollout], torch.Tensor],
    cfg: RLConfig,
    critic: torch.nn.Module | None = None,
    ref_model: torch.nn.Module | None = None,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    generator_factory: Callable[[torch.nn.Module], Generator] | None = None,
    forward_batch_size: int | None = None,
    policy_loss: PolicyLoss | None = None,
    initial_eval: dict[str, float] | None = None,
    data_parallel: bool = False,
) -> list[dict]:
    """Train `policy` in place for `cfg.chunks` chunks; return the curve (one dict per evaluation).

    The curve's rows hold `chunk`, `step` (policy optimizer steps so far), the chunk's mean token and
    sequence reward, and whatever `evaluate(policy)` returns (evaluated before training as chunk 0 and
    every `eval_every` chunks). It is also written to `output_dir/curve.csv`.
    `generator_factory(policy)`: the rollout generator of each chunk (e.g. a `VLLMPolicyEngine`); None
    samples with an `HFGenerator` over `policy`. Rollouts are moved to the policy's device.
    `forward_batch_size`: rows per no-grad forward when computing log pi_old / log pi_ref over a chunk
    (None: `common.rl.BUCKET_ROWS`); every forward over a chunk runs its rows sorted by length
    (`common.rl.by_length`), so short rows skip the long ones' padding.
    `policy_loss`: a `PolicyLoss` that replaces the algorithm's actor loss (e.g. papers/lco's logit-space
    losses); its `prepare(policy, rollout)` runs without gradients after log pi_old is recorded.
    `initial_eval`: what `evaluate` returns for the untrained policy when that is known already (the
    same starting policy is evaluated once for every arm of a comparison); None: `evaluate(policy)`.
    `data_parallel`: every process of an `accelerate launch` calls `run_rl` with the same arguments and
    they share each chunk (`common.rl_parallel`); False: this process runs the whole run alone (callers
    that run RL on the main process only, or in a worker pool).
    """
    if not prompts:
        raise ValueError("run_rl: no prompts")
    if cfg.algorithm == "ppo" and critic is None:
        raise ValueError(
            "run_rl: algorithm 'ppo' needs a critic (a module (input_ids, attention_mask) -> [batch, seq])"
        )
    n_procs, rank = world() if data_parallel else (1, 0)
    if n_procs > 1 and policy_loss is not None:
        raise ValueError(
            f"run_rl: a policy_loss under {n_procs} processes is not supported (its aggregation over a "
            "minibatch is unknown, so the processes' shares cannot be weighted); run it in one process"
        )
    main, out = rank == 0, Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr) if critic is not None else None
    curve, start, steps = [], 0, 0
    if (out / STATE_FILE).exists():
        try:
            state = torch.load(out / STATE_FILE, weights_only=True)  # tensors and plain values only
        except (RuntimeError, EOFError, pickle.UnpicklingError) as err:  # truncated or edited
            raise StageError(
                f"{out / STATE_FILE}: unreadable RL state ({type(err).__name__}); delete it or use a new output_dir"
            ) from None
        if _trajectory(state["config"]) != _trajectory(asdict(cfg)):
            raise ValueError(f"{out / STATE_FILE}: saved with a different RLConfig; use a new output_dir")
        policy.load_state_dict(state["policy"])
        opt.load_state_dict(state["opt"])
        if critic is not None:
            critic.load_state_dict(state["critic"])
            critic_opt.load_state_dict(state["critic_opt"])
        curve, start, steps = state["curve"], state["chunk"], state["steps"]
    elif evaluate is not None:
        curve.append(
            {"chunk": 0, "step": 0, **(initial_eval if initial_eval is not None else evaluate(policy))}
        )
    tracker = start_tracker(
        cfg.report_to if main else "none", out / "tensorboard", run_name=out.name, config=asdict(cfg)
    )
    if start == 0 and curve:
        tracker.log(_scalars(curve[0]), step=0)
    gen = None
    if generator_factory is None:
        gen = HFGenerator(policy, tokenizer, batch_size=cfg.generation_batch_size, progress=False)
    bar = tqdm(
        range(start, cfg.chunks), desc=f"rl {cfg.algorithm}", disable=not (cfg.progress and main), leave=False
    )
    for k in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (cfg.warm_lr_factor if k < cfg.warm_chunks else 1.0)
        params = SamplingParams(
            n=cfg.samples_per_prompt,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed * 100_003 + k,
        )
        if generator_factory is not None:
            gen = generator_factory(policy)
        chunk = chunk_prompts(prompts, k, cfg.prompts_per_chunk, cfg.seed)
        ro = sharded_rollout(gen, tokenizer, chunk, params, n_procs, rank)
        ro = ro.to(next(policy.parameters()).device)
        mask = ro.response_mask
        policy.eval()
        with torch.no_grad():
            if cfg.algorithm != "reinforce" or policy_loss is not None or ref_model is not None:
                ro.logp_old = _chunk_logprobs(policy, ro, forward_batch_size) * mask
            # else REINFORCE reads no log pi_old: the generator's log-probs stay (no forward spent on them)
            if ref_model is not None:
                ro.logp_ref = _chunk_logprobs(ref_model, ro, forward_batch_size) * mask
            if policy_loss is not None:
                policy_loss.prepare(policy, ro)
            rewards = reward_fn(ro)
            if rewards.shape != ro.input_ids.shape:
                raise ValueError(
                    f"reward_fn returned shape {tuple(rewards.shape)}, expected {tuple(mask.shape)}"
                )
            rewards = rewards.float() * mask
            advantages, returns = rewards, None
            if cfg.algorithm == "ppo":
                values = critic_values(critic, ro) * mask
                if cfg.normalize_values:
                    values = values / _std(values, mask)
                if cfg.advantage == "reward_is_q":
                    advantages, returns = reward_is_q_advantages(rewards, values, mask, cfg.value_coef)
                else:
                    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        policy.train()
        order_rng = torch.Generator().manual_seed(cfg.seed * 100_003 + k)
        losses, norms = [], []
        for _ in range(cfg.inner_epochs):
            order = torch.randperm(len(ro), generator=order_rng)
            for s in range(0, len(ro), cfg.minibatch_size):
                batch = order[s : s + cfg.minibatch_size]
                idx = batch[share(len(batch), n_procs, rank)]  # all of it in one process
                mb_mask = mask[idx]
                token_share, loss_share = minibatch_shares(mask, batch, idx, cfg.loss_norm)
                loss = None
                if len(idx):
                    logp = sequence_logprobs(policy, ro.input_ids[idx], ro.attention_mask[idx])
                    norm = {"norm": cfg.loss_norm, "max_tokens": cfg.max_tokens}
                    if policy_loss is not None:
                        loss = policy_loss(policy, ro, idx, advantages[idx])
                    elif cfg.algorithm == "reinforce":
                        loss = reinforce_loss(logp, advantages[idx], mb_mask, **norm)
                    else:
                        loss = ppo_clip_loss(
                            logp, ro.logp_old[idx], advantages[idx], mb_mask, cfg.clip, **norm
                        )
                    loss = loss * loss_share  # 1 in one process
                norms.append(_step(loss, policy, opt, cfg.max_grad_norm, cfg.log_grad_norm, n_procs))
                steps += 1
                value = torch.zeros((), device=mask.device) if loss is None else loss.detach().float()
                losses.append(float(sum_over_processes(value) if n_procs > 1 else value))
                if critic is not None and returns is not None:
                    v_loss = None
                    if len(idx):
                        v = critic_values(critic, ro.select(idx))
                        v_loss = value_loss(v, returns[idx], mb_mask) * token_share
                    _step(v_loss, critic, critic_opt, cfg.max_grad_norm, n_procs=n_procs)
        seq_reward = (rewards.sum(1) / mask.sum(1)).mean()
        # token_reward / seq_reward: the training signal (after the reward_fn's normalisation and baseline);
        # reward_fn's own metrics (e.g. reward_raw, correct: before any of it) are logged beside them
        stats = {"token_reward": float(rewards[mask].mean()), "seq_reward": float(seq_reward)}
        stats |= {key: float(v) for key, v in ro.metrics.items()}
        stats["loss"] = sum(losses) / len(losses)
        if cfg.log_grad_norm:
            stats["grad_norm"] = sum(norms) / len(norms)
        scalars = {"chunk": k + 1, **stats}
        if evaluate is not None and ((k + 1) % cfg.eval_every == 0 or k + 1 == cfg.chunks):
            curve.append({"chunk": k + 1, "step": steps, **stats, **evaluate(policy)})
            bar.set_postfix({key: round(v, 3) for key, v in curve[-1].items() if isinstance(v, float)})
            scalars = curve[-1]
        tracker.log(_scalars(scalars), step=steps)
        if main:
            state = {"policy": policy.state_dict(), "opt": opt.state_dict(), "curve": curve, "chunk": k + 1}
            if critic is not None:
                state |= {"critic": critic.state_dict(), "critic_opt": critic_opt.state_dict()}
            _save(out / STATE_FILE, state | {"steps": steps, "config": asdict(cfg)})
    tracker.finish()
    if main:
        write_curve(curve, out)
        atomic_write_json(out / "config.json", asdict(cfg))
    if n_procs > 1:
        barrier()  # no process returns before the main one has written the run
    return curve


def _trajectory(config: dict) -> dict:
    """The RLConfig fields a resumed run must share with the saved one (not progress or the tracker)."""
    plain = json.loads(json.dumps(config, default=float))  # as saved (tuples become lists)
    return {k: v for k, v in plain.items() if k not in ("progress", "report_to")}


def _scalars(row: dict) -> dict[str, float]:
    """A curve row as tracker scalars `rl/<name>` (numbers only; `step` is the tracker's x axis)."""
    return {
        f"rl/{k}": float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def evaluate_pass_at_k(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    is_correct: Callable[[int, str], bool],
    n: int = 1,
    ks: tuple[int, ...] = (1,),
    temperature: float = 0.0,
    max_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 128,
    generator: Generator | None = None,
) -> dict[str, float]:
    """Mean unbiased Pass@k over prompts from n samples each; `is_correct(prompt_index, text)` grades.

    temperature 0 with n = 1 is the paper's greedy Pass@1. `generator`: sample with it (e.g. a vLLM
    engine synced to `model`) instead of an `HFGenerator` over `model`.
    """
    if any(k > n for k in ks):
        raise ValueError(f"evaluate_pass_at_k: every k in {ks} must be <= n = {n}")
    gen = generator or HFGenerator(model, tokenizer, batch_size=batch_size, progress=False)
    outs = gen.generate(
        prompts, SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    )
    correct = [0] * len(prompts)
    for o in outs:
        correct[o.prompt_index] += bool(is_correct(o.prompt_index, o.text))
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for c in correct) / len(prompts) for k in ks}
