"""The toy world of the spec's "Toy-scale check" (shared/papers/ipvrm.md): a modular running-sum chain with
context-defined errors, a word-level tokenizer, the training and evaluation formats, the verifier.

- Prompt: BOS, `digits` digits a_1..a_n, SEP; `prompt_format="interleaved"` writes "+" before each digit.
- Response: n steps [STEP_k, d_k]; a correct step has d_k = (d_{k-1} + a_k) mod 10, d_0 = 0. With
  probability `p_err` a step writes a uniformly drawn wrong digit and later steps continue from it.
- Training format: when a step was wrong, `retries` extra [RETRY, x] steps (x uniform) after the last
  step (`retry_position="end"`) or right after the first wrong step ("error"), then [ANS, OK|BAD] and EOS. The outcome label is 1 with probability `p_outcome_clean` (0.95) when no step
  was wrong and `p_outcome_error` (0.05) otherwise; the tag is OK exactly when the label is 1.
- Evaluation format (ProcessBench-like): the n steps only. Label = index of the first wrong step (0-based),
  -1 when clean. The evaluation set is balanced: half clean, half with one forced error at a uniform step.
- Verifier (RL): the response's n [STEP_k, d] steps parse (RETRY steps skipped, ANS tag ignored) and the
  last digit equals (a_1 + ... + a_n) mod 10.

Deviations from the spec (NOTES.md, "SFT probes"): the interleaved prompt puts a_k at the same distance
(2n tokens) before step k's STEP token for every k, so one relative-position lookup finds every operand (in
the spec's plain prompt the distance grows with k, and a tiny SFT model learns one step position at a
time); the RETRY steps go after the last step for the same reason. `step_tokens="indexed"` (STEP_k, one
token per step index) is the other probed fix. Everything is a function of the seed: the same seed gives the same data, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
MAX_DIGITS = 9
STEP_TOKEN_KINDS = ("indexed", "single")
PROMPT_FORMATS = ("interleaved", "plain")
RETRY_POSITIONS = ("end", "error")
WORDS = ["SEP", "+", "STEP", *[f"STEP{k}" for k in range(1, MAX_DIGITS + 1)], "RETRY", "ANS", "OK", "BAD"]
VOCAB = SPECIALS + [str(d) for d in range(10)] + WORDS


@dataclass(frozen=True)
class WorldSpec:
    """The world's generator settings; defaults are the spec's except `step_tokens` (module doc)."""

    digits: int = 6  # spec: 6
    p_err: float = 0.15  # spec
    p_outcome_clean: float = 0.95  # spec
    p_outcome_error: float = 0.05  # spec
    retries: int = 2  # spec: 2 RETRY steps after an error (training format only)
    step_tokens: str = "single"  # spec: one STEP token; "indexed": STEP_k (module doc)
    prompt_format: str = "interleaved"  # deviation (module doc); "plain" = the spec's prompt
    retry_position: str = "end"  # ours (the spec says "after an error"); "error": right after it

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= MAX_DIGITS:
            raise ValueError(f"WorldSpec.digits: must be in [1, {MAX_DIGITS}], got {self.digits}")
        for name in ("p_err", "p_outcome_clean", "p_outcome_error"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldSpec.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"WorldSpec.retries: must be >= 0, got {self.retries}")
        if self.step_tokens not in STEP_TOKEN_KINDS:
            raise ValueError(
                f"WorldSpec.step_tokens: {self.step_tokens!r}; valid: {', '.join(STEP_TOKEN_KINDS)}"
            )
        for name, valid in (("prompt_format", PROMPT_FORMATS), ("retry_position", RETRY_POSITIONS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"WorldSpec.{name}: {getattr(self, name)!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class Trajectory:
    """One prompt and response as words (no BOS / EOS in `response`), the outcome label and first error."""

    operands: tuple[int, ...]
    response: tuple[str, ...]
    label: int  # outcome r_o in {0, 1} (training format) / 1 iff clean (evaluation format)
    first_error: int  # 0-based index of the first wrong step, -1 when every step is right


def world_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `VOCAB` (whitespace-split, decode joins with spaces)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word tokens with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def step_word(spec: WorldSpec, k: int) -> str:
    """The marker of step k (0-based)."""
    return f"STEP{k + 1}" if spec.step_tokens == "indexed" else "STEP"


def prompt_text(operands: tuple[int, ...], spec: WorldSpec) -> str:
    """BOS, the operands (each after "+" when interleaved), SEP."""
    if spec.prompt_format == "interleaved":
        return " ".join(["<s>", *(w for a in operands for w in ("+", str(a))), "SEP"])
    return " ".join(["<s>", *map(str, operands), "SEP"])


def correct_chain(operands: tuple[int, ...]) -> list[int]:
    """d_1..d_n of the correct chain."""
    out, d = [], 0
    for a in operands:
        d = (d + a) % 10
        out.append(d)
    return out


def _wrong(rng: random.Random, right: int) -> int:
    return (right + rng.randrange(1, 10)) % 10


def _retries(rng: random.Random, spec: WorldSpec) -> list[str]:
    return [w for _ in range(spec.retries) for w in ("RETRY", str(rng.randrange(10)))]


def sample_operands(rng: random.Random, spec: WorldSpec) -> tuple[int, ...]:
    return tuple(rng.randrange(10) for _ in range(spec.digits))


def training_trajectory(rng: random.Random, spec: WorldSpec, operands: tuple[int, ...] | None = None):
    """A training-format `Trajectory` (module doc): errors w.p. p_err propagate, RETRY steps, ANS tag."""
    operands = operands if operands is not None else sample_operands(rng, spec)
    words, d, first = [], 0, -1
    for k, a in enumerate(operands):
        right = (d + a) % 10
        d = _wrong(rng, right) if rng.random() < spec.p_err else right
        words += [step_word(spec, k), str(d)]
        if d != right and first < 0:
            first = k
            if spec.retry_position == "error":
                words += _retries(rng, spec)
    if first >= 0 and spec.retry_position == "end":
        words += _retries(rng, spec)
    p_ok = spec.p_outcome_clean if first < 0 else spec.p_outcome_error
    label = int(rng.random() < p_ok)
    words += ["ANS", "OK" if label else "BAD"]
    return Trajectory(operands, tuple(words), label, first)


def eval_trajectory(rng: random.Random, spec: WorldSpec, error_at: int, operands=None) -> Trajectory:
    """An evaluation-format `Trajectory`: n steps, one forced wrong digit at step `error_at` (-1: clean),
    later steps continuing from it."""
    operands = operands if operands is not None else sample_operands(rng, spec)
    words, d = [], 0
    for k, a in enumerate(operands):
        right = (d + a) % 10
        d = _wrong(rng, right) if k == error_at else right
        words += [step_word(spec, k), str(d)]
    return Trajectory(operands, tuple(words), int(error_at < 0), error_at)


def eval_set(seed: int, n: int, spec: WorldSpec) -> list[Trajectory]:
    """n balanced evaluation trajectories: even rows clean, odd rows one error at a uniform step."""
    rng = random.Random(seed)
    return [eval_trajectory(rng, spec, -1 if i % 2 == 0 else rng.randrange(spec.digits)) for i in range(n)]


def training_set(seed: int, n: int, spec: WorldSpec) -> list[Trajectory]:
    rng = random.Random(seed)
    return [training_trajectory(rng, spec) for _ in range(n)]


def prompts(seed: int, n: int, spec: WorldSpec) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    return [sample_operands(rng, spec) for _ in range(n)]


def parse_steps(response: str, spec: WorldSpec) -> list[int] | None:
    """The digits of the response's n [STEP_k, d] steps in order (RETRY steps skipped, anything after
    the n-th step ignored), or None when they do not parse."""
    words, out, i = response.split(), [], 0
    while len(out) < spec.digits:
        if i + 1 >= len(words):
            return None
        marker, value = words[i], words[i + 1]
        if marker == "RETRY" and out:
            i += 2
            continue
        if marker != step_word(spec, len(out)) or not (len(value) == 1 and value.isdigit()):
            return None
        out.append(int(value))
        i += 2
    return out


def is_correct(operands: tuple[int, ...], response: str, spec: WorldSpec) -> bool:
    """The verifier: the steps parse and the last digit is (sum of operands) mod 10."""
    steps = parse_steps(response, spec)
    return steps is not None and steps[-1] == sum(operands) % 10


def first_error(operands: tuple[int, ...], steps: list[int]) -> int:
    """0-based index of the first step with d_k != (d_{k-1} + a_k) mod 10 (d_{k-1} as written), -1 if none."""
    d = 0
    for k, (a, got) in enumerate(zip(operands, steps)):
        if got != (d + a) % 10:
            return k
        d = got
    return -1
