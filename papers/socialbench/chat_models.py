"""The models SocialBench queries: local HF/vLLM chat models, OpenAI-compatible endpoints, fixed policies.

Each is an `Answerer`: `answer(items) -> list[Reply]`, one reply per item, plus `settings()` (recorded next
to the outputs; a resumed run must have the same settings). Every query is zero-shot, one user turn
holding the official prompt (spec "Evaluation algorithm", step 3); a system prompt is added only when
asked for (the paper's is UNCONFIRMED; the model's chat template may add its own default).

- `LocalChatModel`: any `common.generation.Generator` (HF or vLLM) with the tokenizer's chat template.
- `OpenAIChatModel`: a chat-completions endpoint through the `openai` client: an API model, or a
  `vllm serve` server. Each call is retried with exponential backoff; a call that still fails comes back
  as `Reply(text="", error=...)`, which the evaluator records as failed and never scores.
- `PolicyModel`: a fixed answering rule (oracle, always "A", a random letter): the evaluator's acceptance test.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from common.generation import SamplingParams
from papers.socialbench.prompts import build_prompt


@dataclass
class Reply:
    text: str
    error: str | None = None
    """Why the call failed after every retry; None for a successful call (even an empty reply)."""
    attempts: int = 1


class Answerer(Protocol):
    name: str

    def settings(self) -> dict: ...

    def answer(self, items: list[dict]) -> list[Reply]: ...


def chat_messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": prompt}]


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
            print(f"warning: {name} has no chat template; prompts are sent as plain text", file=sys.stderr)
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
            chat_messages(prompt, self.system_prompt), tokenize=False, add_generation_prompt=True
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

    def answer(self, items: list[dict]) -> list[Reply]:
        if not items:
            return []
        completions = self.generator.generate([self.encode(build_prompt(it)) for it in items], self.params)
        return [Reply(c.text.strip()) for c in completions]


def local_chat_model(
    name_or_path: str, backend: str = "auto", engine: dict | None = None, **kwargs
) -> LocalChatModel:
    """A `LocalChatModel` for a short name, local folder or hub id, on the HF or vLLM backend.

    `engine`: keyword arguments of the generator (vLLM engine arguments, or the HF batch size).
    """
    from common.generation import make_generator
    from common.models import resolve

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


# HTTP statuses worth retrying: timeouts, conflicts, rate limits and server errors.
RETRYABLE_STATUS = {408, 409, 429} | set(range(500, 600))


class OpenAIChatModel:
    """An OpenAI-compatible chat endpoint; `base_url=None` means the OpenAI API ($OPENAI_BASE_URL)."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        system_prompt: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        concurrency: int = 8,
        seed: int | None = 0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        import openai

        self._openai = openai
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # a local server takes any key
        # Our own retry loop (below), so that the backoff is explicit and every attempt is counted.
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0)
        self.base_url, self.model = base_url, model
        self.max_tokens, self.temperature, self.system_prompt = max_tokens, temperature, system_prompt
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.concurrency, self.seed, self.sleep = concurrency, seed, sleep
        self.name = model or base_url or "openai"

    def settings(self) -> dict:
        return {
            "kind": "endpoint",
            "base_url": self.base_url,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "system_prompt": self.system_prompt,
        }

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based): exponential, capped."""
        return min(self.max_backoff_s, self.backoff_s * 2**attempt)

    def served_model(self) -> str:
        """The model name to send: the one given, else the first one the server lists."""
        if self.model is None:
            self.model = self.client.models.list().data[0].id
            self.name = self.model
        return self.model

    def _retryable(self, err: Exception) -> bool:
        if isinstance(err, self._openai.APIStatusError):
            return err.status_code in RETRYABLE_STATUS
        return isinstance(err, self._openai.APIConnectionError | self._openai.APITimeoutError)

    def chat(self, prompt: str) -> Reply:
        """One chat completion with retries; never raises for a server problem."""
        messages = chat_messages(prompt, self.system_prompt)
        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.served_model(),
                    messages=messages,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    seed=self.seed,
                )
                content = response.choices[0].message.content if response.choices else None
                return Reply((content or "").strip(), attempts=attempt + 1)
            except self._openai.OpenAIError as err:
                error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
                if not self._retryable(err):
                    return Reply("", error=error, attempts=attempt + 1)
            if attempt < self.max_retries:
                self.sleep(self.backoff(attempt))
        return Reply("", error=error, attempts=self.max_retries + 1)

    def answer(self, items: list[dict]) -> list[Reply]:
        prompts = [build_prompt(it) for it in items]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self.chat, prompts))


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

    def answer(self, items: list[dict]) -> list[Reply]:
        return [Reply(self._one(it)) for it in items]
