"""`make bench`: every benchmark, each against its baseline in the same run.

- threads: torch threads per process (baseline: the default, all cores).
- generation: 64 x 128 tokens from the toy student and SmolLM2-135M-Instruct: our HF loop and vLLM vs
  transformers' `generate` (the rule `common.generation.resolve_backend` follows).
- rl_throughput: common.rl_loop.run_rl vs trl's GRPOTrainer, samples/s (needs the `bench` extra).
"""

from __future__ import annotations

import sys

from benchmarks import generation_speed, rl_throughput, threads


def main() -> int:
    print("## torch threads per process\n")
    threads.main([])
    print("\n## generation: 64 x 128 tokens, HF loop / vLLM vs transformers generate\n")
    generation_speed.main([])
    print("\n## RL rollout throughput: run_rl vs trl GRPOTrainer\n")
    rl_throughput.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
