"""The two classifier families AD-KD is run on, behind one interface the losses need:

    e = model.embed(batch)                  # [B, L, d]: the embedding output (HF `hidden_states[0]`)
    logits = model.head(e, batch)           # [B, C]: the rest of the network from that output
    logits, cls = model.head(e, batch, return_cls=True)   # + the [CLS] state after each layer (PKD)

- `ToyEncoder`: the spec's toy model (post-LN Transformer, learned positions, embedding =
  LayerNorm(token + position), [CLS] pooling -> linear), attention written out as
  softmax(QK^T / sqrt(d_h)) V: the fused CPU attention kernels have no double backward.
- `BertClassifier`: an HF `BertForSequenceClassification` (MiniLM, BERT-base, ...) loaded with eager
  attention (double backward works), truncated to its first `num_layers` layers for a student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.models import load_sequence_classifier


@dataclass(frozen=True)
class ToyModelConfig:
    vocab_size: int = 40
    max_len: int = 13
    d_model: int = 48
    n_heads: int = 4
    n_layers: int = 2
    ffn_mult: int = 4
    num_labels: int = 2


class SelfAttention(nn.Module):
    """Multi-head attention, explicit softmax(QK^T / sqrt(d_h)) V (twice differentiable)."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d_model {d} is not divisible by n_heads {n_heads}")
        self.n_heads, self.qkv, self.out = n_heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, d_h]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        # masked keys get exactly zero weight (finfo.min underflows in exp): padding gets no gradient
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
        attn = scores.softmax(-1) @ v
        return self.out(attn.transpose(1, 2).reshape(b, length, d))


class ToyBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, ffn_mult: int):
        super().__init__()
        self.attn, self.ln1, self.ln2 = SelfAttention(d, n_heads), nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, mask))  # post-LN, as the spec's toy model
        return self.ln2(x + self.ffn(x))


class ToyEncoder(nn.Module):
    """The spec's toy classifier ("Toy-scale check", 2.); no dropout."""

    def __init__(self, cfg: ToyModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok, self.pos = nn.Embedding(cfg.vocab_size, cfg.d_model), nn.Embedding(cfg.max_len, cfg.d_model)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.blocks = nn.ModuleList(
            ToyBlock(cfg.d_model, cfg.n_heads, cfg.ffn_mult) for _ in range(cfg.n_layers)
        )
        self.cls = nn.Linear(cfg.d_model, cfg.num_labels)

    @property
    def hidden_size(self) -> int:
        return self.cfg.d_model

    @property
    def num_layers(self) -> int:
        return self.cfg.n_layers

    def embed(self, batch: dict) -> torch.Tensor:
        ids = batch["input_ids"]
        return self.ln(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))

    def head(self, e: torch.Tensor, batch: dict, return_cls: bool = False):
        mask, x, cls = batch["attention_mask"], e, []
        for block in self.blocks:
            x = block(x, mask)
            cls.append(x[:, 0])
        logits = self.cls(x[:, 0])
        return (logits, cls) if return_cls else logits

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.embed(batch), batch)


class BertClassifier(nn.Module):
    """An HF BERT sequence classifier split at its embedding output. `head(e, batch)` runs the model with
    a forward hook that replaces the embedding layer's output by `e` (as the official IG code hooks
    `bert.embeddings`), so the encoder, pooler and classifier are HF's own."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self._replacement: torch.Tensor | None = None
        self.hf.bert.embeddings.register_forward_hook(self._swap)

    def _swap(self, module, args, output):
        return output if self._replacement is None else self._replacement

    @property
    def hidden_size(self) -> int:
        return self.hf.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.hf.config.num_hidden_layers

    def _inputs(self, batch: dict) -> dict:
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: batch[k] for k in keys if k in batch}

    def embed(self, batch: dict) -> torch.Tensor:
        inputs = self._inputs(batch)
        return self.hf.bert.embeddings(
            input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids")
        )

    def head(self, e: torch.Tensor, batch: dict, return_cls: bool = False):
        self._replacement = e
        try:
            out = self.hf(**self._inputs(batch), output_hidden_states=return_cls)
        finally:
            self._replacement = None
        if return_cls:
            return out.logits, [h[:, 0] for h in out.hidden_states[1:]]
        return out.logits

    def forward(self, batch: dict) -> torch.Tensor:
        return self.hf(**self._inputs(batch)).logits


def load_bert_classifier(name_or_path: str, num_labels: int, num_layers: int | None = None) -> BertClassifier:
    """`name_or_path` (a short name of common.models such as `minilm-l6`, a folder or a hub id) as a
    classifier with a fresh head, eager attention and, for a student, only its first `num_layers` layers
    (the pretrained ones: the code's `--student_init copy`, here from the general checkpoint)."""
    extra = {} if num_layers is None else {"num_hidden_layers": num_layers}
    hf = load_sequence_classifier(name_or_path, num_labels=num_labels, attn_implementation="eager", **extra)
    return BertClassifier(hf)


def classify(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C], labels [N]) of `model` in eval mode over `batches` (dicts with `labels`)."""
    was_training, outs, labels = model.training, [], []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            outs.append(model(batch).float())
            labels.append(batch["labels"])
    model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


def accuracy_points(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in points (0-100), the published table's unit."""
    return 100.0 * float((logits.argmax(-1) == labels).float().mean())


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (
        F.mse_loss(logits.squeeze(-1), labels.float())
        if logits.shape[-1] == 1
        else F.cross_entropy(logits, labels)
    )
