"""One client for OpenAI-compatible chat endpoints (the OpenAI API, a vLLM server, any compatible one).

    client = ChatClient("http://127.0.0.1:8000/v1", model=None, max_tokens=256, concurrency=16)
    replies = client.chat_many(["What is 2+3?", ...])      # order kept; a failed call has .error set
    texts = [r.text for r in replies if r.ok]               # failures are recorded, never scored

Retries are the `openai` client's own (`max_retries`: exponential backoff with jitter, honouring
`Retry-After`, on connection errors, 408/409/429 and 5xx), its first wait `backoff_s` (openai's 0.5 s,
doubled per retry up to 16x, less <= 25 % jitter); each request has a timeout (`timeout_s`);
at most `concurrency` requests are in flight. A call that still fails returns a `ChatReply` with
`error` set instead of raising, so one bad item never ends a run of thousands. A model spec
`openai:<name>` means the OpenAI API (`$OPENAI_BASE_URL` / `$OPENAI_API_KEY`) with that model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

from tqdm.auto import tqdm

Messages = list[dict]
OPENAI_FIRST_WAIT_S = 0.5  # the openai client's first backoff (INITIAL_RETRY_DELAY); backoff_s scales it


@dataclass(frozen=True)
class ChatReply:
    text: str
    error: str | None = None  # set when the call failed after every retry (the text is then "")
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def messages_for(prompt: str | Messages, system_prompt: str | None = None) -> Messages:
    """A user prompt (or a ready message list) as chat messages, with an optional system prompt."""
    if not isinstance(prompt, str):
        return list(prompt)
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*head, {"role": "user", "content": prompt}]


def parse_model_spec(spec: str) -> tuple[str | None, str | None]:
    """`openai:<model>` -> (None: the OpenAI API, model); `http(s)://host/v1[#model]` -> (url, model|None)
    (no model: the first one the server lists). Anything else raises `ValueError`."""
    if spec.startswith("openai:"):
        model = spec.split(":", 1)[1]
        if not model:
            raise ValueError(f"model spec {spec!r}: name the model, e.g. openai:gpt-4o-mini")
        return None, model
    if not spec.startswith(("http://", "https://")):
        raise ValueError(f"model spec {spec!r}: expected openai:<model> or http(s)://host/v1[#model]")
    url, _, model = spec.partition("#")
    return url, model or None


@cache
def _openai_client_class() -> type:
    """`openai.OpenAI` whose own backoff (not a server's `Retry-After`) is scaled by `backoff_scale`
    (an override of a private method of the openai client: tests/common/test_chat.py pins its effect)."""
    import openai

    class ScaledBackoffOpenAI(openai.OpenAI):
        backoff_scale = 1.0

        def _calculate_retry_timeout(self, remaining_retries, options, response_headers=None) -> float:
            wait = super()._calculate_retry_timeout(remaining_retries, options, response_headers)
            asked = self._parse_retry_after_header(response_headers)
            # the parent returns the asked wait itself when it honours Retry-After (0 < asked <= 120 s; a
            # date is parsed twice, so allow for the clock moving between the two)
            honoured = asked is not None and math.isclose(wait, asked, abs_tol=0.01)
            return wait if honoured else wait * self.backoff_scale

    return ScaledBackoffOpenAI


class ChatClient:
    """An OpenAI-compatible chat endpoint; `base_url=None` is the OpenAI API (`$OPENAI_BASE_URL`)."""

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        system_prompt: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = OPENAI_FIRST_WAIT_S,
        concurrency: int = 8,
        progress: bool = False,
    ):
        import openai

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        self._openai = openai
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # a local server takes any key
        self.client = _openai_client_class()(
            base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries
        )
        self.client.backoff_scale = backoff_s / OPENAI_FIRST_WAIT_S
        self.base_url, self.model = base_url, model
        self.max_tokens, self.temperature, self.top_p, self.seed = max_tokens, temperature, top_p, seed
        self.system_prompt, self.timeout_s, self.max_retries = system_prompt, timeout_s, max_retries
        self.backoff_s, self.concurrency, self.progress = backoff_s, concurrency, progress

    @property
    def name(self) -> str:
        return self.model or self.base_url or "openai"

    def settings(self) -> dict:
        """What a result's provenance records about the endpoint and its sampling."""
        return {
            "kind": "endpoint",
            "base_url": self.base_url,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "system_prompt": self.system_prompt,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "backoff_s": self.backoff_s,
        }

    def served_model(self) -> str:
        """The model name to send: the one given, else the first one the server lists."""
        if self.model is None:
            self.model = self.client.models.list().data[0].id
        return self.model

    @staticmethod
    def _error(err: Exception) -> str:
        first = str(err).splitlines()[0] if str(err) else ""
        return f"{type(err).__name__}: {first}"[:300]

    def chat(self, prompt: str | Messages, *, seed: int | None = None) -> ChatReply:
        """One chat completion (the client retries); never raises for a server or network problem."""
        try:
            kwargs = {"top_p": self.top_p} if self.top_p is not None else {}
            seed = self.seed if seed is None else seed
            if seed is not None:
                kwargs["seed"] = seed
            response = self.client.chat.completions.create(
                model=self.served_model(),
                messages=messages_for(prompt, self.system_prompt),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                **kwargs,
            )
        except self._openai.OpenAIError as err:
            return ChatReply("", error=self._error(err))
        if not response.choices:
            return ChatReply("", error="empty response: no choices")
        choice = response.choices[0]
        return ChatReply(choice.message.content or "", finish_reason=choice.finish_reason)

    def chat_many(
        self, prompts: Sequence[str | Messages], *, seeds: Sequence[int | None] | None = None
    ) -> list[ChatReply]:
        """Every prompt, at most `concurrency` at once; replies in the prompts' order."""
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if not prompts:
            return []
        try:
            self.served_model()  # once, before the threads start
        except self._openai.OpenAIError as err:  # no model list (server down after every retry)
            return [ChatReply("", error=self._error(err)) for _ in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            jobs = pool.map(lambda ps: self.chat(ps[0], seed=ps[1]), zip(prompts, seeds))
            return list(tqdm(jobs, total=len(prompts), desc=f"chat {self.name}", disable=not self.progress))
