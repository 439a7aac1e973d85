"""`make bench`: every benchmark, each against its baseline in the same run.

- threads: torch threads per process (baseline: the default, all cores).
- generation: 256 samples x 64 tokens from tiny-student, HF backend vs vLLM backend.
"""

from __future__ import annotations

import sys

from benchmarks import generation_speed, threads


def main() -> int:
    print("## torch threads per process\n")
    threads.main([])
    print("\n## generation: 256 samples x 64 tokens, tiny-student\n")
    generation_speed.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
