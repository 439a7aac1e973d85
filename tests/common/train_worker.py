"""A training run for the kill-and-resume test: `python train_worker.py OUT [KILL_AT_MICROSTEP]`.

With KILL_AT_MICROSTEP the process SIGKILLs itself inside that micro-step, mid-way through training.
Prints the final loss and a weight checksum as JSON when it finishes.
"""

import json
import os
import signal
import sys

import torch

from common.models import build_tiny_causal_lm
from common.train import TrainConfig, causal_lm_loss, pad_collate, train

out = sys.argv[1]
kill_at = int(sys.argv[2]) if len(sys.argv) > 2 else -1
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
# A learnable pattern: each sequence counts up from a random start (mod 40).
data = []
for _ in range(36):
    start = int(torch.randint(0, 40, (1,), generator=gen))
    length = int(torch.randint(6, 12, (1,), generator=gen))
    data.append({"input_ids": [(start + i) % 40 + 1 for i in range(length)]})
calls = 0


def loss_fn(model, batch):
    global calls
    calls += 1
    if calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return causal_lm_loss(model, batch)


model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
cfg = TrainConfig(output_dir=out, max_steps=12, batch_size=4, grad_accum=2, lr=3e-3, warmup_steps=2,
                  save_every=4, progress=False, seed=5)
result = train(model, data, loss_fn, cfg, collate_fn=pad_collate(0))
checksum = sum(float(p.double().sum()) for p in model.parameters())
print(json.dumps({"final_loss": result.final_loss, "losses": result.losses, "checksum": checksum}))
