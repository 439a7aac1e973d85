"""Token-level reward models on preference pairs, shared by papers/qrm and papers/lco.

- Maths (pure): `qrm_loss` (qrm spec "Q-RM training loss") and the masked means / sums it uses, DPO's
  loss, `aligned_token_logprobs`, the DPO-RM token reward, the chunk normalisation r = Z / std(Z).
- Data: `encode_pairs` (prompt + response + EOS, the mask on the response and EOS), `pair_collate`.
- Training: `train_pairwise` (Adam via `common.train`, constant lr, no warm-up, no clipping: the Q-RM
  code's regime) with a pair loss; `train_qrm` (L_QRM on any scorer whose forward gives [batch, seq] token
  scores), `train_dpo_reward_model` (DPO vs a frozen reference).
- Models: `CausalLMTokenRM`, a causal LM used as a Q-RM (the later homzer/llama-rlhf variant, lco spec
  section 4: its log-softmax over the vocabulary is log phi(s, a), Z(s_t, a_t) = log phi(s_t, a_t));
  `DPORewardModel` (a trainable policy and its frozen copy). Both give full-vocabulary scores per
  position for the dense top-k advantages (`vocab_logprobs`, `vocab_log_ratio`).
Shapes: scores / log-probs `[batch, seq]`, masks bool `[batch, seq]` on the response tokens; every mask
check is one `ValueError` line. Vocabulary scores `[batch, seq - 1, V]`: position t-1 scores token t.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from common.models import add_lora
from common.rl import by_length
from common.train import TrainConfig, train

REDUCES = ("mean", "last")


def check_mask(z: torch.Tensor, mask: torch.Tensor, where: str, name: str = "mask") -> torch.Tensor:
    """The mask as bool after checking it against z: same 2-D shape, >= 1 response token per row."""
    if z.dim() != 2:
        raise ValueError(f"{where}: scores must be [batch, seq], got shape {tuple(z.shape)}")
    if mask.shape != z.shape:
        raise ValueError(f"{where}: {name} shape {tuple(mask.shape)} != scores shape {tuple(z.shape)}")
    mask = mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{where}: {name} row {int(empty[0])} has no response token")
    return mask


def masked_mean(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch]: mean of z over each row's response tokens (1/N sum_t Z_t of the Q-RM loss)."""
    mask = check_mask(z, mask, "masked_mean")
    return torch.where(mask, z, torch.zeros_like(z)).sum(dim=1) / mask.sum(dim=1)


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch]: sum of x over each row's response tokens (DPO's sequence log-prob)."""
    mask = check_mask(x, mask, "masked_sum")
    return torch.where(mask, x, torch.zeros_like(x)).sum(dim=1)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """[batch]: position of each row's last response token."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def last_token_scores(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch]: the score at each row's last response token (an ORM's sequence score S)."""
    mask = check_mask(z, mask, "last_token_scores")
    return z.gather(1, last_index(mask)[:, None]).squeeze(1)


def qrm_loss(
    z_chosen: torch.Tensor,
    mask_chosen: torch.Tensor,
    z_rejected: torch.Tensor,
    mask_rejected: torch.Tensor,
    beta: float = 0.2,
    gamma: float = 2.0,
) -> torch.Tensor:
    """L_QRM = mean over pairs of -log sigma(beta * (mean_w Z - mean_l Z) - gamma) (qrm spec, "Q-RM training loss").

    = softplus(gamma - beta * Delta), Delta = mean over the chosen response tokens of Z minus the same
    over the rejected ones. beta 0.2 and gamma 2.0 are the Q-RM paper's (scripts/train-q-rm.sh) and the
    later framework's QRMLoss defaults.
    """
    if z_chosen.shape[0] != z_rejected.shape[0]:
        raise ValueError(f"qrm_loss: {z_chosen.shape[0]} chosen rows but {z_rejected.shape[0]} rejected")
    check_mask(z_chosen, mask_chosen, "qrm_loss", "mask_chosen")
    check_mask(z_rejected, mask_rejected, "qrm_loss", "mask_rejected")
    delta = masked_mean(z_chosen, mask_chosen) - masked_mean(z_rejected, mask_rejected)
    return F.softplus(gamma - beta * delta).mean()


def normalize_token_rewards(z: torch.Tensor, mask: torch.Tensor, sub_mean: bool = False) -> torch.Tensor:
    """r = Z / std(Z over every response token of the chunk); 0 at unmasked positions (qrm spec invariant 7).

    Q-RM code default (RolloutBuffer, reward_sub_mean=False); `sub_mean=True` is the Q-RM paper's standardisation
    (Z - mean) / std. std is the population std (np.std).
    """
    mask = check_mask(z, mask, "normalize_token_rewards")
    values = z[mask]
    std = values.std(unbiased=False) if values.numel() > 1 else values.new_zeros(())
    if not std > 0:
        raise ValueError("normalize_token_rewards: the response-token scores have zero spread (std 0)")
    centred = values - values.mean() if sub_mean else values
    out = torch.zeros_like(z)
    out[mask] = centred / std
    return out


def aligned_token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, official_shift: bool = False
) -> torch.Tensor:
    """[batch, seq]: out[:, t] = log pi(a_t | s_t) = log_softmax(logits[:, t-1])[a_t]; out[:, 0] = 0.

    `official_shift=True` reproduces the Q-RM repo's VerifierForDPO: out[:, t] = log-prob of a_{t+1}
    (read from logits[:, t]), the last position gets the log-prob of token id 0 (its pad): one token early.
    """
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"aligned_token_logprobs: logits {tuple(logits.shape)} do not fit input_ids {tuple(input_ids.shape)}"
        )
    low_precision = logits.dtype in (torch.float16, torch.bfloat16)
    logp = torch.log_softmax(logits.float() if low_precision else logits, dim=-1)
    nxt = logp[:, :-1].gather(2, input_ids[:, 1:, None]).squeeze(2)  # log pi(a_{t+1} | s_{t+1})
    if official_shift:
        last = logp[:, -1, 0]
        return torch.cat([nxt, last[:, None]], dim=1)
    return torch.cat([torch.zeros_like(nxt[:, :1]), nxt], dim=1)


def dpo_token_rewards(
    logp_dpo: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """DPO-RM token reward r_t = beta * (log pi_dpo(a_t|s_t) - log pi_ref(a_t|s_t)) on response tokens."""
    mask = check_mask(logp_dpo, mask, "dpo_token_rewards")
    if logp_ref.shape != logp_dpo.shape:
        raise ValueError("dpo_token_rewards: logp_dpo and logp_ref shapes differ")
    return torch.where(mask, beta * (logp_dpo - logp_ref), torch.zeros_like(logp_dpo))


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO on SUMMED response log-probs ([batch] each): mean -log sigma(beta * (ratio_w - ratio_l))."""
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return F.softplus(-beta * margin).mean()


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


def split_pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) halves of a `pair_collate` batch's rows."""
    half = x.shape[0] // 2
    return x[:half], x[half:]


def unscaled_lora(model: nn.Module, rank: int) -> nn.Module:
    """LoRA on every linear layer with scaling 1 (alpha = r) and a zero-initialised B: the Q-RM code's."""
    return add_lora(model, r=rank, alpha=rank, target_modules="all-linear", task_type=None)


@dataclass
class RMTrainConfig:
    """Reward-model training; defaults are the Q-RM paper's (scripts/train-q-rm.sh, train-dpo-rm.sh)."""

    output_dir: str | None = None  # common.train checkpoints / final weights; None: a temporary folder
    lr: float = 1e-5  # Q-RM spec: Adam lr 1e-5 (DPO-RM: 1e-6)
    batch_size: int = 2  # Q-RM spec: 2 pairs per step
    epochs: int = 1  # Q-RM spec: 1 epoch
    max_steps: int | None = None  # None: `epochs` passes over the pairs
    max_len: int = 1024  # Q-RM spec: max_seq_len 1024
    beta: float = 0.2  # Q-RM spec: Q-RM beta
    gamma: float = 2.0  # Q-RM spec: Q-RM gamma
    dpo_beta: float = 0.1  # Q-RM spec: DPO-RM beta
    implicit_beta: float = 1.0  # Q-RM code: ImplicitPRMLoss never applies its beta
    chat_template: bool = False  # the prompt wrapped in the chat template (real tasks: True)
    seed: int = 1  # the Q-RM code's default seed
    mixed_precision: str = "auto"  # spec: bf16 (auto = bf16 on CUDA, fp32 on CPU)


def train_pairwise(
    model: nn.Module, tokenizer, pairs: list[dict], loss_fn, cfg: RMTrainConfig, progress: bool = True
) -> list[float]:
    """`loss_fn(model, batch) -> (loss, logs)` over `pair_collate` batches of the encoded pairs; the loss
    curve. Adam (common.train's AdamW with weight decay 0), constant lr, no warm-up, no clipping."""
    rows = encode_pairs(tokenizer, pairs, cfg.max_len, cfg.chat_template)
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
        return train(model, rows, loss_fn, tc, collate_fn=pair_collate(tokenizer.pad_token_id)).losses


def qrm_pair_loss(cfg: RMTrainConfig):
    """loss_fn for `train_pairwise`: L_QRM (beta, gamma of cfg) on the model's [batch, seq] token scores."""

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        z = model(batch["input_ids"], batch["attention_mask"])
        (zw, zl), (mw, ml) = split_pairs(z), split_pairs(batch["response_mask"])
        loss = qrm_loss(zw, mw, zl, ml, cfg.beta, cfg.gamma)
        return loss, {"loss": loss.item()}

    return loss_fn


def train_qrm(
    scorer: nn.Module, tokenizer, pairs: list[dict], cfg: RMTrainConfig, progress=True
) -> list[float]:
    """Train a token scorer (forward(input_ids, attention_mask) -> [batch, seq]) in place with L_QRM."""
    scorer.train()
    losses = train_pairwise(scorer, tokenizer, pairs, qrm_pair_loss(cfg), cfg, progress)
    scorer.eval()
    return losses


def response_token_scores(
    scorer: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """[batch, seq] Z at response-token positions, 0 elsewhere (what an RL loop calls on rollouts)."""
    with torch.no_grad():
        z = scorer(input_ids, attention_mask)
    return torch.where(response_mask.bool(), z, torch.zeros_like(z))


def pairwise_margins(
    scorer: nn.Module,
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
        chosen, rejected = split_pairs(pooled)
        margins.extend((chosen - rejected).tolist())
    return margins


def pairwise_accuracy(
    scorer: nn.Module, tokenizer, pairs: list[dict], reduce: str = "mean", batch_size: int = 16, **encode
) -> float:
    """Fraction of pairs with reduce(Z_chosen) > reduce(Z_rejected) (ties count as wrong)."""
    margins = pairwise_margins(scorer, tokenizer, pairs, reduce, batch_size, **encode)
    return sum(m > 0 for m in margins) / len(margins)


def _token_logprobs(model: nn.Module, input_ids, attention_mask, official_shift: bool = False):
    """[batch, seq] log pi(a_t|s_t) of a causal LM (`aligned_token_logprobs`), rows sorted by length
    (`by_length`) except under `official_shift`, whose last position reads past the row."""

    def logprobs(ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        return aligned_token_logprobs(model(input_ids=ids, attention_mask=am).logits, ids, official_shift)

    if official_shift:
        return logprobs(input_ids, attention_mask)
    return by_length(logprobs, input_ids, attention_mask)


def _vocab_logprobs(model: nn.Module, input_ids, attention_mask) -> torch.Tensor:
    """[batch, seq - 1, V] log-softmax of a causal LM (fp16 / bf16 upcast to float32); position t-1 scores
    the token at t."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    return torch.log_softmax(
        logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, -1
    )


class CausalLMTokenRM(nn.Module):
    """A causal LM as a Q-RM (lco spec section 4, llama-rlhf's verifier_train_pairwise_qrm): Z(s_t, a_t) =
    log phi(s_t, a_t) = the LM's log-softmax at a_t, so `forward` gives [batch, seq] token scores (0 at
    position 0) for `train_qrm`, and `vocab_logprobs` log phi over the whole vocabulary."""

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _token_logprobs(self.lm, input_ids, attention_mask)

    @torch.no_grad()
    def vocab_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq - 1, V] log phi(s, .) at every position."""
        return _vocab_logprobs(self.lm, input_ids, attention_mask)


class DPORewardModel(nn.Module):
    """DPO-RM: a trainable policy and its frozen copy as reference; token rewards beta * log-ratio.
    `reference`: a separately loaded reference (e.g. a trained DPO-RM's policy and its start, from disk)."""

    def __init__(
        self, policy: PreTrainedModel, lora_rank: int | None = None, reference: PreTrainedModel | None = None
    ):
        super().__init__()
        self.reference = (reference or copy.deepcopy(policy)).eval().requires_grad_(False)
        self.policy = unscaled_lora(policy, lora_rank) if lora_rank is not None else policy

    def train(self, mode: bool = True) -> DPORewardModel:
        super().train(mode)
        self.reference.eval()  # the reference never drops out
        return self

    def token_logprobs(self, model: nn.Module, input_ids, attention_mask, official_shift: bool = False):
        """[batch, seq] log pi(a_t|s_t) at each token a_t of `model` (the policy or the reference)."""
        return _token_logprobs(model, input_ids, attention_mask, official_shift)

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

    @torch.no_grad()
    def vocab_log_ratio(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq - 1, V] log pi_dpo(a|s) - log pi_ref(a|s) for every token a (lco's DPO-RM source)."""
        logp = _vocab_logprobs(self.policy, input_ids, attention_mask)
        return logp - _vocab_logprobs(self.reference, input_ids, attention_mask)


def log_ratio_margins(
    model: DPORewardModel, tokenizer, pairs: list[dict], batch_size: int = 16, **encode
) -> list[float]:
    """Per pair, the summed log-ratio log pi - log pi_ref (DPO's implicit reward; for an implicit PRM its
    outcome logit / beta) of the chosen response minus the rejected one; `encode`: `encode_pairs` options."""
    rows, collate = encode_pairs(tokenizer, pairs, **encode), pair_collate(tokenizer.pad_token_id)
    device, margins = next(model.parameters()).device, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
            logp, ref = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
            chosen, rejected = split_pairs(logp - ref)
            margins.extend((chosen - rejected).tolist())
    return margins


def train_dpo_reward_model(
    dpo_rm: DPORewardModel, tokenizer, pairs: list[dict], cfg: RMTrainConfig, progress=True
) -> list[float]:
    """DPO (summed log-probs, beta cfg.dpo_beta) on the pairs; trains the policy in place; the loss curve."""

    def loss_fn(model: nn.Module, batch: dict[str, Any]):
        logp, ref = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        (lw, ll), (rw, rl) = split_pairs(logp), split_pairs(ref)
        loss = dpo_loss(lw, ll, rw, rl, cfg.dpo_beta)
        return loss, {"loss": loss.item()}

    dpo_rm.policy.train()
    losses = train_pairwise(dpo_rm, tokenizer, pairs, loss_fn, cfg, progress)
    dpo_rm.eval()
    return losses
