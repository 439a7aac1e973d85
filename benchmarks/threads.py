"""How many torch threads per process are fastest on this machine? (sets OMP_NUM_THREADS in the Makefile)

Times a fixed CPU workload (forward+backward steps of tiny-teacher on random tokens) in fresh
processes with OMP_NUM_THREADS=1 and =all cores, once with one process alone and once with two
processes at the same time (as pytest workers or a pipeline beside a test do). The baseline is the
machine's default (all cores). Prints a markdown table.

    python -m benchmarks.threads [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKLOAD = """
import time, torch
from common.models import build_tiny_causal_lm
model = build_tiny_causal_lm("tiny-teacher", vocab_size=1024, seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, 1024, (16, 128), generator=torch.Generator().manual_seed(0))
for _ in range(2):
    model(input_ids=ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
t = time.perf_counter()
for _ in range({steps}):
    model(input_ids=ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
print(time.perf_counter() - t)
"""


def run_batch(threads: int, processes: int, steps: int) -> float:
    """Wall time until all `processes` concurrent workers finish `steps` steps each."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    code = WORKLOAD.format(steps=steps)
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for p in procs:
        p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"workload failed with exit {p.returncode}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per process (default 30)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    print(f"| processes | OMP_NUM_THREADS | wall s ({args.steps} steps each, tiny-teacher, 16x128 tokens) |")
    print("|---|---|---|")
    for processes in (1, 2):
        for threads in sorted({1, cores}):
            wall = run_batch(threads, processes, args.steps)
            print(f"| {processes} | {threads} | {wall:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
