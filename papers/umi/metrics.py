"""Static step-level metrics of alpha-UMi (spec "Evaluation"; official evaluate-multi_agent.py).

Each test step has a reference string and a prediction string; both are parsed into
(plan, action, args, answer) by `parse_step`, then

    Plan ACC  mean over all steps of 1[plan_pred = plan_ref]
    Act. EM   mean over call steps (plan_ref = call) of 1[action_pred = action_ref]; a non-call
              prediction has action "none"
    Arg. F1   mean over call steps of `step_arg_f1` (0 on a wrong action; a reference whose args are not
              JSON drops the step)
    Hallu.    #(predicted call whose action is not "none" and not a tool of the step) / #(all steps)
    R-L       mean ROUGE-L F1 of predicted vs reference answers over finish steps ("none" if missing)

All reported x100 (`static_metrics`), as the paper's Table 1.

Deviation: R-L is the plain LCS F1 on whitespace tokens (`rouge_l_f1`), not the `rouge` PyPI package
v1.0.1 the official script calls (not installable offline here); the two can differ on multi-sentence
answers (UNCONFIRMED by how much).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from papers.umi.formats import EOS_TEXT, parse_call

PLANS = ("call", "finish", "give up")


@dataclass(frozen=True)
class ParsedStep:
    plan: str
    action: str
    args: str
    answer: str


def parse_step(text: str) -> ParsedStep:
    """The official parse: plan from the Next-marker ("give up" > "finish" > "call"); a finish's answer
    is the text after the last "conclusion: " without "</s>"; a call's action and args come from the
    segment after the first "</s>" (the caller part)."""
    if "Next: give up" in text:
        return ParsedStep("give up", "none", "{}", "")
    if "Next: conclusion" in text:
        answer = text.rsplit("conclusion: ", 1)[1] if "conclusion: " in text else ""
        return ParsedStep("finish", "none", "{}", answer.replace(EOS_TEXT, ""))
    parts = text.split(EOS_TEXT)
    action, args = parse_call(parts[1]) if len(parts) > 1 else ("none", "{}")
    return ParsedStep("call", action, args, "")


def arg_f1(ref_args: str, pred_args: str) -> float | None:
    """Argument F1 of one call step whose action matches (spec vectors in tests/papers/umi).

    None when `ref_args` is not valid JSON (the step is dropped). A pred that is not JSON or not a dict
    scores 0. ref {} scores 1 only against pred {}. Otherwise a key of ref counts 1 when pred has it with an
    equal value and 0.5 when pred has it with another value; R = hits / |ref|, P = hits / |pred|,
    F1 = 2PR / (P + R) (0 when P + R = 0). Not symmetric in (ref, pred)."""
    # Besides JSONDecodeError: ValueError for an int past Python's 4,300-digit limit, RecursionError for
    # nesting past the recursion limit (degenerate outputs such as "[[[[..."); both are "not JSON" here.
    try:
        ref = json.loads(ref_args)
    except (ValueError, TypeError, RecursionError):
        return None
    try:
        pred = json.loads(pred_args)
    except (ValueError, TypeError, RecursionError):
        return 0.0
    if not isinstance(pred, dict):
        return 0.0
    if not isinstance(ref, dict) or not ref:
        return 1.0 if pred == ref else 0.0
    full = sum(1 for k, v in ref.items() if k in pred and pred[k] == v)
    half = sum(1 for k, v in ref.items() if k in pred and pred[k] != v)
    hits = full + 0.5 * half
    recall = hits / len(ref)
    precision = hits / len(pred) if pred else 0.0
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def step_arg_f1(ref: ParsedStep, pred: ParsedStep) -> float | None:
    """Arg F1 of one call step: 0 when the actions differ, else `arg_f1` (None: step dropped)."""
    if pred.action != ref.action:
        return 0.0
    return arg_f1(ref.args, pred.args)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(hyp: str, ref: str) -> float:
    """ROUGE-L F1 (LCS over whitespace tokens); 0 when either side is empty."""
    h, r = hyp.split(), ref.split()
    if not h or not r:
        return 0.0
    lcs = lcs_length(h, r)
    if lcs == 0:
        return 0.0
    p, rc = lcs / len(h), lcs / len(r)
    return 2 * p * rc / (p + rc)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def static_metrics(steps: Sequence[dict]) -> dict:
    """Table-1 metrics (x100) over steps {reference, prediction, tool_names}; also the counts and the
    official easy/hard F1 split (ref args {} / not {}), guarded against empty subsets."""
    if not steps:
        raise ValueError("static_metrics: no steps")
    plan_hits, em, f1s, easy, hard, hallu, rouge = [], [], [], [], [], 0, []
    for step in steps:
        ref, pred = parse_step(step["reference"]), parse_step(step["prediction"])
        plan_hits.append(float(ref.plan == pred.plan))
        if pred.plan == "call" and pred.action != "none" and pred.action not in step["tool_names"]:
            hallu += 1
        if ref.plan == "call":
            em.append(float(pred.action == ref.action))
            f1 = step_arg_f1(ref, pred)
            if f1 is not None:
                f1s.append(f1)
                (easy if _is_empty_json(ref.args) else hard).append(f1)
        elif ref.plan == "finish":
            rouge.append(rouge_l_f1(pred.answer.strip() or "none", ref.answer.strip() or "none"))
    return {
        "Plan ACC": 100 * _mean(plan_hits),
        "Act. EM": 100 * _mean(em),
        "Arg. F1": 100 * _mean(f1s),
        "Hallu.": 100 * hallu / len(steps),
        "Rouge-L": 100 * _mean(rouge),
        "easy F1": 100 * _mean(easy),
        "hard F1": 100 * _mean(hard),
        "n steps": len(steps),
        "n call": len(em),
        "n f1": len(f1s),
        "n finish": len(rouge),
    }


def _is_empty_json(text: str) -> bool:
    try:
        return json.loads(text) == {}
    except json.JSONDecodeError:
        return False
