"""What `common.rl_loop.run_rl` needs for LCO's arms: the verifier reward, the LCO actor loss, PPO's critic.

- `verifier_reward`: the rule verifier's +1 / -1 per response (spec section 4), turned into token rewards:
  "grpo" / "rloo" / "dr_grpo" group advantages broadcast to every response token (the sparse case; the
  gate's), "raw" the +1 / -1 itself on every token (the code's LCO scripts), "terminal" +1 / -1 on the last
  response token only (PPO's GAE input).
- `LCOPolicyLoss` (a `common.rl_loop.PolicyLoss`): records the old policy's logits once per chunk (all of
  them, or the code's top-k), then per minibatch builds the sparse advantage at each sampled token and
  returns `lco_loss` averaged over every response token of the minibatch (the code's normalisation;
  `loss_norm` does not apply). Position alignment: logits at position t-1 predict input_ids[:, t], the
  token whose advantage sits at position t of `advantages` (run_rl's convention).
- `ValueCritic`: a scalar head on a copy of the policy's backbone (ours; the framework's critic is a
  separate model), for the PPO arm.
- Dense sources (spec sections 4 and 6), `DenseSource`: the reward model's scores over the whole vocabulary
  at every response position, Q-RM: log phi(s, .) of a `common.token_rm.CausalLMTokenRM`; DPO-RM: log
  pi_dpo(.|s) - log pi_ref(.|s) of a `common.token_rm.DPORewardModel`. `DenseLCOPolicyLoss` turns them into
  LCO-KLD's advantages on k tokens (`topk_advantages`: the RM's own top-k for Q-RM, the old policy's top-k
  for DPO-RM, divided by their std over the k, the rest unsupported) with the old policy's logits on that
  support; `dense_reward` gives the score of each sampled token, / std over the chunk's response tokens
  (the Q-RM code's buffer, `common.token_rm.normalize_token_rewards`), as PPO's token reward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.rl import GROUP_ADVANTAGES, Rollout, group_advantages
from common.token_rm import CausalLMTokenRM, DPORewardModel, normalize_token_rewards
from papers.lco.lco import beta_eff, lco_loss, sparse_advantages, topk_advantages, topk_support

OLD_FILL = -100.0  # the code's fill for the non-top-k old logits


def verifier_reward(
    tokenizer, prompts: list[str], answers: list[str], is_correct: Callable[[str, str], bool], kind: str
) -> Callable[[Rollout], torch.Tensor]:
    """reward_fn for run_rl (module doc); logs the fraction correct as `correct`."""
    if kind not in (*GROUP_ADVANTAGES, "raw", "terminal"):
        raise ValueError(
            f"verifier_reward: kind {kind!r}; valid: {', '.join(GROUP_ADVANTAGES)}, raw, terminal"
        )
    by_prompt = {tuple(tokenizer(p)["input_ids"]): a for p, a in zip(prompts, answers)}

    def reward(ro: Rollout) -> torch.Tensor:
        ok = torch.tensor(
            [float(is_correct(t, by_prompt[tuple(p)])) for t, p in zip(ro.texts, ro.prompt_ids)]
        )
        ro.metrics["correct"] = float(ok.mean())
        signed = 2 * ok - 1
        mask = ro.response_mask.float()
        if kind == "terminal":
            last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
            return torch.zeros_like(mask).scatter(1, last[:, None], signed[:, None].float())
        score = signed if kind == "raw" else group_advantages(signed, ro.prompt_index, kind)
        return score[:, None].float() * mask

    return reward


def _logits(policy: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, S-1, V] float logits; position t-1 scores the token input_ids[:, t]."""
    return policy(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()


class LCOPolicyLoss:
    """LCO-KLD / -MSE / -LCH with the sparse verifier advantage (module doc)."""

    def __init__(
        self,
        variant: str,
        beta: float,
        negative_beta_scale: float = 1.0,
        anchor: str = "old",
        logits_topk: int | None = None,
        forward_batch_size: int | None = None,
    ):
        if variant not in ("kld", "mse", "lch"):
            raise ValueError(f"LCOPolicyLoss: unknown variant {variant!r}; valid: kld, mse, lch")
        self.variant, self.beta, self.negative_beta_scale = variant, beta, negative_beta_scale
        self.anchor, self.topk, self.batch = anchor, logits_topk, forward_batch_size
        self.old: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def prepare(self, policy: nn.Module, ro: Rollout) -> None:
        """Record pi_old's logits: the sampled token's (MSE / LCH anchor), and for KLD all (or the top-k)."""
        step = self.batch or len(ro)
        parts: dict[str, list[torch.Tensor]] = {"token": [], "values": [], "indices": []}
        for s in range(0, len(ro), step):
            ids = ro.input_ids[s : s + step]
            logits = _logits(policy, ids, ro.attention_mask[s : s + step])
            parts["token"].append(logits.gather(-1, ids[:, 1:, None])[..., 0])
            if self.variant == "kld":
                if self.topk is None:
                    parts["values"].append(logits)
                else:
                    top = logits.topk(self.topk, dim=-1)
                    parts["values"].append(top.values.half())  # the code stores fp16 top-k
                    parts["indices"].append(top.indices)
        self.old = {k: torch.cat(v) for k, v in parts.items() if v}

    def _old_logits(self, idx: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(old logits [b, S-1, V], support or None) for the minibatch rows `idx`."""
        if self.topk is None:
            return self.old["values"][idx], None
        full = torch.full_like(like, OLD_FILL)
        full = full.scatter(-1, self.old["indices"][idx], self.old["values"][idx].float())
        return full, topk_support(full, self.topk)

    def __call__(
        self, policy: nn.Module, ro: Rollout, idx: torch.Tensor, advantages: torch.Tensor
    ) -> torch.Tensor:
        if not self.old:
            raise RuntimeError("LCOPolicyLoss: prepare(policy, rollout) must run before the loss")
        ids = ro.input_ids[idx]
        logits = _logits(policy, ids, ro.attention_mask[idx])
        tokens, mask, adv = ids[:, 1:], ro.response_mask[idx, 1:], advantages[:, 1:].float()
        vocab_adv = sparse_advantages(tokens, adv, logits.shape[-1])
        beta = beta_eff(adv, self.beta, self.negative_beta_scale)
        if self.variant == "kld":
            old, support = self._old_logits(idx.to(ids.device), logits)
            return lco_loss("kld", logits, old, vocab_adv, beta, mask, support=support)
        known = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, tokens[..., None], True)
        old = torch.zeros_like(logits).scatter(-1, tokens[..., None], self.old["token"][idx][..., None])
        return lco_loss(self.variant, logits, old, vocab_adv, beta, mask, known=known, anchor=self.anchor)


class ValueCritic(nn.Module):
    """V(s) at every position: a zero-initialised linear head on a causal LM's last hidden state."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.head(out.hidden_states[-1].to(self.head.weight.dtype)).squeeze(-1)


DENSE_KINDS = ("qrm", "dpo")


class DenseSource:
    """A trained Q-RM ("qrm", a `CausalLMTokenRM`) or DPO-RM ("dpo", a `DPORewardModel`) scoring every
    token of the vocabulary at each position of a rollout (module doc), `batch` rows at a time. The scores
    of the last rollout are kept, so the policy loss and the reward share one forward."""

    def __init__(self, kind: str, model: CausalLMTokenRM | DPORewardModel, batch: int | None = None):
        if kind not in DENSE_KINDS:
            raise ValueError(f"DenseSource: unknown kind {kind!r}; valid: {', '.join(DENSE_KINDS)}")
        self.kind, self.model, self.batch = kind, model.eval(), batch
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (input_ids, scores), by identity

    @torch.no_grad()
    def vocab_scores(self, ro: Rollout) -> torch.Tensor:
        """[B, S-1, V]: position t-1 scores every candidate for the token at t."""
        if self._last is not None and self._last[0] is ro.input_ids:
            return self._last[1]
        fn = self.model.vocab_logprobs if self.kind == "qrm" else self.model.vocab_log_ratio
        step = self.batch or len(ro)
        scores = torch.cat(
            [fn(ro.input_ids[s : s + step], ro.attention_mask[s : s + step]) for s in range(0, len(ro), step)]
        )
        self._last = (ro.input_ids, scores)
        return scores

    def sampled_scores(self, ro: Rollout) -> torch.Tensor:
        """[B, S]: the score of each sampled response token at its own position, 0 elsewhere."""
        picked = self.vocab_scores(ro).gather(-1, ro.input_ids[:, 1:, None])[..., 0]
        z = torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)
        return torch.where(ro.response_mask, z, torch.zeros_like(z))


def dense_reward(
    source: DenseSource,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    is_correct: Callable[[str, str], bool],
    sub_mean: bool = False,
) -> Callable[[Rollout], torch.Tensor]:
    """reward_fn for run_rl: the sampled tokens' scores / their std over the chunk (`sub_mean`: centred
    first, the Q-RM paper's standardisation); logs the verifier's fraction correct (not trained on) as
    `correct` and the mean raw score as `reward_raw`."""
    by_prompt = {tuple(tokenizer(p)["input_ids"]): a for p, a in zip(prompts, answers)}

    def reward(ro: Rollout) -> torch.Tensor:
        ok = [float(is_correct(t, by_prompt[tuple(p)])) for t, p in zip(ro.texts, ro.prompt_ids)]
        z = source.sampled_scores(ro)
        ro.metrics["correct"] = sum(ok) / len(ok)
        ro.metrics["reward_raw"] = float(z[ro.response_mask].mean())
        return normalize_token_rewards(z, ro.response_mask, sub_mean)

    return reward


class DenseLCOPolicyLoss(LCOPolicyLoss):
    """LCO-KLD with a dense source's advantages on k tokens per position (module doc); the `advantages`
    run_rl passes (the reward_fn's) are not used."""

    def __init__(self, source: DenseSource, beta: float, k: int = 5, forward_batch_size: int | None = None):
        super().__init__("kld", beta, forward_batch_size=forward_batch_size)
        self.source, self.k = source, k

    @torch.no_grad()
    def prepare(self, policy: nn.Module, ro: Rollout) -> None:
        super().prepare(policy, ro)  # the full old logits
        scores = self.source.vocab_scores(ro)
        rank_by = scores if self.source.kind == "qrm" else self.old["values"]
        adv, support = topk_advantages(scores, rank_by, self.k)
        self.old |= {"adv": adv, "support": support}

    def __call__(
        self, policy: nn.Module, ro: Rollout, idx: torch.Tensor, advantages: torch.Tensor
    ) -> torch.Tensor:
        if "adv" not in self.old:
            raise RuntimeError("DenseLCOPolicyLoss: prepare(policy, rollout) must run before the loss")
        ids = ro.input_ids[idx]
        logits = _logits(policy, ids, ro.attention_mask[idx])
        mask, old = ro.response_mask[idx, 1:], self.old["values"][idx]
        return lco_loss(
            "kld", logits, old, self.old["adv"][idx], self.beta, mask, support=self.old["support"][idx]
        )
