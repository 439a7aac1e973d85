"""The spec's calibrated toy check: token-level credit from a preference-trained Q-RM vs a sequence-level ORM.

Spec `shared/papers/qrm.md`, "Toy-scale check". C = 16 prompts, response vocabulary V = 8, length T = 5,
correct token y*(c, t) = (3c + 5t + (c*t mod 3)) mod V. Preference pairs from a noisy expert (torch
Generator seeded 0; each response has its own p ~ U(0,1), each token is right with prob p, else a uniformly
drawn wrong token; chosen = more right tokens; ties dropped): 8,000 candidate training pairs, and the first
1,000 non-tied pairs of a further 2,000 candidates as held-out pairs. Models: embedding(C+V, 64) -> GRU(64)
-> linear head, input [prompt token] + response. Q-RM (scalar at every response position, `qrm_loss`) and
ORM (scalar at the last position, `orm_loss`) trained with Adam lr 3e-3, batch 64, 1,500 steps. Then
REINFORCE, 200 iterations of 64 prompts x 1 sample (temperature 1), Adam lr 3e-3, loss -mean_t r_t log pi:
- "qrm_a": r_t = Z(s_t,a_t) - sum_a pi_old(a|s_t) Z(s_t,a) (exact state baseline), standardised over the
  batch, last token overwritten with the sequence mean (`qrm_reinforce_rewards(sub_mean=True)`);
- "qrm_b": the repo's REINFORCE default, Z / std (`qrm_reinforce_rewards()`);
- "orm": the last-token score broadcast to every token, standardised (`orm_token_rewards`);
- optional oracles: "oracle_token" 1[a_t right] - batch mean, "oracle_seq" fraction right - batch mean.
Greedy token accuracy over the 16 prompts every 10 iterations. Choices the spec leaves open (ours): RM
init seed 0 and data order seeded 0, RM heads without bias (as the paper's), rollout sampling generator
seeded with the run seed (the same stream for every arm), policy init seed 1000 + seed.

Run by the pipeline when `gru.enabled` (`--set gru.seeds=[0] --set gru.oracles=true` to vary it).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from common.plots import plot_curves
from common.rl import reinforce_loss
from papers.qrm.qrm import (
    last_token_scores,
    masked_mean,
    normalize_token_rewards,
    orm_loss,
    orm_token_rewards,
    qrm_loss,
    qrm_reinforce_rewards,
)

C, V, T, HIDDEN = 16, 8, 5, 64
RM_STEPS, RM_BATCH, RM_LR = 1500, 64, 3e-3
RL_BATCH, RL_LR, EVAL_EVERY = 64, 3e-3, 10
ARMS = ("qrm_a", "qrm_b", "orm")
ORACLE_ARMS = ("oracle_token", "oracle_seq")
THRESHOLDS = {"rm_accuracy": 0.85, "early_gain": 0.05, "final_tolerance": 0.02}
EARLY_ITERATIONS = (30, 60, 90)


def target_tokens(n_prompts: int = C, vocab: int = V, length: int = T) -> torch.Tensor:
    """[C, T]: y*(c, t) = (3c + 5t + (c*t mod 3)) mod V."""
    c = torch.arange(n_prompts)[:, None]
    t = torch.arange(length)[None, :]
    return (3 * c + 5 * t + (c * t) % 3) % vocab


def _noisy_pairs(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """n candidate pairs from the noisy expert, ties dropped: prompt [k], chosen / rejected [k, T]."""
    target = target_tokens()
    prompt = torch.randint(C, (n,), generator=g)
    p = torch.rand(n, 2, 1, generator=g)
    right = torch.rand(n, 2, T, generator=g) < p
    wrong = (target[prompt][:, None] + torch.randint(1, V, (n, 2, T), generator=g)) % V
    resp = torch.where(right, target[prompt][:, None], wrong)
    quality = (resp == target[prompt][:, None]).sum(-1)
    keep = quality[:, 0] != quality[:, 1]
    first_wins = (quality[:, 0] > quality[:, 1])[:, None]
    chosen = torch.where(first_wins, resp[:, 0], resp[:, 1])
    rejected = torch.where(first_wins, resp[:, 1], resp[:, 0])
    return {"prompt": prompt[keep], "chosen": chosen[keep], "rejected": rejected[keep]}


def make_pairs(n_train: int = 8000, n_heldout: int = 1000) -> tuple[dict, dict]:
    """Training pairs (from n_train candidates) and n_heldout non-tied held-out pairs; Generator seeded 0."""
    g = torch.Generator().manual_seed(0)
    train = _noisy_pairs(n_train, g)
    heldout = _noisy_pairs(2 * n_heldout, g)
    return train, {k: v[:n_heldout] for k, v in heldout.items()}


class GRUNet(nn.Module):
    """embedding(C+V, 64) -> 1-layer GRU(64) -> linear head; tokens: prompt c, response a -> C + a."""

    def __init__(self, out_dim: int, bias: bool = True):
        super().__init__()
        self.embed = nn.Embedding(C + V, HIDDEN)
        self.gru = nn.GRU(HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, out_dim, bias=bias)

    def states(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """[B, T+1, H]: GRU output after the prompt token and after each response token."""
        tokens = torch.cat([prompt[:, None], C + response], dim=1)
        return self.gru(self.embed(tokens))[0]


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def qrm_scores(model: GRUNet, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """[B, T]: Z(s_t, a_t) read at each response-token position (it has seen the prompt, prefix and a_t)."""
    return model.head(model.states(prompt, response)[:, 1:]).squeeze(-1)


def all_action_scores(model: GRUNet, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """[B, T, V]: Z(s_t, a) for every candidate token a, one GRU step from each state s_t."""
    h = model.states(prompt, response)[:, :T]  # state before a_t
    b = h.shape[0]
    h0 = h.reshape(1, b * T, HIDDEN).repeat_interleave(V, dim=1)
    cand = (C + torch.arange(V)).repeat(b * T)
    out = model.gru(model.embed(cand)[:, None], h0.contiguous())[0]
    return model.head(out[:, 0]).reshape(b, T, V)


def orm_scores(model: GRUNet, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """[B]: the ORM's scalar at the last position."""
    z = model.head(model.states(prompt, response)[:, 1:]).squeeze(-1)
    return last_token_scores(z, torch.ones_like(z, dtype=torch.bool))


def train_rm(kind: str, pairs: dict, steps: int = RM_STEPS, progress: bool = False) -> GRUNet:
    """Q-RM ("qrm", L_QRM beta 0.2 gamma 2.0) or ORM ("orm", BT on the last score); Adam lr 3e-3, batch 64."""
    model = _seeded(0, lambda: GRUNet(1, bias=False))
    opt = torch.optim.Adam(model.parameters(), lr=RM_LR)
    g = torch.Generator().manual_seed(0)
    n, order, pos = len(pairs["prompt"]), torch.empty(0, dtype=torch.long), 0
    mask = torch.ones(RM_BATCH, T, dtype=torch.bool)
    for _ in tqdm(range(steps), desc=f"train {kind}", disable=not progress, leave=False):
        if pos + RM_BATCH > len(order):
            order, pos = torch.randperm(n, generator=g), 0
        idx, pos = order[pos : pos + RM_BATCH], pos + RM_BATCH
        c, w, lo = pairs["prompt"][idx], pairs["chosen"][idx], pairs["rejected"][idx]
        if kind == "qrm":
            loss = qrm_loss(qrm_scores(model, c, w), mask, qrm_scores(model, c, lo), mask)
        else:
            loss = orm_loss(orm_scores(model, c, w), orm_scores(model, c, lo))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def rm_accuracy(kind: str, model: GRUNet, pairs: dict) -> float:
    """Held-out pairwise accuracy: mean Z (Q-RM) or last score (ORM) of chosen > rejected."""
    c, w, lo = pairs["prompt"], pairs["chosen"], pairs["rejected"]
    if kind == "qrm":
        mask = torch.ones_like(w, dtype=torch.bool)
        sw, sl = masked_mean(qrm_scores(model, c, w), mask), masked_mean(qrm_scores(model, c, lo), mask)
    else:
        sw, sl = orm_scores(model, c, w), orm_scores(model, c, lo)
    return float((sw > sl).float().mean())


def policy_rollout(
    policy: GRUNet, prompt: torch.Tensor, g: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (temperature 1; greedy when g is None): response [B, T] and pi_old probabilities [B, T, V]."""
    x, h, tokens, probs = prompt, None, [], []
    with torch.no_grad():
        for _ in range(T):
            out, h = policy.gru(policy.embed(x)[:, None], h)
            p = torch.softmax(policy.head(out[:, 0]), dim=-1)
            a = p.argmax(-1) if g is None else torch.multinomial(p, 1, generator=g).squeeze(1)
            tokens.append(a)
            probs.append(p)
            x = C + a
    return torch.stack(tokens, 1), torch.stack(probs, 1)


def greedy_token_accuracy(policy: GRUNet) -> float:
    prompts = torch.arange(C)
    return float((policy_rollout(policy, prompts, None)[0] == target_tokens()).float().mean())


def arm_rewards(arm: str, prompt, response, probs, qrm: GRUNet, orm: GRUNet) -> torch.Tensor:
    """[B, T] token rewards of one arm (see the module docstring)."""
    mask = torch.ones_like(response, dtype=torch.bool)
    with torch.no_grad():
        if arm == "qrm_a":
            z_all = all_action_scores(qrm, prompt, response)
            z = z_all.gather(2, response[..., None]).squeeze(2)
            return qrm_reinforce_rewards(z - (probs * z_all).sum(-1), mask, sub_mean=True)
        if arm == "qrm_b":
            return qrm_reinforce_rewards(qrm_scores(qrm, prompt, response), mask)
        if arm == "orm":
            s = orm_token_rewards(orm_scores(orm, prompt, response), mask, "broadcast")
            return normalize_token_rewards(s, mask, sub_mean=True)
        right = (response == target_tokens()[prompt]).float()
        if arm == "oracle_token":
            return right - right.mean()
        if arm == "oracle_seq":
            frac = right.mean(1, keepdim=True).expand_as(right)
            return frac - frac.mean()
    raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS + ORACLE_ARMS)}")


def run_arm(arm: str, seed: int, iterations: int, qrm: GRUNet, orm: GRUNet) -> list[float]:
    """REINFORCE for `iterations` steps; greedy token accuracy at iterations 0, 10, 20, ..."""
    policy = _seeded(1000 + seed, lambda: GRUNet(V))
    opt = torch.optim.Adam(policy.parameters(), lr=RL_LR)
    g = torch.Generator().manual_seed(seed)
    curve = [greedy_token_accuracy(policy)]
    for it in range(1, iterations + 1):
        prompt = torch.randint(C, (RL_BATCH,), generator=g)
        response, probs = policy_rollout(policy, prompt, g)
        rewards = arm_rewards(arm, prompt, response, probs, qrm, orm)
        logits = policy.head(policy.states(prompt, response)[:, :T])
        logp = torch.log_softmax(logits, -1).gather(2, response[..., None]).squeeze(2)
        loss = reinforce_loss(logp, rewards, torch.ones_like(logp, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % EVAL_EVERY == 0:
            curve.append(greedy_token_accuracy(policy))
    return curve


def _mean_at(curves: dict[int, list[float]], iterations: list[int], at: tuple[int, ...]) -> float:
    cols = [iterations.index(i) for i in at]
    return sum(curve[j] for curve in curves.values() for j in cols) / (len(curves) * len(cols))


def pass_criteria(rm_acc: dict[str, float], curves: dict, iterations: list[int]) -> dict[str, dict]:
    """The spec's three criteria, each {"passed": bool, ...its numbers}."""
    out = {
        "rm_accuracy": {
            "passed": min(rm_acc.values()) >= THRESHOLDS["rm_accuracy"],
            **rm_acc,
            "threshold": THRESHOLDS["rm_accuracy"],
        }
    }
    early = tuple(i for i in EARLY_ITERATIONS if i in iterations)
    if early:
        a, o = _mean_at(curves["qrm_a"], iterations, early), _mean_at(curves["orm"], iterations, early)
        out["early_gain"] = {
            "passed": a - o >= THRESHOLDS["early_gain"],
            "qrm_a": a,
            "orm": o,
            "gain": a - o,
            "iterations": list(early),
            "threshold": THRESHOLDS["early_gain"],
        }
    last = (iterations[-1],)
    a, o = _mean_at(curves["qrm_a"], iterations, last), _mean_at(curves["orm"], iterations, last)
    out["final_not_worse"] = {
        "passed": a >= o - THRESHOLDS["final_tolerance"],
        "qrm_a": a,
        "orm": o,
        "iteration": last[0],
        "tolerance": THRESHOLDS["final_tolerance"],
    }
    return out


def run_gru_check(
    seeds: tuple[int, ...] = (0, 1, 2),
    iterations: int = 200,
    progress: bool = True,
    oracles: bool = False,
    rm_steps: int = RM_STEPS,
) -> dict:
    """Run the whole check and return a JSON-able dict:

    - "rm_accuracy": {"qrm": float, "orm": float} held-out pairwise accuracy (1,000 pairs);
    - "n_pairs": {"train": int, "heldout": int};
    - "iterations": [0, 10, ..., iterations] where the curves are evaluated;
    - "curves": {arm: {seed: [greedy token accuracy at each of "iterations"]}} for arms "qrm_a",
      "qrm_b", "orm" (+ "oracle_token", "oracle_seq" with oracles=True); seeds are int keys;
    - "criteria": {"rm_accuracy" | "early_gain" | "final_not_worse": {"passed": bool, <numbers>}}
      ("early_gain" is absent when no evaluation falls on iterations 30/60/90);
    - "passed": all criteria passed; "seeds", "config" (the settings), "wall_time_s".
    """
    start = time.perf_counter()
    train, heldout = make_pairs()
    qrm = train_rm("qrm", train, rm_steps, progress)
    orm = train_rm("orm", train, rm_steps, progress)
    rm_acc = {"qrm": rm_accuracy("qrm", qrm, heldout), "orm": rm_accuracy("orm", orm, heldout)}
    arms = ARMS + (ORACLE_ARMS if oracles else ())
    runs = [(arm, seed) for arm in arms for seed in seeds]
    curves: dict[str, dict[int, list[float]]] = {arm: {} for arm in arms}
    for arm, seed in tqdm(runs, desc="gru check RL", disable=not progress):
        curves[arm][seed] = run_arm(arm, seed, iterations, qrm, orm)
    evals = list(range(0, iterations + 1, EVAL_EVERY))
    criteria = pass_criteria(rm_acc, curves, evals)
    config = {"C": C, "V": V, "T": T, "hidden": HIDDEN, "rm_steps": rm_steps, "rm_batch": RM_BATCH}
    config.update({"rm_lr": RM_LR, "rl_batch": RL_BATCH, "rl_lr": RL_LR, "iterations": iterations})
    return {
        "rm_accuracy": rm_acc,
        "n_pairs": {"train": len(train["prompt"]), "heldout": len(heldout["prompt"])},
        "iterations": evals,
        "curves": curves,
        "criteria": criteria,
        "passed": all(c["passed"] for c in criteria.values()),
        "seeds": list(seeds),
        "config": config,
        "wall_time_s": time.perf_counter() - start,
    }


def plot_gru_check(result: dict, path: str | Path) -> Path:
    """PNG: greedy token accuracy (mean over seeds) against REINFORCE iteration, one line per arm."""
    series = {}
    for arm, per_seed in result["curves"].items():
        runs = list(per_seed.values())
        series[arm] = [(it, sum(r[j] for r in runs) / len(runs)) for j, it in enumerate(result["iterations"])]
    title = f"GRU check, REINFORCE (mean of {len(result['seeds'])} seeds)"
    return plot_curves(series, path, title, "iteration", "greedy token accuracy")
