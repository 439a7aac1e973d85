"""GLPFT supervised fine-tuning: sample encoding (loss masking, left truncation) and one SFT call.

    ex = encode_pair(tok, "system: " + sample["input"], sample["target"], max_len=4096)
    train_sft(model, [ex, ...], TrainConfig(...), pad_id)        # common.train: masked next-token CE

Encoding (spec "Training-time input"): input ids = encode(input) with BOS; target ids = encode(target +
EOS text) with the leading BOS dropped; labels are -100 over the input (and the padding, by
`common.train.pad_collate`); longer than `max_len` keeps the last `max_len` tokens (left truncation).
The loss is `common.train.causal_lm_loss`: the mean token cross-entropy over the supervised positions
of the micro-batch (the spec's L(theta)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from common.train import IGNORE_INDEX, TrainConfig, TrainResult, causal_lm_loss, pad_collate, train


def _encode(tokenizer, text: str) -> list[int]:
    if hasattr(tokenizer, "stoi"):  # the toy WordTokenizer
        return tokenizer.encode(text)
    return tokenizer(text)["input_ids"]


def encode_pair(tokenizer, prompt: str, target: str, max_len: int) -> dict:
    """{input_ids, labels} of one sample; labels supervise exactly the target + EOS tokens."""
    ids_in = _encode(tokenizer, prompt)
    ids_t = _encode(tokenizer, target + tokenizer.eos_token)
    bos = getattr(tokenizer, "bos_token_id", None)
    if ids_t and bos is not None and ids_t[0] == bos:
        ids_t = ids_t[1:]
    ids = ids_in + ids_t
    labels = [IGNORE_INDEX] * len(ids_in) + ids_t
    return {"input_ids": ids[-max_len:], "labels": labels[-max_len:]}


def encode_samples(tokenizer, samples: Sequence[dict], max_len: int, prefix: str = "") -> list[dict]:
    """Encode role samples {input, target}; `prefix` is the official training "system: "."""
    return [encode_pair(tokenizer, prefix + s["input"], s["target"], max_len) for s in samples]


def train_sft(model: torch.nn.Module, data: Sequence[dict], config: TrainConfig, pad_id: int) -> TrainResult:
    """Train `model` in place on encoded samples with the masked causal-LM loss."""
    return train(model, list(data), causal_lm_loss, config, collate_fn=pad_collate(pad_id))
