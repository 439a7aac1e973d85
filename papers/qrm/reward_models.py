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

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from common.models import add_lora, load_causal_lm
from common.rl import by_length
from common.train import TrainConfig, train
from papers.qrm.qrm import (
    aligned_token_logprobs,
    dpo_loss,
    dpo_token_rewards,
    implicit_prm_loss,
    last_token_scores,
    masked_mean,
    masked_sum,
    orm_loss,
    pgtg_loss,
    qrm_loss,
)

OBJECTIVES = ("qrm", "orm", "pgtg")
REDUCES = ("mean", "last")
SCORER_FILE = "scorer.json"


def _lora(model: nn.Module, rank: int) -> nn.Module:
    # the code's LoRA has no scaling factor (alpha / r = 1) and a zero-initialised B, as peft's default
    return add_lora(model, r=rank, alpha=rank, target_modules="all-linear", task_type=None)


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
            backbone = _lora(backbone, lora_rank)
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
            backbone = _lora(backbone, meta["lora_rank"])
        scorer = cls(backbone, config, meta["lora_rank"], meta["source"])
        scorer.load_state_dict(load_file(path / "model.safetensors"))
        return scorer.eval()


def world_preference_pairs(pairs: list[dict]) -> list[dict]:
    """Toy-world pairs (`common.synthetic.flaws.preference_pairs`) in the base models' format: ' ' + rationale."""
    return [
        {"prompt": p["prompt"], "chosen": " " + p["chosen"], "rejected": " " + p["rejected"]} for p in pairs
    ]


def _prompt_ids(tokenizer, prompt: str, chat_template: bool) -> list[int]:
    if chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def encode_pairs(
    tokenizer, pairs: list[dict], max_len: int = 1024, chat_template: bool = False
) -> list[dict]:
    """Rows {chosen_ids, chosen_mask, rejected_ids, rejected_mask}: prompt + response + EOS, mask on the
    response tokens (EOS included); past max_len the response is cut from the end, the prompt is kept."""
    if tokenizer.eos_token_id is None:
        raise ValueError("encode_pairs: the tokenizer has no eos_token_id")
    rows = []
    for i, pair in enumerate(pairs):
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(pair.get(k), str)]
        if missing:
            raise ValueError(f"encode_pairs: pair {i} has no string {', '.join(map(repr, missing))}")
        prompt = _prompt_ids(tokenizer, pair["prompt"], chat_template)
        room = max_len - len(prompt)
        if room < 1:
            raise ValueError(
                f"encode_pairs: pair {i}: the prompt ({len(prompt)} tokens) fills max_len {max_len}"
            )
        row = {}
        for side in ("chosen", "rejected"):
            response = tokenizer(pair[side], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            response = response[:room]
            row[f"{side}_ids"] = prompt + response
            row[f"{side}_mask"] = [0] * len(prompt) + [1] * len(response)
        rows.append(row)
    return rows


def pair_collate(pad_id: int):
    """Batch of encoded pairs -> input_ids / attention_mask / response_mask [2B, S]: chosen rows first."""

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [(r["chosen_ids"], r["chosen_mask"]) for r in rows] + [
            (r["rejected_ids"], r["rejected_mask"]) for r in rows
        ]
        width = max(len(ids) for ids, _ in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        resp = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (tokens, mask) in enumerate(seqs):
            ids[i, : len(tokens)] = torch.tensor(tokens)
            attn[i, : len(tokens)] = 1
            resp[i, : len(tokens)] = torch.tensor(mask, dtype=torch.bool)
        return {"input_ids": ids, "attention_mask": attn, "response_mask": resp}

    return collate


@dataclass
class RMTrainConfig:
    """Reward-model training; defaults are the paper's (scripts/train-q-rm.sh, train-dpo-rm.sh)."""

    output_dir: str | None = None  # common.train checkpoints / final weights; None: a temporary folder
    lr: float = 1e-5  # spec: Q-RM Adam lr 1e-5 (DPO-RM: 1e-6)
    batch_size: int = 2  # spec: 2 pairs per step
    epochs: int = 1  # spec: 1 epoch
    max_steps: int | None = None  # None: `epochs` passes over the pairs
    max_len: int = 1024  # spec: max_seq_len 1024
    beta: float = 0.2  # spec: Q-RM beta
    gamma: float = 2.0  # spec: Q-RM gamma
    dpo_beta: float = 0.1  # spec: DPO-RM beta
    implicit_beta: float = 1.0  # code: ImplicitPRMLoss never applies its beta (implicit-PRM paper: a beta)
    chat_template: bool = False  # spec: the prompt is wrapped in the chat template (paper scale: True)
    seed: int = 1  # official code's default seed
    mixed_precision: str = "auto"  # spec: bf16 (auto = bf16 on CUDA, fp32 on CPU)


def _run(model: nn.Module, rows: list[dict], loss_fn, cfg: RMTrainConfig, pad_id: int, progress: bool):
    steps = cfg.max_steps or max(1, cfg.epochs * len(rows) // cfg.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(
            output_dir=cfg.output_dir or tmp,
            max_steps=steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            lr_schedule="constant",
            max_grad_norm=None,
            seed=cfg.seed,
            mixed_precision=cfg.mixed_precision,
            progress=progress,
            log_every=max(1, steps // 20),
        )
        return train(model, rows, loss_fn, tc, collate_fn=pair_collate(pad_id)).losses


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = x.shape[0] // 2
    return x[:half], x[half:]


def train_reward_model(
    scorer: TokenScorer, tokenizer, pairs: list[dict], objective: str, cfg: RMTrainConfig, progress=True
) -> list[float]:
    """Train in place with L_QRM ("qrm"), BT on the last token ("orm") or PGTG ("pgtg"); the loss curve."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"train_reward_model: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}"
        )
    rows = encode_pairs(tokenizer, pairs, cfg.max_len, cfg.chat_template)

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        z = model(batch["input_ids"], batch["attention_mask"])
        (zw, zl), (mw, ml) = _split(z), _split(batch["response_mask"])
        if objective == "qrm":
            loss = qrm_loss(zw, mw, zl, ml, cfg.beta, cfg.gamma)
        elif objective == "orm":
            loss = orm_loss(last_token_scores(zw, mw), last_token_scores(zl, ml))
        else:
            loss = pgtg_loss(zw, mw, zl, ml)
        return loss, {"loss": loss.item()}

    scorer.train()
    losses = _run(scorer, rows, loss_fn, cfg, tokenizer.pad_token_id, progress)
    scorer.eval()
    return losses


def response_token_scores(
    scorer: TokenScorer, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """[batch, seq] Z at response-token positions, 0 elsewhere (what the RL loop calls on rollouts)."""
    with torch.no_grad():
        z = scorer(input_ids, attention_mask)
    return torch.where(response_mask.bool(), z, torch.zeros_like(z))


def pairwise_margins(
    scorer: TokenScorer,
    tokenizer,
    pairs: list[dict],
    reduce: str = "mean",
    batch_size: int = 16,
    progress: bool = False,
    **encode,
) -> list[float]:
    """reduce(Z_chosen) - reduce(Z_rejected) per pair; reduce "mean" (Q-RM) | "last" (ORM)."""
    if reduce not in REDUCES:
        raise ValueError(f"pairwise accuracy: reduce must be one of {', '.join(REDUCES)}, got {reduce!r}")
    rows, collate = encode_pairs(tokenizer, pairs, **encode), pair_collate(tokenizer.pad_token_id)
    device, margins = next(scorer.parameters()).device, []
    scorer.eval()
    for start in tqdm(range(0, len(rows), batch_size), desc="pairwise", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
        z = response_token_scores(scorer, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        pooled = (masked_mean if reduce == "mean" else last_token_scores)(z, batch["response_mask"])
        chosen, rejected = _split(pooled)
        margins.extend((chosen - rejected).tolist())
    return margins


def pairwise_accuracy(
    scorer: TokenScorer, tokenizer, pairs: list[dict], reduce: str = "mean", batch_size: int = 16, **encode
) -> float:
    """Fraction of pairs with reduce(Z_chosen) > reduce(Z_rejected) (ties count as wrong)."""
    margins = pairwise_margins(scorer, tokenizer, pairs, reduce, batch_size, **encode)
    return sum(m > 0 for m in margins) / len(margins)


class DPORewardModel(nn.Module):
    """DPO-RM: a trainable policy and its frozen copy as reference; token rewards beta * log-ratio."""

    def __init__(self, policy: PreTrainedModel, lora_rank: int | None = None):
        super().__init__()
        self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        self.policy = _lora(policy, lora_rank) if lora_rank is not None else policy

    def train(self, mode: bool = True) -> DPORewardModel:
        super().train(mode)
        self.reference.eval()  # the reference never drops out
        return self

    def token_logprobs(self, model: nn.Module, input_ids, attention_mask, official_shift: bool = False):
        """[batch, seq] log pi(a_t|s_t) at each token a_t (`aligned_token_logprobs`), rows sorted by length
        (`by_length`) except under `official_shift`, whose last position reads past the row."""

        def logprobs(ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
            return aligned_token_logprobs(model(input_ids=ids, attention_mask=am).logits, ids, official_shift)

        return (
            logprobs(input_ids, attention_mask)
            if official_shift
            else by_length(logprobs, input_ids, attention_mask)
        )

    def forward(
        self, input_ids, attention_mask, response_mask, per_token: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs [batch] of the policy and of the reference ([batch, seq] per token,
        0 off the response, with `per_token`)."""
        logp = self.token_logprobs(self.policy, input_ids, attention_mask)
        with torch.no_grad():
            ref = self.token_logprobs(self.reference, input_ids, attention_mask)
        if per_token:
            keep = response_mask.bool()
            return torch.where(keep, logp, torch.zeros_like(logp)), torch.where(
                keep, ref, torch.zeros_like(ref)
            )
        return masked_sum(logp, response_mask), masked_sum(ref, response_mask)

    @torch.no_grad()
    def token_rewards(
        self, input_ids, attention_mask, response_mask, beta: float = 0.1, official_shift: bool = False
    ) -> torch.Tensor:
        """r_t = beta * (log pi_dpo(a_t|s_t) - log pi_ref(a_t|s_t)) on response tokens, 0 elsewhere."""
        logp = self.token_logprobs(self.policy, input_ids, attention_mask, official_shift)
        ref = self.token_logprobs(self.reference, input_ids, attention_mask, official_shift)
        return dpo_token_rewards(logp, ref, response_mask, beta)


def log_ratio_margins(
    model: DPORewardModel, tokenizer, pairs: list[dict], batch_size: int = 16, **encode
) -> list[float]:
    """Per pair, the summed log-ratio log pi - log pi_ref (DPO's implicit reward; for the implicit PRM its
    outcome logit / beta) of the chosen response minus the rejected one; `encode`: `encode_pairs` options."""
    rows, collate = encode_pairs(tokenizer, pairs, **encode), pair_collate(tokenizer.pad_token_id)
    device, margins = next(model.parameters()).device, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
            logp, ref = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
            chosen, rejected = _split(logp - ref)
            margins.extend((chosen - rejected).tolist())
    return margins


def train_dpo_reward_model(
    dpo_rm: DPORewardModel, tokenizer, pairs: list[dict], cfg: RMTrainConfig, progress=True
) -> list[float]:
    """DPO (summed log-probs, beta cfg.dpo_beta) on the pairs; trains the policy in place; the loss curve."""
    rows = encode_pairs(tokenizer, pairs, cfg.max_len, cfg.chat_template)

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        logp, ref = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        (lw, ll), (rw, rl) = _split(logp), _split(ref)
        loss = dpo_loss(lw, ll, rw, rl, cfg.dpo_beta)
        return loss, {"loss": loss.item()}

    dpo_rm.policy.train()
    losses = _run(dpo_rm, rows, loss_fn, cfg, tokenizer.pad_token_id, progress)
    dpo_rm.eval()
    return losses


def train_implicit_prm(
    prm: DPORewardModel, tokenizer, pairs: list[dict], cfg: RMTrainConfig, progress=True
) -> list[float]:
    """Implicit PRM: BCE of beta * (sum log pi - sum log pi_ref) against the outcome label of each response
    (a pair's chosen = 1, rejected = 0; `qrm.implicit_prm_loss`, beta `cfg.implicit_beta`); trains the
    policy in place; the loss curve. Token rewards afterwards: `prm.token_rewards(..., beta)`."""
    rows = encode_pairs(tokenizer, pairs, cfg.max_len, cfg.chat_template)

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        mask = batch["response_mask"]
        logp, ref = model(batch["input_ids"], batch["attention_mask"], mask, per_token=True)
        half = mask.shape[0] // 2
        labels = torch.cat([torch.ones(half), torch.zeros(mask.shape[0] - half)]).to(logp.device)
        loss = implicit_prm_loss(logp, ref, mask, labels, cfg.implicit_beta)
        return loss, {"loss": loss.item()}

    prm.policy.train()
    losses = _run(prm, rows, loss_fn, cfg, tokenizer.pad_token_id, progress)
    prm.eval()
    return losses
