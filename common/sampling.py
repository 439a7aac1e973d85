"""The generation contract both backends share: what to sample (`SamplingParams`), what comes back
(`Completion`), the `Generator` protocol, and the prompt checks. `common.generation` (HF) and
`common.generation_vllm` (vLLM) both import it, so neither imports the other's module at load time;
`common.generation` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Prompts = Sequence[str] | Sequence[Sequence[int]]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = -1
    """-1 or 0: off."""
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None
    """Also return the top-k raw log-probabilities at every position (k = this value)."""

    def __post_init__(self) -> None:
        problems = {
            "n": self.n >= 1,
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "top_k": self.top_k >= -1,
            "max_tokens": self.max_tokens >= 1,
            "stop": not isinstance(self.stop, str) and all(isinstance(s, str) and s for s in self.stop),
            "logprobs": self.logprobs is None or self.logprobs >= 0,
        }
        bad = [k for k, ok in problems.items() if not ok]
        if bad:
            raise ValueError(f"SamplingParams.{bad[0]}={getattr(self, bad[0])!r} is not valid")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Completion:
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    finish_reason: str
    """"stop" (EOS or a stop string) or "length" (max_tokens reached)."""


@runtime_checkable
class Generator(Protocol):
    """Anything with `generate(prompts, params) -> list[Completion]` (flat, prompt-major)."""

    def generate(self, prompts: Prompts, params: SamplingParams) -> list[Completion]: ...


def check_prompts(prompts: Prompts, who: str) -> None:
    """Refuse a bare string, a mix of strings and id lists, and empty prompts, naming the prompt."""
    if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
        raise TypeError(f"{who}: prompts must be a list of strings or of token-id lists, not {type(prompts)}")
    if len({isinstance(p, str) for p in prompts}) > 1:
        raise TypeError(f"{who}: prompts mix strings and token-id lists")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"{who}: prompt {i} is empty")
