"""RL maths shared by the RL papers (qrm, lco, ipvrm): rollouts, token log-probs, advantages, losses, Pass@k.

Token-level rewards are first-class: every estimator and loss takes `[batch, seq]` tensors aligned with
`input_ids` (prompt + response, right-padded) and a bool `mask` [batch, seq] marking the response
tokens, so a reward model that scores each token (Q-RM, a PRM, a DPO-RM) plugs in unchanged and an
outcome reward is the special case "reward at the last response token" (or broadcast to all of them).
Position t holds log pi(a_t | s_t) for the token a_t = input_ids[:, t]; position 0 (never a response
token) holds 0.

Equations (spec `shared/papers/qrm.md`, "Using Q-RM in RL" and invariants 9-12; homzer/Q-RM's
src/ppo/buffer.py and src/ppo/trainer.py for the code defaults):
- REINFORCE (the code's policy-gradient trainer): L = -(1/n) sum_t r_t log pi(a_t|s_t) over the n
  response tokens of the minibatch; no baseline, no ratio (invariant 9).
- reward-is-Q advantage (PPO + Q-RM): A_t = r_t - c V_t with c = 0.01, returns R_t = r_t (invariant 10).
- GAE (every other PPO run): delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1},
  gamma = 0.9, lambda = 0.8 in the Q-RM code, returns = A + V (invariant 11).
- PPO-clip actor: -(1/n) sum_t min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t), eps = 0.2 (invariant 12).
- KL penalty of the code: |log pi_old - log pi_ref| per token (`kl_abs`).
- Leave-one-out group baseline over the samples of one prompt (`loo_group_baseline`).
- Group advantages from one score per sample (`group_advantages`): GRPO (r - mean_g) / (std_g + eps),
  RLOO r_i - mean_{j != i} r_j, Dr. GRPO r - mean_g (no std scaling); std_g is the sample std
  (unbiased, as trl's GRPOTrainer).
- Loss aggregation over tokens (`aggregate`): "token" (mean over every response token of the minibatch,
  the Q-RM code and DAPO), "sequence" (each sequence's token mean, then the mean over sequences: GRPO),
  "constant" (the token sum over n_sequences x max_tokens: Dr. GRPO's length-unbiased form).
- Pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).
The chunked rollout -> reward -> advantage -> update loop with checkpoint/resume is `common.rl_loop`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from common.generation import Generator, SamplingParams


def _check_mask(x: torch.Tensor, mask: torch.Tensor, where: str, name: str = "rewards") -> torch.Tensor:
    """The mask as bool after checking it against x: same 2-D shape, at least one response token."""
    if x.dim() != 2:
        raise ValueError(f"{where}: {name} must be [batch, seq], got shape {tuple(x.shape)}")
    if mask.shape != x.shape:
        raise ValueError(f"{where}: mask shape {tuple(mask.shape)} != {name} shape {tuple(x.shape)}")
    mask = mask.bool()
    if not mask.any():
        raise ValueError(f"{where}: mask has no response token")
    return mask


def _same_shape(where: str, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: shapes differ: {shapes}")


@dataclass
class Rollout:
    """One chunk of sampled responses, right-padded: row i = prompt tokens + response tokens (+ EOS)."""

    prompt_ids: list[list[int]]
    input_ids: torch.Tensor  # [batch, seq] long
    attention_mask: torch.Tensor  # [batch, seq] long, 1 on prompt + response
    response_mask: torch.Tensor  # [batch, seq] bool, True on response tokens (the ending EOS included)
    logp_old: (
        torch.Tensor
    )  # [batch, seq] log pi_old(a_t|s_t) at response positions (generator's), 0 elsewhere
    texts: list[str]
    prompt_index: list[int]
    logp_ref: torch.Tensor | None = None  # [batch, seq] the reference policy's, filled by the loop
    # what reward_fn measured before any normalisation or baseline (e.g. reward_raw, correct): logged
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with its tensors on `device` (itself when they are there already)."""
        if self.input_ids.device == torch.device(device):
            return self
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Rollout(
            prompt_ids=self.prompt_ids,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            response_mask=move(self.response_mask),
            logp_old=move(self.logp_old),
            texts=self.texts,
            prompt_index=self.prompt_index,
            logp_ref=move(self.logp_ref),
            metrics=self.metrics,
        )

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        """The sub-rollout of these rows (for minibatches)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        keep = idx.tolist()
        return Rollout(
            prompt_ids=[self.prompt_ids[i] for i in keep],
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            response_mask=self.response_mask[idx],
            logp_old=self.logp_old[idx],
            texts=[self.texts[i] for i in keep],
            prompt_index=[self.prompt_index[i] for i in keep],
            logp_ref=None if self.logp_ref is None else self.logp_ref[idx],
        )


def rollout(generator: Generator, tokenizer, prompts: list[str], params: SamplingParams) -> Rollout:
    """Sample `params.n` responses per prompt and pack them as a right-padded `Rollout`.

    Any `Generator` works (HF or vLLM). Every completion has at least one token (an immediate EOS is kept
    as a token), so every row has at least one response position.
    """
    if not prompts:
        raise ValueError("rollout: no prompts")
    outs = generator.generate(prompts, params)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    rows = [prompt_ids[o.prompt_index] + list(o.token_ids) for o in outs]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.bool)
    logp_old = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (o, row) in enumerate(zip(outs, rows)):
        start = len(prompt_ids[o.prompt_index])
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        response[i, start : len(row)] = True
        logp_old[i, start : len(row)] = torch.tensor(o.logprobs, dtype=torch.float32)
    return Rollout(
        prompt_ids=[prompt_ids[o.prompt_index] for o in outs],
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=response,
        logp_old=logp_old,
        texts=[o.text for o in outs],
        prompt_index=[o.prompt_index for o in outs],
    )


def concat_rollouts(parts: list[Rollout], prompt_offsets: list[int], pad_id: int) -> Rollout:
    """One rollout of the rows of `parts` in order, right-padded to the widest; part i's `prompt_index`
    is shifted by `prompt_offsets[i]` (its prompts' position in the whole prompt list). The rollouts of
    consecutive prompt slices, joined, equal the rollout of all the prompts (given the same completions)."""
    if not parts or len(parts) != len(prompt_offsets):
        raise ValueError(f"concat_rollouts: {len(parts)} parts for {len(prompt_offsets)} offsets")
    width = max(p.input_ids.shape[1] for p in parts)

    def cat(name: str, fill) -> torch.Tensor:
        tensors = [getattr(p, name) for p in parts]
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)  # noqa: E731
        return torch.cat([pad(t) for t in tensors])

    return Rollout(
        prompt_ids=[ids for p in parts for ids in p.prompt_ids],
        input_ids=cat("input_ids", pad_id),
        attention_mask=cat("attention_mask", 0),
        response_mask=cat("response_mask", False),
        logp_old=cat("logp_old", 0.0),
        texts=[t for p in parts for t in p.texts],
        prompt_index=[i + off for p, off in zip(parts, prompt_offsets) for i in p.prompt_index],
    )


# Rows per forward of `by_length`. Measured on the toy student (128 sampled rows, 36 % padding, 1 thread):
# forward + backward 0.91 s as one [128, L] pass, 0.39 s as four length-sorted passes of 32 rows, each cut
# at its longest row (the padding is skipped and the [rows, L, vocab] logits stay in cache); mid-model
# scoring 0.43 -> 0.30 s. Same values (per row, a causal model never reads the padding after its end).
BUCKET_ROWS = 32


def by_length(
    fn, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: int | None = BUCKET_ROWS
) -> torch.Tensor:
    """`fn(input_ids, attention_mask) -> [b, w, ...]` over right-padded rows, run on the rows sorted by
    length, `rows` at a time, each group cut at its longest row; the outputs come back in the original
    row order as [batch, seq, ...], 0 on the padding. For causal models only (a position's output
    may depend on what comes before it, never after). `rows=None`: one pass over everything. Gradients flow.
    """
    lengths = attention_mask.sum(1)
    if rows is None or input_ids.shape[0] == 0:
        return _zero_padding(fn(input_ids, attention_mask), attention_mask)
    width = input_ids.shape[1]
    if not torch.equal(attention_mask.bool(), torch.arange(width, device=lengths.device) < lengths[:, None]):
        raise ValueError("by_length: rows must be right-padded (attention_mask 1...1 0...0 in every row)")
    order = torch.argsort(lengths, stable=True)
    parts = []
    for idx in order.split(rows):
        w = max(int(lengths[idx].max()), 1)
        out = _zero_padding(fn(input_ids[idx, :w], attention_mask[idx, :w]), attention_mask[idx, :w])
        pad = [0, 0] * (out.dim() - 2) + [0, width - w]
        parts.append(torch.nn.functional.pad(out, pad))
    return torch.cat(parts)[torch.argsort(order)]


def _zero_padding(out: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    keep = attention_mask.bool().reshape(*attention_mask.shape, *[1] * (out.dim() - 2))
    return torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: int | None = BUCKET_ROWS
) -> torch.Tensor:
    """[batch, seq] log pi(a_t | s_t) of the token at each position t >= 1 (position 0 and the padding: 0),
    in float32, `rows` rows per forward (`by_length`; None: one pass).

    Right padding keeps positions 0..len-1 of every row at their natural position ids.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"sequence_logprobs: input_ids {tuple(input_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} must be the same [batch, seq] shape"
        )

    def logprobs(ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=am).logits[:, :-1].float()
        logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        return torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)

    return by_length(logprobs, input_ids, attention_mask, rows)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's response tokens; (advantages, returns = A + V).

    Positions outside the mask are skipped (the next response token's value is the bootstrap) and get
    0; the value after the last response token is 0 (the episode ends).
    """
    mask = _check_mask(rewards, mask, "gae")
    _same_shape("gae", rewards=rewards, values=values, mask=mask)
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        next_value, next_adv = rewards.new_zeros(()), rewards.new_zeros(())
        for t in reversed(mask[b].nonzero().flatten().tolist()):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            next_adv = delta + gamma * lam * next_adv
            adv[b, t] = next_adv
            next_value = values[b, t]
    returns = torch.where(mask, adv + values, torch.zeros_like(adv))
    return adv, returns


def reward_is_q_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, value_coef: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO + Q-RM without GAE (code `reward_is_q`): A_t = r_t - value_coef * V_t, returns R_t = r_t."""
    mask = _check_mask(rewards, mask, "reward_is_q_advantages")
    _same_shape("reward_is_q_advantages", rewards=rewards, values=values, mask=mask)
    zero = torch.zeros_like(rewards)
    return torch.where(mask, rewards - value_coef * values, zero), torch.where(mask, rewards, zero)


def loo_group_baseline(rewards: torch.Tensor, mask: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """Leave-one-out group baseline on token rewards [batch, seq]: r_t minus the mean, over the OTHER
    samples j of the same group (the samples of one prompt), of their mean response-token reward
    (1/(G-1) sum_{j != i} mean_t r_{j,t}); a per-sequence constant, so token-level differences are kept.

    A group of one sample keeps its rewards (no baseline can be estimated without itself); positions
    outside the mask get 0. The means are taken in float64.
    """
    mask = _check_mask(rewards, mask, "loo_group_baseline")
    if len(groups) != rewards.shape[0]:
        raise ValueError(f"loo_group_baseline: {len(groups)} group ids for {rewards.shape[0]} rows")
    if not mask.any(dim=1).all():
        raise ValueError("loo_group_baseline: a row has no response token")
    seq = (torch.where(mask, rewards, torch.zeros_like(rewards)).sum(dim=1) / mask.sum(dim=1)).double()
    g = torch.as_tensor(groups)
    base = torch.zeros_like(seq)
    for gid in g.unique():
        rows = (g == gid).nonzero().flatten()
        if len(rows) > 1:
            base[rows] = (seq[rows].sum() - seq[rows]) / (len(rows) - 1)
    out = rewards - base[:, None].to(rewards.dtype)
    return torch.where(mask, out, torch.zeros_like(out))


GROUP_ADVANTAGES = ("grpo", "rloo", "dr_grpo")
LOSS_NORMS = ("token", "sequence", "constant")


def group_advantages(
    scores: torch.Tensor, groups: list[int], kind: str = "grpo", eps: float = 1e-4
) -> torch.Tensor:
    """[batch] advantages from one score per sample, within the samples of one prompt (`groups`):
    "grpo" (r - mean_g) / (std_g + eps), "rloo" r_i - mean_{j != i} r_j, "dr_grpo" r - mean_g. std_g is
    the unbiased sample std (trl's); a group of one sample gets 0. Computed in float64."""
    if kind not in GROUP_ADVANTAGES:
        raise ValueError(f"group_advantages: kind {kind!r}; valid: {', '.join(GROUP_ADVANTAGES)}")
    if scores.dim() != 1 or len(groups) != scores.shape[0]:
        raise ValueError(
            f"group_advantages: {len(groups)} group ids for scores of shape {tuple(scores.shape)}"
        )
    r, g = scores.double(), torch.as_tensor(groups)
    out = torch.zeros_like(r)
    for gid in g.unique():
        rows = (g == gid).nonzero().flatten()
        n = len(rows)
        if n < 2:
            continue
        x = r[rows]
        if kind == "rloo":
            out[rows] = x - (x.sum() - x) / (n - 1)
        elif kind == "dr_grpo":
            out[rows] = x - x.mean()
        else:
            out[rows] = (x - x.mean()) / (x.std(unbiased=True) + eps)
    return out.to(scores.dtype)


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, norm: str = "token", max_tokens: int | None = None
) -> torch.Tensor:
    """The loss from per-token terms [batch, seq] over the response `mask` (`LOSS_NORMS`): "token" the
    mean over every response token, "sequence" the mean of each row's token mean, "constant" the token
    sum over (rows x `max_tokens`)."""
    if norm == "token":
        return per_token[mask].sum() / mask.sum()
    if norm == "sequence":
        rows = mask.any(dim=1)
        zero = torch.zeros_like(per_token)
        per_row = torch.where(mask, per_token, zero).sum(dim=1)[rows] / mask.sum(dim=1)[rows]
        return per_row.mean()
    if norm == "constant":
        if not max_tokens or max_tokens < 1:
            raise ValueError("aggregate: norm 'constant' needs max_tokens >= 1")
        return per_token[mask].sum() / (per_token.shape[0] * max_tokens)
    raise ValueError(f"aggregate: norm {norm!r}; valid: {', '.join(LOSS_NORMS)}")


def reinforce_loss(
    logp: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    norm: str = "token",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """-(1/n) sum_t r_t log pi(a_t|s_t) over the n response tokens (the rewards carry no gradient);
    `norm` as `aggregate` ("token", the default, is this formula)."""
    mask = _check_mask(logp, mask, "reinforce_loss", "logp")
    _same_shape("reinforce_loss", logp=logp, rewards=rewards)
    return aggregate(-(rewards.detach() * logp), mask, norm, max_tokens)


def ppo_clip_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    norm: str = "token",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """-(1/n) sum_t min(rho_t A_t, clip(rho_t, 1-clip, 1+clip) A_t), rho_t = exp(logp - logp_old);
    `norm` as `aggregate` ("token", the default, is this formula)."""
    mask = _check_mask(logp, mask, "ppo_clip_loss", "logp")
    _same_shape("ppo_clip_loss", logp=logp, logp_old=logp_old, advantages=advantages)
    if not clip > 0:
        raise ValueError(f"ppo_clip_loss: clip must be > 0, got {clip}")
    adv = advantages.detach()
    ratio = torch.exp(torch.where(mask, logp - logp_old.detach(), torch.zeros_like(logp)))
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return aggregate(-surrogate, mask, norm, max_tokens)


def value_loss(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of (V_t - R_t)^2 (the code's critic trainer)."""
    mask = _check_mask(values, mask, "value_loss", "values")
    _same_shape("value_loss", values=values, returns=returns)
    return ((values - returns.detach()) ** 2)[mask].mean()


def kl_abs(logp_old: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """|log pi_old - log pi_ref| per token (the Q-RM code's KL penalty; multiply by kl_coef and mask)."""
    if logp_old.shape != logp_ref.shape:
        raise ValueError(f"kl_abs: shapes {tuple(logp_old.shape)} and {tuple(logp_ref.shape)} differ")
    return (logp_old - logp_ref).abs()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k: n, c, k must be integers, got {n!r}, {c!r}, {k!r}")
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k: need n >= 1, 0 <= c <= n, 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
