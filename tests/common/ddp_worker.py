"""One SFT stage, then one PPO chunk from the SFT policy, of a tiny toy config, for test_ddp.py.

    python tests/common/ddp_worker.py OUT REPORT                       # one process
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/common/ddp_worker.py OUT REPORT

The global batch is the same at any world size: SFT steps take 4 micro-batches of 2 examples (grad_accum
= 4 / processes), and run_rl (data_parallel=True) splits each minibatch over the processes. Rollouts are
greedy, so they do not depend on which process samples which prompt. No dropout. The run writes under OUT (sft/, rl/); each
process writes, outside OUT, REPORT/rank<r>.json (SFT losses, the RL curve, the prompts it sampled, every
file operation it made under OUT, from an audit hook) and REPORT/rank<r>.pt (final parameters).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from common.generation import HFGenerator
from common.models import build_tiny_causal_lm
from common.rl import kl_abs
from common.rl_loop import RLConfig, run_rl
from common.stages import world
from common.train import TrainConfig, causal_lm_loss, pad_collate, train
from tests.common.conftest import PROMPTS, WORDS, word_tokenizer

MICRO_BATCHES, MICRO_BATCH = 4, 2  # per SFT optimizer step, over all processes
SFT_STEPS, RL_CHUNKS = 4, 1
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def audit_writes(root: Path) -> list[list[str]]:
    """Record (event, path) of every file write, rename, mkdir or delete under `root` from now on."""
    root_str, seen = str(root.resolve()), []
    kinds = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink", "torch.save"}

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            paths = [path] if writes else []
        elif event in kinds:
            paths = list(args[:2] if event == "os.rename" else args[:1])
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)):
                full = os.path.abspath(os.fsdecode(p))
                if full.startswith(root_str):
                    seen.append([event, os.path.relpath(full, root_str)])

    sys.addaudithook(hook)
    save = torch.save  # writes from C++ (accelerate's RNG states, run_rl's state) raise no audit event

    def recording_save(obj, f, *args, **kwargs):
        hook("torch.save", (f,))
        return save(obj, f, *args, **kwargs)

    torch.save = recording_save
    return seen


def counting_rows(tok, n: int = 24, seed: int = 0) -> list[dict[str, list[int]]]:
    """Rows counting up through WORDS (cyclically) from a random letter, random length 3-7: ragged batches."""
    gen, first = torch.Generator().manual_seed(seed), tok.convert_tokens_to_ids(WORDS[0])
    rows = []
    for _ in range(n):
        start, length = (int(torch.randint(0, len(WORDS), (1,), generator=gen)) for _ in range(2))
        rows.append({"input_ids": [first + (start + i) % len(WORDS) for i in range(3 + length % 5)]})
    return rows


class TinyCritic(torch.nn.Module):
    """(input_ids, attention_mask) -> [batch, seq] values."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb, self.head = torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, 1, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids)).squeeze(-1) * attention_mask


def run(out: Path, report: Path, audit: bool = True) -> dict:
    """The SFT stage and the RL chunk; returns (and writes to REPORT) this process's summary. `audit`
    False: no audit hook (it cannot be removed again: for a run inside a longer-lived process)."""
    t0 = time.perf_counter()
    n_procs, rank = world()
    writes = audit_writes(out) if audit else []
    tok = word_tokenizer()
    policy = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    sft = TrainConfig(
        output_dir=str(out / "sft"),
        max_steps=SFT_STEPS,
        batch_size=MICRO_BATCH,
        grad_accum=MICRO_BATCHES // n_procs,
        lr=3e-3,
        warmup_steps=1,
        save_every=2,
        seed=3,
        progress=False,
    )
    result = train(policy, counting_rows(tok), causal_lm_loss, sft, collate_fn=pad_collate(tok))
    t_sft = time.perf_counter()

    sampled: list[str] = []

    def recording_generator(model):
        gen = HFGenerator(model, tok, progress=False)
        generate = gen.generate
        gen.generate = lambda prompts, params: sampled.extend(prompts) or generate(prompts, params)
        return gen

    ref = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    ref.load_state_dict(policy.state_dict())
    critic = TinyCritic(len(tok))

    def reward_fn(ro):  # 1 on every even token id of the response, minus a KL penalty to the SFT policy
        even = (ro.input_ids % 2 == 0).float() * ro.response_mask
        return even - 0.01 * kl_abs(ro.logp_old, ro.logp_ref) * ro.response_mask

    rl = RLConfig(
        output_dir=str(out / "rl"),
        chunks=RL_CHUNKS,
        prompts_per_chunk=len(PROMPTS),
        algorithm="ppo",
        minibatch_size=3,  # 8 rows: minibatches of 3, 3, 2, split 1+2, 1+2, 1+1 over two processes
        inner_epochs=2,
        lr=3e-3,
        critic_lr=1e-2,
        temperature=0.0,
        max_tokens=5,
        progress=False,
    )
    curve = run_rl(
        policy,
        tok,
        PROMPTS,
        reward_fn,
        rl,
        critic=critic,
        ref_model=ref,
        evaluate=lambda model: {},
        generator_factory=recording_generator,
        initial_eval={},
        data_parallel=True,
    )
    seconds = {"sft": t_sft - t0, "rl": time.perf_counter() - t_sft}
    report.mkdir(parents=True, exist_ok=True)
    params = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    params |= {f"critic.{k}": v for k, v in critic.state_dict().items()}
    torch.save(params, report / f"rank{rank}.pt")
    summary = {
        "rank": rank,
        "n_procs": n_procs,
        "sft_losses": result.losses,
        "rl_curve": curve,
        "seconds": seconds,
    }
    summary |= {"sampled": sampled, "writes": writes}
    (report / f"rank{rank}.json").write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]), Path(sys.argv[2]))
