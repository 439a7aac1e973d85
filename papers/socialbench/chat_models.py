"""The models SocialBench queries: local HF/vLLM chat models, OpenAI-compatible endpoints, fixed policies.

Each is an `Answerer`: `answer(items) -> list[ChatReply]`, one reply per item, plus `settings()` (recorded next
to the outputs; a resumed run must have the same settings). Every query is zero-shot, one user turn
holding the official prompt (spec "Evaluation algorithm", step 3); a system prompt is added only when
asked for (the paper's is UNCONFIRMED; the model's chat template may add its own default).

- `LocalChatModel`: any `common.generation.Generator` (HF or vLLM) with the tokenizer's chat template.
- `EndpointModel`: a chat-completions endpoint through `common.chat.ChatClient`: an API model, or a
  `vllm serve` server. The openai client retries; a call that still fails comes back as
  `ChatReply(text="", error=...)`, which the evaluator records as failed and never scores.
- `PolicyModel`: a fixed answering rule (oracle, always "A", a random letter): the evaluator's acceptance test.

`make_model(spec, ...)` builds any of them from one string; the CLI and the recipe both use it.
"""

from __future__ import annotations

import logging
import random
from typing import Protocol

from common.chat import ChatClient, ChatReply, messages_for, parse_model_spec
from common.generation import SamplingParams, make_generator
from common.models import resolve
from papers.socialbench.prompts import build_prompt

log = logging.getLogger(__name__)


class Answerer(Protocol):
    name: str

    def settings(self) -> dict: ...

    def answer(self, items: list[dict]) -> list[ChatReply]: ...


class LocalChatModel:
    """A local chat model behind a `Generator`, greedy by default; prompts go through the chat template.

    Prompts longer than `max_prompt_tokens` are cut from the left of the user turn (spec "Setup": memory
    items reach ~6k tokens); the chat template's head is kept.
    """

    def __init__(
        self,
        generator,
        tokenizer,
        name: str,
        max_tokens: int = 512,
        temperature: float = 0.0,
        system_prompt: str | None = None,
        max_prompt_tokens: int | None = None,
        seed: int = 0,
    ):
        self.generator, self.tokenizer, self.name = generator, tokenizer, name
        self.params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
        self.system_prompt = system_prompt
        self.max_prompt_tokens = max_prompt_tokens
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        if not self.has_template:
            log.warning("%s has no chat template; prompts are sent as plain text", name)
        self.truncated = 0

    def settings(self) -> dict:
        return {
            "kind": "local",
            "model": self.name,
            "generator": type(self.generator).__name__,
            "sampling": self.params.as_dict(),
            "system_prompt": self.system_prompt,
            "chat_template": self.has_template,
            "max_prompt_tokens": self.max_prompt_tokens,
        }

    def _render(self, prompt: str) -> str:
        if not self.has_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            messages_for(prompt, self.system_prompt), tokenize=False, add_generation_prompt=True
        )

    def encode(self, prompt: str) -> list[int]:
        """Token ids of the chat-templated prompt (the template supplies any BOS), cut to the budget."""
        ids = self.tokenizer(self._render(prompt), add_special_tokens=not self.has_template)["input_ids"]
        budget = self.max_prompt_tokens
        if budget is None or len(ids) <= budget:
            return ids
        self.truncated += 1
        empty = self.tokenizer(self._render(""), add_special_tokens=not self.has_template)["input_ids"]
        head = 0
        while head < min(len(empty), len(ids)) and empty[head] == ids[head]:
            head += 1
        head = min(head, budget // 2)
        return ids[:head] + ids[len(ids) - (budget - head) :]

    def answer(self, items: list[dict]) -> list[ChatReply]:
        if not items:
            return []
        completions = self.generator.generate([self.encode(build_prompt(it)) for it in items], self.params)
        # verbatim (official): a whitespace-only memory reply scores 0; only an empty one is undefined
        return [ChatReply(c.text, finish_reason=c.finish_reason) for c in completions]


def local_chat_model(
    name_or_path: str, backend: str = "auto", engine: dict | None = None, **kwargs
) -> LocalChatModel:
    """A `LocalChatModel` for a short name, local folder or hub id, on the HF or vLLM backend.

    `engine`: keyword arguments of the generator (vLLM engine arguments, or the HF batch size).
    """
    path = resolve(name_or_path)
    generator = make_generator(path, tokenizer=path, backend=backend, **(engine or {}))
    if kwargs.get("max_prompt_tokens") is None:  # default: whatever fits the context with the reply
        context = context_length(generator)
        if context is not None:
            kwargs["max_prompt_tokens"] = context - kwargs.get("max_tokens", 512)
    return LocalChatModel(generator, generator.tokenizer, name=str(name_or_path), **kwargs)


def context_length(generator) -> int | None:
    """Tokens the generator's model takes (vLLM's max_model_len, or the HF config's positions)."""
    try:
        if hasattr(generator, "llm"):
            return int(generator.llm.llm_engine.model_config.max_model_len)
        return int(generator.model.config.max_position_embeddings)
    except (AttributeError, TypeError):
        return None


class EndpointModel:
    """An OpenAI-compatible endpoint (`common.chat.ChatClient`: the openai client's own retries, bounded
    concurrency, a per-request timeout) answering SocialBench items; failed calls keep `.error`."""

    def __init__(self, client: ChatClient):
        self.client = client

    @property
    def name(self) -> str:
        return self.client.name

    def settings(self) -> dict:
        """What the outputs depend on; the timeout and retries do not, so changing them still resumes."""
        operational = ("timeout_s", "max_retries", "backoff_s")
        return {k: v for k, v in self.client.settings().items() if k not in operational}

    def answer(self, items: list[dict]) -> list[ChatReply]:
        replies = self.client.chat_many([build_prompt(it) for it in items])
        return [
            ChatReply(r.text, r.error, r.finish_reason) for r in replies
        ]  # verbatim, as the local model's


def make_model(
    spec: str,
    *,
    backend: str = "auto",
    engine: dict | None = None,
    max_tokens: int = 512,
    temperature: float = 0.0,
    system_prompt: str | None = None,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    served_model_name: str | None = None,
    timeout_s: float = 120.0,
    max_retries: int = 5,
    backoff_s: float = 0.5,
    concurrency: int = 8,
) -> Answerer:
    """A model spec -> an `Answerer`: `policy:<p>`, `http(s)://host/v1[#model]`, `openai:<model>`, or a
    local chat model (short name, folder, hub id). The CLI and the pipeline both build models here."""
    if spec.startswith("policy:"):
        return PolicyModel(spec.split(":", 1)[1], seed=seed)
    decoding = dict(max_tokens=max_tokens, temperature=temperature, system_prompt=system_prompt, seed=seed)
    if spec.startswith(("http://", "https://", "openai:")):
        base_url, model = parse_model_spec(spec)
        client = ChatClient(
            base_url,
            served_model_name or model,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            concurrency=concurrency,
            **decoding,
        )
        return EndpointModel(client)
    return local_chat_model(
        spec, backend=backend, engine=engine, max_prompt_tokens=max_prompt_tokens, **decoding
    )


POLICIES = ("oracle", "always-A", "random-letter")


class PolicyModel:
    """A fixed rule: "oracle" (gold letters joined by ",", or the keywords), "always-A", "random-letter".

    "random-letter" draws one letter uniformly among the item's options, from a generator seeded by
    (seed, item id), so a resumed run draws the same letters. Memory items get the keywords (oracle) or
    an empty reply (the other two: undefined, as a model that says nothing).
    """

    def __init__(self, policy: str, seed: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
        self.policy, self.seed, self.name = policy, seed, policy

    def settings(self) -> dict:
        return {"kind": "policy", "policy": self.policy, "seed": self.seed}

    def _one(self, item: dict) -> str:
        choices = item.get("choices")
        if not choices:
            return " ".join(item["label"]) if self.policy == "oracle" else ""
        if self.policy == "oracle":
            return ",".join(item["label"])
        if self.policy == "always-A":
            return "A"
        return random.Random(f"{self.seed}:{item['id']}").choice(list(choices))

    def answer(self, items: list[dict]) -> list[ChatReply]:
        return [ChatReply(self._one(it)) for it in items]
