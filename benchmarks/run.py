"""`make bench`: every benchmark, each against its baseline in the same run.

- threads: torch threads per process (baseline: the default, all cores).
- generation: 256 samples x 64 tokens from tiny-student, HF backend vs vLLM backend.
- rl_throughput: common.rl_loop.run_rl vs trl's GRPOTrainer, samples/s (needs the `bench` extra).
"""

from __future__ import annotations

import sys

from benchmarks import generation_speed, rl_throughput, threads


def main() -> int:
    print("## torch threads per process\n")
    threads.main([])
    print("\n## generation: 256 samples x 64 tokens, tiny-student\n")
    generation_speed.main([])
    print("\n## RL rollout throughput: run_rl vs trl GRPOTrainer\n")
    rl_throughput.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
