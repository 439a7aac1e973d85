"""The spec's toy world: a black-box order-2 Markov chain teacher and the GRU language models that learn it.

    chain = MarkovChain(vocab=32, length=16, logit_scale=2.0, seed=0)
    texts = chain.sample_texts(500, seed=1)          # the teacher as a black box: text only ("t5 t17 ...")
    tok = WordTokenizer(32); ids = tok.encode(texts[0])   # [BOS, x_1 .. x_16]
    model = GRULM(32, seed=0); model(input_ids=ids).logits   # [B, T, V], an HF-like output
    chain.kl_to(model, test_ids)                     # exact mean KL(p_T || p_model) over test positions

Spec "Toy-scale check": logits W[x_{t-2}, x_{t-1}, :] ~ N(0, 1) * 2 over 32 tokens, token 0 = BOS (the
history before the first token, never emitted), sequences of 16 tokens. The learners only see samples;
the exact distribution is used for evaluation and for the white-box calibration arm only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

BOS = 0


@dataclass
class LMOutput:
    logits: torch.Tensor


class GRULM(nn.Module):
    """The spec toy's proxy and student: embedding 32, one GRU layer of 64, a linear head. `forward`
    takes and returns what an HF causal LM does (input_ids, attention_mask -> .logits), so the stages
    train both kinds of model through one code path."""

    def __init__(self, vocab: int, embedding: int = 32, hidden: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, embedding)
        self.gru = nn.GRU(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> LMOutput:
        hidden, _ = self.gru(self.embed(input_ids))  # causal: right padding never reaches earlier positions
        return LMOutput(self.head(hidden))


class WordTokenizer:
    """Token i <-> the word `t<i>`; ids start with BOS (0). The chain's texts are its only interface."""

    def __init__(self, vocab: int):
        self.vocab = vocab
        self.pad_token_id = BOS
        self.eos_token_id = None

    def __len__(self) -> int:
        return self.vocab

    def encode(self, text: str) -> list[int]:
        ids = [BOS]
        for word in text.split():
            if not (word.startswith("t") and word[1:].isdigit() and 0 < int(word[1:]) < self.vocab):
                raise ValueError(f"not a token of the toy chain: {word!r}")
            ids.append(int(word[1:]))
        return ids

    @staticmethod
    def decode(ids: list[int]) -> str:
        return " ".join(f"t{i}" for i in ids if i != BOS)


class MarkovChain:
    """The black-box teacher of the toy (module docstring); `seed` draws W."""

    def __init__(self, vocab: int = 32, length: int = 16, logit_scale: float = 2.0, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.vocab, self.length = vocab, length
        w = torch.randn(vocab, vocab, vocab, generator=gen, dtype=torch.float64) * logit_scale
        w[..., BOS] = float("-inf")  # BOS is never emitted
        self.logits = w

    def sample_ids(self, n: int, seed: int, temperature: float = 1.0) -> torch.Tensor:
        """[n, 1 + length] sequences starting with BOS."""
        gen = torch.Generator().manual_seed(seed)
        seqs = torch.full((n, self.length + 1), BOS, dtype=torch.long)
        prev2 = torch.full((n,), BOS, dtype=torch.long)
        for t in range(1, self.length + 1):
            probs = torch.softmax(self.logits[prev2, seqs[:, t - 1]] / temperature, dim=-1)
            seqs[:, t] = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
            prev2 = seqs[:, t - 1]
        return seqs

    def sample_texts(self, n: int, seed: int, temperature: float = 1.0) -> list[str]:
        return [WordTokenizer.decode(row.tolist()) for row in self.sample_ids(n, seed, temperature)]

    def next_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """The teacher's logits at every position of `ids` [B, T] (history BOS before the start): [B, T, V]."""
        prev2 = torch.cat([torch.full_like(ids[:, :1], BOS), ids[:, :-1]], dim=1)
        return self.logits[prev2, ids]

    @torch.no_grad()
    def kl_to(self, model: nn.Module, ids: torch.Tensor, batch: int = 500) -> dict[str, float]:
        """Exact mean over the test positions (each predicting x_1..x_L) of KL(p_T || p_model), and the
        share of positions where the model's top-1 token is the teacher's top-1 token."""
        total, agree, count = 0.0, 0.0, 0
        for start in range(0, len(ids), batch):
            x = ids[start : start + batch, :-1]
            log_t = torch.log_softmax(self.next_logits(x), dim=-1)
            log_m = torch.log_softmax(model(input_ids=x).logits.double(), dim=-1)
            p_t = log_t.exp()
            kl = (p_t * (log_t - log_m)).nan_to_num(0.0)  # 0 * (-inf - x) at BOS: 0
            total += float(kl.sum())
            agree += float((log_t.argmax(-1) == log_m.argmax(-1)).sum())
            count += x.numel()
        return {"kl": total / count, "top1_agreement": agree / count}
