"""Generation speed on the CPU: 256 samples x 64 tokens from tiny-student, HF backend vs vLLM backend.

The HF backend is the baseline (it is what runs where vLLM is missing); both run in this process one
after the other on the same saved model. Prints a markdown table.

    python -m benchmarks.generation_speed [--vocab-from smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common.generation import HFGenerator, SamplingParams, VLLMGenerator, save_for_vllm, vllm_available
from common.models import build_tiny_causal_lm, load_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer", default="smollm2-135m-instruct", help="tokenizer (sets the vocab size)"
    )
    parser.add_argument("--preset", default="tiny-student")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tok = load_tokenizer(args.tokenizer)
    model = build_tiny_causal_lm(args.preset, vocab_size=len(tok), seed=0, tokenizer=tok)
    prompts = ["Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:"] * 4
    params = SamplingParams(n=64, temperature=1.0, max_tokens=64, seed=0)
    print(
        "| backend | model | vocab | samples x max tokens | wall s | generated tokens/s |\n|---|---|---|---|---|---|"
    )
    rows = [("hf", lambda: HFGenerator(model, tok))]
    with tempfile.TemporaryDirectory() as folder:
        if vllm_available():
            save_for_vllm(model, tok, folder)
            rows.append(("vllm", lambda: VLLMGenerator(folder, seed=0)))
        for name, make in rows:
            gen = make()
            gen.generate(prompts[:1], SamplingParams(max_tokens=4, seed=0))  # warm-up
            start = time.perf_counter()
            outs = gen.generate(prompts, params)
            wall = time.perf_counter() - start
            tokens = sum(len(o.token_ids) for o in outs)
            print(
                f"| {name} | {args.preset} | {len(tok)} | {len(outs)} x 64 | {wall:.1f} | {tokens / wall:,.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
