"""One training run for the kill-and-resume test in test_train.py, in its own process.

    python tests/common/train_worker.py OUT [--hang-at-step N]

Trains tiny-student (with attention dropout, so the RNG state matters) for 10 optimizer steps of 2 x 4
variable-length examples over several epochs, checkpointing every 3 steps into OUT. With --hang-at-step
N the loss function blocks once optimizer step N (0-based) starts, i.e. after the checkpoints before it
are on disk, so the parent can SIGKILL the process at a known point. On success prints one JSON line:
losses, final_loss, steps, and loss_calls (micro-batches this process computed).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common.models import build_tiny_causal_lm
from common.train import TrainConfig, causal_lm_loss, pad_collate, train

MAX_STEPS, SAVE_EVERY, GRAD_ACCUM = 10, 3, 2


def counting_rows(n: int = 36, vocab: int = 40, seed: int = 0) -> list[dict[str, list[int]]]:
    """Sequences that count up (mod vocab) from a random start, of random length 6-11."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        start, length = (
            int(torch.randint(0, vocab, (1,), generator=gen)),
            int(torch.randint(6, 12, (1,), generator=gen)),
        )
        rows.append({"input_ids": [(start + i) % vocab + 1 for i in range(length)]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--hang-at-step", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    calls = 0

    def loss_fn(model, batch):
        nonlocal calls
        if args.hang_at_step is not None and calls == args.hang_at_step * GRAD_ACCUM:
            time.sleep(3600)  # the parent kills us here
        calls += 1
        return causal_lm_loss(model, batch)

    model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0, attention_dropout=0.1)
    config = TrainConfig(
        output_dir=args.output_dir,
        max_steps=MAX_STEPS,
        batch_size=4,
        grad_accum=GRAD_ACCUM,
        lr=3e-3,
        weight_decay=0.1,
        warmup_steps=2,
        save_every=SAVE_EVERY,
        seed=5,
        progress=False,
    )
    result = train(model, counting_rows(), loss_fn, config, collate_fn=pad_collate(0))
    summary = {"losses": result.losses, "final_loss": result.final_loss, "steps": result.steps}
    print(json.dumps({**summary, "loss_calls": calls}))


if __name__ == "__main__":
    main()
