"""The spec's calibrated stability check (shared/papers/lco.md, "Toy-scale check"): LCO-KLD vs PPO-clip vs
vanilla importance-sampled PG on the same rollouts and advantages, under an aggressive and a normal Adam lr.

Task: C = 16 prompts, vocabulary V = 8, response length T = 4, correct token y*(c, t) = (3c + 5t + (c*t mod 3))
mod V; the reward of a response is its fraction of correct tokens. Policy (~27k parameters, random init):
embedding(C+V, 64) -> GRU(64) -> linear(V) over [prompt] + response. Each iteration: 16 random prompts x G = 8
samples at temperature 1, advantage = the group z-score of the reward (`common.rl.group_advantages`, eps 1e-6)
copied to the 4 tokens, old logits and log-probs recorded; then K = 8 passes over the 128 sequences in shuffled
minibatches of 32 (32 Adam steps per iteration, no gradient clipping, as the code). 150 iterations, seeds 0-2.
Arms: PPO `-mean min(A rho, A clip(rho, 0.8, 1.2))` (`common.rl.ppo_clip_loss`), PG-IS `-mean A rho`
(`pg_is_loss`), LCO-KLD `KL(p* || pi)` with the sparse target of beta 0.3 (`lco_log_target`, `lco_kld_loss`).
Metrics: greedy token accuracy over the 16 prompts every 10 iterations, its max drawdown (largest drop below the
running maximum), the gradient norm of every step (mean over the first and the last quarter of training).

Choices the spec leaves open (ours): the policy of seed s is initialised under torch seed s, rollouts sample
from a Generator seeded s (the same stream for every arm until the policies differ), minibatch orders from a
Generator seeded 10_000 + s; the z-score uses the unbiased group std (the common estimator's).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from common.rl import group_advantages, ppo_clip_loss
from papers.lco.lco import lco_kld_loss, lco_log_target, pg_is_loss, sparse_advantages

C, V, T, HIDDEN = 16, 8, 4, 64
PROMPTS, GROUP, PASSES, MINIBATCH = 16, 8, 8, 32
EVAL_EVERY, CLIP, Z_EPS = 10, 0.2, 1e-6
STABILITY_ARMS = ("PPO", "PG-IS", "LCO-KLD")
THRESHOLDS = {"normal_tolerance": 0.03, "pg_is_gap": 0.1}


def target_tokens() -> torch.Tensor:
    """[C, T]: y*(c, t) = (3c + 5t + (c*t mod 3)) mod V."""
    c, t = torch.arange(C)[:, None], torch.arange(T)[None, :]
    return (3 * c + 5 * t + (c * t) % 3) % V


class GRUPolicy(nn.Module):
    """embedding(C+V, 64) -> GRU(64) -> linear(V); token ids: prompt c, response token a -> C + a."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(C + V, HIDDEN)
        self.gru = nn.GRU(HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, V)

    def forward(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """[B, T, V]: the logits of each response token a_t, read at the state before it."""
        tokens = torch.cat([prompt[:, None], C + response[:, :-1]], dim=1)
        return self.head(self.gru(self.embed(tokens))[0])


@torch.no_grad()
def sample(policy: GRUPolicy, prompt: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """[B, T] responses at temperature 1 (greedy when `g` is None), one GRU step per token."""
    x, h, out = prompt, None, []
    for _ in range(T):
        state, h = policy.gru(policy.embed(x)[:, None], h)
        logits = policy.head(state[:, 0])
        a = logits.argmax(-1) if g is None else torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]
        out.append(a)
        x = C + a
    return torch.stack(out, 1)


def greedy_token_accuracy(policy: GRUPolicy) -> float:
    prompts = torch.arange(C)
    return float((sample(policy, prompts, None) == target_tokens()).float().mean())


def max_drawdown(curve: list[float]) -> float:
    """The largest drop of a curve below its running maximum (0 for a non-decreasing curve)."""
    peak, worst = -math.inf, 0.0
    for y in curve:
        peak = max(peak, y)
        worst = max(worst, peak - y)
    return worst


def arm_loss(arm: str, logits, response, logp_old, old_logits, adv, beta: float) -> torch.Tensor:
    """The minibatch loss of one arm; `adv` [B, T] (the sequence advantage on every token)."""
    mask = torch.ones_like(response, dtype=torch.bool)
    logp = logits.log_softmax(-1).gather(-1, response[..., None])[..., 0]
    if arm == "PPO":
        return ppo_clip_loss(logp, logp_old, adv, mask, clip=CLIP)
    if arm == "PG-IS":
        return pg_is_loss(logp, logp_old, adv, mask)
    if arm == "LCO-KLD":
        target = lco_log_target(old_logits, sparse_advantages(response, adv, V), beta)
        return lco_kld_loss(logits, target, mask)
    raise ValueError(f"stability: unknown arm {arm!r}; valid: {', '.join(STABILITY_ARMS)}")


def grad_norm(model: nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def run_arm(arm: str, lr: float, seed: int, iterations: int = 150, beta: float = 0.3) -> dict:
    """One training run: {"curve": greedy token accuracy at iterations 0, 10, ..., "grad_norms": per step}."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = GRUPolicy()
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    g, order_g = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(10_000 + seed)
    target, groups = target_tokens(), [i // GROUP for i in range(PROMPTS * GROUP)]
    curve, norms = [greedy_token_accuracy(policy)], []
    for it in range(1, iterations + 1):
        prompt = torch.randint(C, (PROMPTS,), generator=g).repeat_interleave(GROUP)
        response = sample(policy, prompt, g)
        reward = (response == target[prompt]).double().mean(1)
        adv = group_advantages(reward, groups, "grpo", eps=Z_EPS).float()[:, None].expand(-1, T)
        with torch.no_grad():
            old_logits = policy(prompt, response)
            logp_old = old_logits.log_softmax(-1).gather(-1, response[..., None])[..., 0]
        for _ in range(PASSES):
            order = torch.randperm(len(prompt), generator=order_g)
            for s in range(0, len(prompt), MINIBATCH):
                i = order[s : s + MINIBATCH]
                loss = arm_loss(
                    arm, policy(prompt[i], response[i]), response[i], logp_old[i], old_logits[i], adv[i], beta
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norms.append(grad_norm(policy))
                opt.step()
        if it % EVAL_EVERY == 0:
            curve.append(greedy_token_accuracy(policy))
    return {"curve": curve, "grad_norms": norms}


def summarise(run: dict) -> dict:
    """Final accuracy, max drawdown and the mean gradient norm of the first / last quarter of the steps."""
    n = len(run["grad_norms"])
    q = max(n // 4, 1)
    first, last = run["grad_norms"][:q], run["grad_norms"][n - q :]
    return {
        "final_accuracy": run["curve"][-1],
        "max_drawdown": max_drawdown(run["curve"]),
        "grad_norm_first_quarter": sum(first) / len(first),
        "grad_norm_last_quarter": sum(last) / len(last),
        "grad_norm_quarters": [
            sum(c) / len(c) for c in (run["grad_norms"][k * q : (k + 1) * q] for k in range(4)) if c
        ],
    }


def _mean(runs: dict, key: str) -> float:
    return sum(r[key] for r in runs.values()) / len(runs)


def pass_criteria(summary: dict[str, dict[int, dict]], aggressive: str, normal: str) -> dict[str, dict]:
    """The spec's five criteria; `summary[run_name][seed]` with run names "<arm> @ <lr>"."""
    agg_lco, agg_ppo = summary[f"LCO-KLD @ {aggressive}"], summary[f"PPO @ {aggressive}"]
    lco, ppo, pg = summary[f"LCO-KLD @ {normal}"], summary[f"PPO @ {normal}"], summary[f"PG-IS @ {normal}"]
    a1, b1 = _mean(agg_lco, "final_accuracy"), _mean(agg_ppo, "final_accuracy")
    a2, b2 = _mean(agg_lco, "max_drawdown"), _mean(agg_ppo, "max_drawdown")
    a3, b3, c4 = _mean(lco, "final_accuracy"), _mean(ppo, "final_accuracy"), _mean(pg, "final_accuracy")
    falling = {
        f"{name} seed {s}": r["grad_norm_last_quarter"] < r["grad_norm_first_quarter"]
        for name, runs in summary.items()
        if name.startswith("LCO-KLD")
        for s, r in runs.items()
    }
    tol, gap = THRESHOLDS["normal_tolerance"], THRESHOLDS["pg_is_gap"]
    return {
        "1_aggressive_accuracy": {"passed": a1 > b1, "LCO-KLD": a1, "PPO": b1},
        "2_aggressive_drawdown": {"passed": a2 <= b2, "LCO-KLD": a2, "PPO": b2},
        "3_normal_accuracy": {"passed": a3 >= b3 - tol, "LCO-KLD": a3, "PPO": b3, "tolerance": tol},
        "4_beats_pg_is": {"passed": a3 - c4 >= gap, "LCO-KLD": a3, "PG-IS": c4, "gap": gap},
        "5_grad_norm_falls": {"passed": all(falling.values()), "per_run": falling},
    }


def check_result(
    runs: dict[str, dict[int, dict]], aggressive: str, normal: str, config: dict, start: float
) -> dict:
    """The JSON-able result of a finished check: per-run curves and summaries, the criteria, the config."""
    summary = {name: {s: summarise(r) for s, r in per_seed.items()} for name, per_seed in runs.items()}
    criteria = pass_criteria(summary, aggressive, normal)
    curves = {name: {s: r["curve"] for s, r in per_seed.items()} for name, per_seed in runs.items()}
    norms = {name: {s: r["grad_norms"] for s, r in per_seed.items()} for name, per_seed in runs.items()}
    return {
        "iterations": list(range(0, config["iterations"] + 1, EVAL_EVERY)),
        "curves": curves,
        "grad_norms": norms,
        "summary": summary,
        "criteria": criteria,
        "passed": all(c["passed"] for c in criteria.values()),
        "config": config,
        "wall_time_s": time.perf_counter() - start,
    }
