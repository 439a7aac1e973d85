"""Reward models on HF backbones: the token scorer (Q-RM / ORM / PGTG) and the DPO reward model.

Spec `shared/papers/qrm.md`, "Step-by-step algorithm" 2 and "Baselines as implemented". The scorer is the
official LlamaVerifier made generic: a causal LM's base model (no LM head) plus a linear head hidden -> 1
without bias, read at every position, so scores[b, t] = Z(s_t, a_t) with a_t the token at position t.
Pairs are encoded as in ParallelVerifierTrainer: prompt (with BOS where the tokenizer adds one, or the
chat template), then the response followed by EOS; the response mask marks the response tokens
themselves, EOS included; over `max_len` the prompt is kept and the response is cut from the end.
Training: Adam (common.train's AdamW with weight decay 0), constant lr, no warm-up, no clipping, as the
code; lr 1e-5 / batch 2 / 1 epoch / max_len 1024 / LoRA rank 128 with scaling 1 are the paper's defaults.
DPO-RM: policy + frozen reference, DPO on summed log-probs, token rewards beta * (log pi - log pi_ref) at
the right token (`official_shift=True` reproduces the repo's one-token-early reading).
Implicit PRM: the same policy + reference, trained with the CE form on outcome labels (chosen = 1,
rejected = 0; spec "Baselines as implemented"); its token rewards are the same beta-scaled log-ratios.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from common.models import load_causal_lm
from common.rl import by_length
from common.token_rm import DPORewardModel as DPORewardModel
from common.token_rm import RMTrainConfig as RMTrainConfig
from common.token_rm import encode_pairs as encode_pairs
from common.token_rm import log_ratio_margins as log_ratio_margins
from common.token_rm import pair_collate as pair_collate
from common.token_rm import pairwise_accuracy as pairwise_accuracy
from common.token_rm import pairwise_margins as pairwise_margins
from common.token_rm import response_token_scores as response_token_scores
from common.token_rm import split_pairs, train_pairwise, train_qrm, unscaled_lora
from common.token_rm import train_dpo_reward_model as train_dpo_reward_model
from papers.qrm.qrm import implicit_prm_loss, last_token_scores, orm_loss, pgtg_loss

OBJECTIVES = ("qrm", "orm", "pgtg")
SCORER_FILE = "scorer.json"


class TokenScorer(nn.Module):
    """HF causal-LM backbone (its base model, no LM head) + a linear head hidden->1 without bias, read at
    EVERY position: scores[b, t] = Z(s_t, a_t) where a_t is the token at position t."""

    def __init__(self, backbone: nn.Module, config, lora_rank: int | None = None, source: str = ""):
        super().__init__()
        self.backbone, self.config, self.lora_rank, self.source = backbone, config, lora_rank, source
        self.head = nn.Linear(config.hidden_size, 1, bias=False)

    @classmethod
    def from_model(
        cls, lm: PreTrainedModel, lora_rank: int | None = None, seed: int = 0, source: str = ""
    ) -> TokenScorer:
        """Wrap an already loaded causal LM; the head is randomly initialised from `seed`."""
        backbone = lm.base_model
        if lora_rank is not None:
            backbone = unscaled_lora(backbone, lora_rank)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scorer = cls(backbone, lm.config, lora_rank, source)
        return scorer.to(next(lm.parameters()).device)

    @classmethod
    def from_backbone(
        cls, name_or_path, lora_rank: int | None = None, seed: int = 0, dtype: torch.dtype = torch.float32
    ) -> TokenScorer:
        """Load a causal LM by name or path (`common.models`), keep its base model, add a fresh head."""
        return cls.from_model(load_causal_lm(name_or_path, dtype=dtype), lora_rank, seed, str(name_or_path))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] float32 scores (0 on the padding), the rows sorted by length `BUCKET_ROWS` at a
        time (`common.rl.by_length`: the same scores, less padding computed)."""

        def scores(ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
            hidden = self.backbone(input_ids=ids, attention_mask=am).last_hidden_state
            return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()

        return by_length(scores, input_ids, attention_mask)

    def save(self, path, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """Backbone config + every weight (LoRA adapters and head included) + optionally the tokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, path / "model.safetensors")
        meta = {"lora_rank": self.lora_rank, "source": self.source, "version": 1}
        (path / SCORER_FILE).write_text(json.dumps(meta))
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

    @classmethod
    def load(cls, path) -> TokenScorer:
        path = Path(path)
        if not (path / SCORER_FILE).exists():
            raise FileNotFoundError(f"{path}: not a saved TokenScorer (no {SCORER_FILE})")
        meta = json.loads((path / SCORER_FILE).read_text())
        config = AutoConfig.from_pretrained(path)
        backbone = AutoModel.from_config(config, dtype=torch.float32)
        if meta["lora_rank"] is not None:
            backbone = unscaled_lora(backbone, meta["lora_rank"])
        scorer = cls(backbone, config, meta["lora_rank"], meta["source"])
        scorer.load_state_dict(load_file(path / "model.safetensors"))
        return scorer.eval()


def world_preference_pairs(pairs: list[dict]) -> list[dict]:
    """Toy-world pairs (`common.synthetic.flaws.preference_pairs`) in the base models' format: ' ' + rationale."""
    return [
        {"prompt": p["prompt"], "chosen": " " + p["chosen"], "rejected": " " + p["rejected"]} for p in pairs
    ]


def train_reward_model(
    scorer: TokenScorer, tokenizer, pairs: list[dict], objective: str, cfg: RMTrainConfig, progress=True
) -> list[float]:
    """Train in place with L_QRM ("qrm"), BT on the last token ("orm") or PGTG ("pgtg"); the loss curve."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"train_reward_model: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}"
        )
    if objective == "qrm":
        return train_qrm(scorer, tokenizer, pairs, cfg, progress)

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        z = model(batch["input_ids"], batch["attention_mask"])
        (zw, zl), (mw, ml) = split_pairs(z), split_pairs(batch["response_mask"])
        if objective == "orm":
            loss = orm_loss(last_token_scores(zw, mw), last_token_scores(zl, ml))
        else:
            loss = pgtg_loss(zw, mw, zl, ml)
        return loss, {"loss": loss.item()}

    scorer.train()
    losses = train_pairwise(scorer, tokenizer, pairs, loss_fn, cfg, progress)
    scorer.eval()
    return losses


def train_implicit_prm(
    prm: DPORewardModel, tokenizer, pairs: list[dict], cfg: RMTrainConfig, progress=True
) -> list[float]:
    """Implicit PRM: BCE of beta * (sum log pi - sum log pi_ref) against the outcome label of each response
    (a pair's chosen = 1, rejected = 0; `qrm.implicit_prm_loss`, beta `cfg.implicit_beta`); trains the
    policy in place; the loss curve. Token rewards afterwards: `prm.token_rewards(..., beta)`."""

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        mask = batch["response_mask"]
        logp, ref = model(batch["input_ids"], batch["attention_mask"], mask, per_token=True)
        half = mask.shape[0] // 2
        labels = torch.cat([torch.ones(half), torch.zeros(mask.shape[0] - half)]).to(logp.device)
        loss = implicit_prm_loss(logp, ref, mask, labels, cfg.implicit_beta)
        return loss, {"loss": loss.item()}

    prm.policy.train()
    losses = train_pairwise(prm, tokenizer, pairs, loss_fn, cfg, progress)
    prm.eval()
    return losses
