"""Peak memory of Proxy-KD's top-k KL (papers/proxykd/proxykd.py) at a Qwen-size vocabulary: chunked over
positions (the default, via common.divergences) against the plain all-positions computation (baseline).

Each variant runs forward + backward in a fresh process; on the CPU the peak is the process's maximum
resident set size above what it held once the inputs were built, on CUDA `torch.cuda.max_memory_allocated`
above the inputs. Prints a markdown table (and checks that both variants give the same value).

    python -m benchmarks.proxykd_topk_kl [--vocab 152064] [--positions 1024] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKLOAD = """
import json, resource, time, torch
from papers.proxykd.proxykd import topk_forward_kl
torch.manual_seed(0)
dev = "{device}"
student = torch.randn(1, {positions}, {vocab}, device=dev).requires_grad_()
proxy = torch.randn(1, {positions}, {vocab}, device=dev)
mask = torch.ones(1, {positions}, dtype=torch.bool, device=dev)
weights = torch.rand(1, device=dev)
if dev == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
loss = topk_forward_kl(student, proxy, mask, k=10, weights=weights, chunk_size={chunk})
loss.backward()
if dev == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({{"peak": peak, "s": time.perf_counter() - t, "value": loss.item()}}))
"""


def run(device: str, vocab: int, positions: int, chunk: int | None) -> dict:
    code = WORKLOAD.format(device=device, vocab=vocab, positions=positions, chunk=chunk)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=152064, help="vocabulary (Qwen2.5: 152,064)")
    parser.add_argument("--positions", type=int, default=1024, help="target positions in the batch")
    parser.add_argument(
        "--chunk", type=int, default=1024 // 8, help="positions per chunk of the chunked variant"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    gib = 2**30
    inputs = 2 * args.positions * args.vocab * 4 / gib
    print(
        f"top-k (k=10) forward KL, {args.positions} positions x {args.vocab} vocabulary, fp32, {args.device};"
    )
    print(f"the two input logit tensors hold {inputs:.2f} GiB (not counted below)\n")
    print("| variant | peak above the inputs (GiB) | forward + backward s | value |\n|---|---|---|---|")
    results = {}
    for name, chunk in (
        ("plain (baseline, chunk_size=None)", None),
        (f"chunked ({args.chunk} positions)", args.chunk),
    ):
        res = results[name] = run(args.device, args.vocab, args.positions, chunk)
        print(f"| {name} | {res['peak'] / gib:.2f} | {res['s']:.2f} | {res['value']:.6f} |", flush=True)
    values = [r["value"] for r in results.values()]
    if abs(values[0] - values[1]) > 1e-4 * max(1.0, abs(values[0])):
        raise SystemExit(f"chunked and plain values differ: {values}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
