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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.rl import GROUP_ADVANTAGES, Rollout, group_advantages
from papers.lco.lco import beta_eff, lco_loss, sparse_advantages, topk_support

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
