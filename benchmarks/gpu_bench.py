"""GPU checks and timings for the HF generation backend and the training loop (one CUDA card).

A model with Qwen2.5-0.5B's real config and random weights (no downloads on the device machine):
1. generation: HFGenerator (our decode loop, KV cache, bf16) vs `model.generate` with the same batch
   (the baseline), 256 samples x 128 new tokens, tokens/s; and our per-token log-probabilities against
   an independent teacher-forced forward pass of the same tokens;
2. training: common.train on a fixed batch, bf16 autocast; optimizer steps/s, tokens/s, and that the
   loss falls.

    python -m benchmarks.gpu_bench [--quick]      # prints a markdown report
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from common.generation import HFGenerator, SamplingParams
from common.train import TrainConfig, causal_lm_loss, pad_collate, train

QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
)


class IdTokenizer:
    """Just enough tokenizer for id prompts: decode ids as space-separated numbers."""

    pad_token_id = 151643
    eos_token_id = 151645

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - start


def bench_generation(model, prompts: int, n: int, new_tokens: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(100, 50000, (32,), generator=gen).tolist() for _ in range(prompts)]
    params = SamplingParams(n=n, temperature=1.0, max_tokens=new_tokens, seed=0)
    ours = HFGenerator(model, IdTokenizer(), batch_size=prompts * n)
    ours.eos_ids = set()  # random weights: never stop early, so both sides decode the same length
    ours.generate(ids[:2], SamplingParams(max_tokens=4, seed=0))  # warm-up
    outs, t_ours = timed(lambda: ours.generate(ids, params))
    batch = torch.tensor([p for p in ids for _ in range(n)], device=model.device)
    kwargs = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        pad_token_id=IdTokenizer.pad_token_id,
    )
    model.generate(batch[:2], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    _, t_hf = timed(lambda: model.generate(batch, **kwargs))
    total = prompts * n * new_tokens
    lines = [
        f"| HFGenerator (ours: decode loop + raw log-probs) | {prompts * n} x {new_tokens} | {t_ours:.2f} | {total / t_ours:,.0f} |",
        f"| model.generate (baseline, no log-probs) | {prompts * n} x {new_tokens} | {t_hf:.2f} | {total / t_hf:,.0f} |",
    ]
    # log-probs against an independent teacher-forced pass in float32
    sample = outs[0]
    full = torch.tensor([ids[0] + sample.token_ids], device=model.device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(full).logits.float()
    ref = logits[0, len(ids[0]) - 1 : -1].log_softmax(-1)
    ref = ref.gather(1, torch.tensor(sample.token_ids, device=model.device)[:, None])[:, 0]
    diff = (ref.cpu() - torch.tensor(sample.logprobs)).abs().max().item()
    lines.append(
        f"\nmax |logprob(ours) - logprob(teacher-forced)| over {len(sample.token_ids)} tokens (bf16): {diff:.4f}"
    )
    return lines


def bench_training(model, steps: int, seq: int, batch: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(100, 50000, (seq,), generator=gen).tolist()} for _ in range(batch * 4)
    ]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            output_dir=out,
            max_steps=steps,
            batch_size=batch,
            lr=3e-4,
            warmup_steps=2,
            progress=False,
            log_every=steps,
        )
        start = time.perf_counter()
        result = train(model, data, causal_lm_loss, cfg, collate_fn=pad_collate(0))
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    tokens = steps * batch * seq
    return [
        f"| common.train, bf16 autocast, AdamW | {steps} steps x {batch} x {seq} tokens | {wall:.1f} s "
        f"(incl. checkpoint + save) | {tokens / wall:,.0f} tok/s | loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} |"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches (a smoke test)")
    parser.add_argument("--generation-only", action="store_true", help="skip the training benchmark")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_bench needs a CUDA device")
    print(f"# GPU check on {torch.cuda.get_device_name()} (torch {torch.__version__})\n")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN25_05B), dtype=torch.bfloat16).cuda().eval()
    print("## Generation, Qwen2.5-0.5B config, random weights, bf16\n")
    print("| backend | samples x new tokens | wall s | tokens/s |\n|---|---|---|---|")
    prompts, n = (8, 4) if args.quick else (64, 4)
    for line in bench_generation(model, prompts, n, 128):
        print(line, flush=True)
    del model
    torch.cuda.empty_cache()
    if args.generation_only:
        return 0
    print("\n## Training, Qwen2.5-0.5B config, fp32 master weights\n")
    train_model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN25_05B), dtype=torch.float32).cuda()
    for line in bench_training(train_model, steps=10 if args.quick else 30, seq=512, batch=8):
        print(line, flush=True)
    print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
