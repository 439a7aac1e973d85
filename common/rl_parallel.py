"""`run_rl(..., data_parallel=True)` under `accelerate launch` (N processes, e.g. DDP over gloo on CPU):
the data-parallel pieces. Opt-in, because the papers' drivers run RL on the main process only (or in a
worker pool): there a collective would wait forever for processes that never call it.

- Rollouts: each process samples a contiguous `share` of the chunk's prompts (sampling seed offset by its
  rank) and the shares are gathered (`sharded_rollout`), so every process holds the whole chunk's
  rollout in the one-process order. log pi_old / log pi_ref, `reward_fn`, the critic values and
  `evaluate` then run on the whole chunk in every process (replicated, not split: chunk-wide statistics
  such as group baselines or the value std need every row).
- Updates: each minibatch is split into N contiguous row shares; a process's loss is weighted by its
  share of the minibatch (`minibatch_shares`: its response tokens for the "token" loss_norm and the
  critic's token mean, its rows for "sequence" / "constant") and the gradients are summed over the
  processes before clipping (`sum_gradients`), so every process takes the one-process step on the same
  global minibatch and the replicas stay equal.
- Only the main process writes (state, curve, config, tracker); a `PolicyLoss`, whose aggregation over a
  minibatch `run_rl` cannot know, is refused under more than one process.
With greedy rollouts the run equals the one-process run up to the all-reduce's summation order
(tests/common/test_ddp.py); sampled rollouts differ with the world size (the HF generator draws per
batch), equal in distribution.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from common.rl import Rollout, concat_rollouts, rollout
from common.sampling import SamplingParams


def share(n: int, n_procs: int, rank: int) -> slice:
    """This process's contiguous share of n items (the shares' sizes differ by at most one)."""
    return slice(n * rank // n_procs, n * (rank + 1) // n_procs)


def sharded_rollout(
    gen, tokenizer, prompts: list, params: SamplingParams, n_procs: int, rank: int
) -> Rollout:
    """The rollout of `prompts`, each process sampling its `share` of them, gathered into every process."""
    if n_procs == 1:
        return rollout(gen, tokenizer, prompts, params)
    mine = prompts[share(len(prompts), n_procs, rank)]
    # the seed is offset by the rank so that two processes given the same prompt sample differently
    seeded = replace(params, seed=params.seed * n_procs + rank)
    local = rollout(gen, tokenizer, mine, seeded) if mine else None
    parts: list[Rollout | None] = [None] * n_procs
    torch.distributed.all_gather_object(parts, local)
    offsets = [share(len(prompts), n_procs, r).start for r in range(n_procs)]
    kept = [(part, offset) for part, offset in zip(parts, offsets) if part is not None]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return concat_rollouts([part for part, _ in kept], [offset for _, offset in kept], pad)


def minibatch_shares(
    mask: torch.Tensor, batch: torch.Tensor, idx: torch.Tensor, loss_norm: str
) -> tuple[float, float]:
    """(token share, loss share) of this process's rows `idx` of the minibatch `batch` (rows of the
    response `mask` [rows, seq]): the weights under which the processes' mean losses sum to the
    minibatch's. Both are 1 when `idx` is the whole minibatch."""
    token_share = float(mask[idx].sum() / mask[batch].sum())
    return token_share, token_share if loss_norm == "token" else len(idx) / len(batch)


def sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over the processes, in place."""
    torch.distributed.all_reduce(x)  # SUM
    return x


def sum_gradients(model: torch.nn.Module) -> None:
    """Sum every trainable parameter's gradient over the processes (a missing one counts as zero)."""
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:  # no rows on this process, or a parameter its rows did not reach
                p.grad = torch.zeros_like(p)
            sum_over_processes(p.grad)
