"""ProcessBench scored by a real causal LM pair (RM and reference), as the official process_eval.py does.

Input format (spec "ProcessBench evaluation"): user = the problem, assistant = "\n\n".join("Step {i}: " +
step_i), through the tokenizer's chat template. The per-token reward is coef x (log pi_RM - log pi_ref) on
the response tokens; a step ends at the token holding the step's last character (the code re-tokenises the
conversation cut after each step; offsets give the same boundary without k extra tokenisations). Step scores
are `ipvrm.step_scores` ("process" = the code's `sum_diff`, "prefix" = `sum`, both before the sigmoid, which
changes no prediction); F1 with the threshold tuned on the GSM8K subset and fixed ("calibrated",
ProcessBench's convention) and tuned on each subset itself ("oracle", the released code), both on the exact
midpoint grid. At toy scale SmolLM2-135M-Instruct is both RM and reference (the issue's end-to-end check of
the path): every log-ratio is 0, so the numbers are a floor (F1 0), not a measurement of any RM.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import torch

from common.data import shared_mirror
from common.models import load_causal_lm, load_tokenizer
from common.rl import sequence_logprobs
from common.stages import cached_json, stage_hash
from papers.ipvrm.ipvrm import STEP_PROTOCOLS, step_scores
from papers.ipvrm.processbench import SPLITS, evaluate_subsets, read_processbench

VERSION = 1


def conversation(problem: str, steps: list[str]) -> list[dict]:
    answer = "\n\n".join(f"Step {i}: {step}" for i, step in enumerate(steps, start=1))
    return [{"role": "user", "content": problem}, {"role": "assistant", "content": answer}]


def encode_sample(tok, problem: str, steps: list[str]) -> tuple[list[int], int, list[int]]:
    """(token ids of the whole chat, index of the first response token, index of each step's last token).

    A ValueError names the template when the chat template does not render the user turn as a prefix."""
    messages = conversation(problem, steps)
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(f"processbench: {tok.name_or_path}'s chat template does not extend the user turn")
    start = full.index(messages[1]["content"], len(prompt))
    ends, at = [], start
    for i, step in enumerate(steps, start=1):
        at += len(f"Step {i}: {step}")
        ends.append(at - 1)  # the step's last character
        at += 2  # "\n\n"
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    spans = enc["offset_mapping"]
    token_of = lambda char: next(t for t, (a, b) in enumerate(spans) if a <= char < b)  # noqa: E731
    return enc["input_ids"], token_of(start), [token_of(c) for c in ends]


def sample_rows(split: str, n: int, seed: int, data_dir: str | Path | None) -> list[dict]:
    """A seeded sample of `n` rows of one subset, in file order: ceil(n/2) erroneous and floor(n/2) correct
    ones (F1 needs both kinds; it is the harmonic mean of the two accuracies, so the mix does not bias it)."""
    rows = read_processbench(split, data_dir)
    rng = random.Random(f"{seed}:{split}")
    wrong = [i for i, r in enumerate(rows) if r["label"] >= 0]
    right = [i for i, r in enumerate(rows) if r["label"] == -1]
    keep = rng.sample(wrong, min(n - n // 2, len(wrong))) + rng.sample(right, min(n // 2, len(right)))
    return [rows[i] for i in sorted(keep)]


@torch.no_grad()
def token_rewards(rm, ref, ids: list[int], response_start: int, coef: float) -> torch.Tensor:
    """coef x (log pi_RM - log pi_ref) of every response token [n_response] (token i given tokens < i)."""
    x = torch.tensor([ids])
    mask = torch.ones_like(x)
    logp = sequence_logprobs(rm, x, mask)  # [1, T], entry t = log pi(token t | tokens < t)
    diff = logp - (logp if ref is rm else sequence_logprobs(ref, x, mask))  # one forward when RM is ref
    return coef * diff[0, response_start:].double()


def score_rows(rm, ref, tok, rows: list[dict], coef: float) -> dict[str, list[list[float]]]:
    """{protocol: per row, the step scores} for both protocols."""
    out: dict[str, list[list[float]]] = {p: [] for p in STEP_PROTOCOLS}
    for row in rows:
        ids, start, ends = encode_sample(tok, row["question"], row["steps"])
        rewards = token_rewards(rm, ref, ids, start, coef)
        for protocol in STEP_PROTOCOLS:
            out[protocol].append(step_scores(rewards, [e - start for e in ends], protocol).tolist())
    return out


def processbench_stage(real, work: Path, force: bool, data_dir: str | None = None) -> dict:
    """Score a seeded sample of every subset with `real.rm` against `real.ref` and evaluate both threshold
    protocols: {"n": per subset, "<protocol>": {"calibrated" | "oracle": evaluate_subsets(...)}}."""
    key = stage_hash({"real": asdict(real), "v": VERSION})
    mirror = data_dir if data_dir is not None else shared_mirror()  # the hub when neither exists

    def compute() -> dict:
        tok = load_tokenizer(real.rm)
        rm = load_causal_lm(real.rm, dtype=torch.float32, device="cpu").eval()
        ref = (
            rm if real.ref == real.rm else load_causal_lm(real.ref, dtype=torch.float32, device="cpu").eval()
        )
        scored, n = {}, {}
        for split in SPLITS:
            rows = sample_rows(split, real.per_subset, real.seed, mirror)
            scored[split], n[split] = (
                (score_rows(rm, ref, tok, rows, real.coef), [r["label"] for r in rows]),
                len(rows),
            )
        result: dict = {"n": n, "rm": real.rm, "ref": real.ref}
        for protocol in STEP_PROTOCOLS:
            subsets = {s: (scores[protocol], labels) for s, (scores, labels) in scored.items()}
            result[protocol] = {t: evaluate_subsets(subsets, t) for t in ("calibrated", "oracle")}
        return result

    return cached_json(work / f"processbench-real-{key}.json", force, compute)
