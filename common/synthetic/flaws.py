"""Flawed rationales with a known first wrong step, and preference pairs built from them.

A flaw is injected at step k of a valid rationale and the rest continues consistently from the wrong
value, as a model that made the mistake would:
- `slip`: the arithmetic at step k is wrong (c off by 1-3);
- `operand`: step k uses a wrong operand (off by 1-2) with correct arithmetic;
- `drop`: step k is skipped (never the last op), so later lines start from the stale value.
The label is ProcessBench's: the 0-based index of the earliest wrong rationale line (-1 if none).
A *habit* is a systematic flaw rather than a one-off one (`habit_steps`; "div-as-mul": every "splits
into k equal piles" line multiplies instead, the rest continued from it): an SFT corpus where a share of
the rationales carries it teaches the student a habit that an outcome reward can see and RL can unlearn
(`habit_rationales`; the RL testbed of common/synthetic/README.md).
`first_error` recomputes it by re-evaluating every line against the problem, and the tests check that
it agrees with the label of every flawed sample.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from common.synthetic.world import SYMBOL, Problem, Step, apply, rationale_variants

FLAW_KINDS = ("slip", "operand", "drop")
HABITS = ("div-as-mul", "product+1", "skip-last")
LINE = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)\.$")


@dataclass(frozen=True)
class Flawed:
    text: str
    first_error: int
    kind: str
    answer: int


Edit = Callable[[int, Step, str, int], "tuple[str, int, int] | None"]


def _continue(problem: Problem, steps: list[Step], edit: Edit) -> list[Step] | None:
    """`steps` replayed from the problem's start with each line changed by `edit(i, step, kind, b)`:
    None drops the line, else (kind, b, offset) is the operation applied, its operand and an offset added
    to its result; every later line continues from the running value. None when a division stops being
    exact or a value goes negative."""
    out, value, carry = [], problem.start, {}
    for i, s in enumerate(steps):
        op = problem.ops[s.op_index]
        b = carry.get(s.op_index, op.m * op.k) if s.kind == "group_add" else op.k
        change = edit(i, s, s.kind, b)
        if change is None:
            continue
        kind, b, offset = change
        if s.kind == "group":  # a product line stands alone: m * k
            carry[s.op_index] = op.m * b + offset
            out.append(Step(op.m, "*", b, carry[s.op_index], "group", s.op_index))
            continue
        symbol = "+" if kind == "group_add" else SYMBOL[kind]
        if symbol == "/" and (b == 0 or value % b):
            return None  # a (wrong) divisor that does not divide
        c = (value + b if kind == "group_add" else apply(kind, value, b)) + offset
        if c < 0:
            return None
        out.append(Step(value, symbol, b, c, s.kind, s.op_index))
        value = c
    return out


def _replay(problem: Problem, steps: list[Step], k: int, kind: str, rng: random.Random) -> list[Step] | None:
    """Steps with the flaw at line k; later lines recomputed from the wrong running value."""

    def edit(i: int, s: Step, op_kind: str, b: int) -> tuple[str, int, int] | None:
        if i != k:
            return op_kind, b, 0
        if kind == "drop":
            return None
        if kind == "operand":
            return op_kind, max(1, b + rng.choice([-2, -1, 1, 2])), 0
        return op_kind, b, rng.choice([-3, -2, -1, 1, 2, 3])  # slip

    return _continue(problem, steps, edit)


def make_flawed(
    problem: Problem, steps: list[Step], rng: random.Random, wording_seed: int = 0
) -> Flawed | None:
    """One flawed version of the rationale `steps` whose final answer is wrong, or None if none fits."""
    for _ in range(10):
        kind = rng.choice(FLAW_KINDS)
        candidates = [
            i
            for i, s in enumerate(steps)
            if not (kind == "drop" and (s.kind in ("group", "group_add") or i == len(steps) - 1))
        ]
        if not candidates:
            continue
        k = rng.choice(candidates)
        flawed = _replay(problem, steps, k, kind, rng)
        if not flawed or flawed[-1].c == problem.answer:
            continue
        text = problem.render(flawed, wording_seed)
        label = first_error(problem, text)
        if label != k:  # e.g. a dropped op that commutes with the next: the error shows only at the end
            continue
        return Flawed(text, label, kind, flawed[-1].c)
    return None


def parse_lines(text: str) -> list[tuple[int, str, int, int]]:
    out = []
    for line in text.strip().splitlines():
        if line.startswith("####"):
            break
        m = LINE.search(line.strip())
        out.append((int(m[1]), m[2], int(m[3]), int(m[4])) if m else (0, "?", 0, -1))
    return out


def _moves(problem: Problem, value: int, used: frozenset, products: dict, line: tuple) -> list[tuple]:
    """Every way a correct line can be a valid next step: (new value, used ops, products)."""
    a, sym, b, c = line
    out = []
    for j, op in enumerate(problem.ops):
        if j in used:
            continue
        if op.kind == "group" and j not in products and (a, sym, b) == (op.m, "*", op.k):
            out.append((value, used, {**products, j: c}))
        if a != value:
            continue
        if op.kind == "group" and (sym, b) == ("+", products.get(j, op.m * op.k)):
            out.append((c, used | {j}, products))  # with the product computed before or in the head
        elif op.kind != "group" and (sym, b) == (SYMBOL[op.kind], op.k):
            out.append((c, used | {j}, products))
    return out


def first_error(problem: Problem, text: str) -> int:
    """Index of the earliest wrong line, or -1: re-evaluates each line against the problem.

    A line is right when its arithmetic holds AND some valid rationale could take it from the facts
    established so far (apply an unused op to the running value, or compute an unused group product);
    the search tries every reading, so two ops with equal operands do not confuse it. A rationale that
    ends before every op is used, or whose `####` answer differs from its last value, is wrong at its
    last line.
    """
    lines = parse_lines(text)
    final = re.search(r"####\s*(-?\d+)", text)

    def arithmetic_ok(line: tuple) -> bool:
        a, sym, b, c = line
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}.get(sym)
        return exact is not None and c == exact

    def longest(i: int, value: int, used: frozenset, products: dict) -> int:
        """Longest valid prefix from line i; len(lines) + 1 when the whole rationale is complete and right."""
        if i == len(lines):
            complete = len(used) == len(problem.ops) and final is not None and int(final[1]) == value
            return i + 1 if complete else i
        if not arithmetic_ok(lines[i]):
            return i
        best = i
        for state in _moves(problem, value, used, products, lines[i]):
            best = max(best, longest(i + 1, *state))
            if best == len(lines) + 1:
                break
        return best

    reach = longest(0, problem.start, frozenset(), {})
    if reach == len(lines) + 1:
        return -1
    return min(reach, max(len(lines) - 1, 0))


def preference_pairs(
    problems: list[Problem], seed: int = 0, habit: str | None = None, habit_share: float = 0.0
) -> list[dict]:
    """{prompt, chosen, rejected, first_error, flaw} per problem where a clean flaw exists.

    With `habit`, a `habit_share` of the rejected rationales (where the habit applies) carry that habit
    instead of a one-off flaw (`flaw` = the habit's name): the pairs of a world whose policy has the habit,
    as pairs sampled from that policy would hold its errors. Without it the pairs are unchanged."""
    if not 0.0 <= habit_share <= 1.0:
        raise ValueError(f"habit_share must be in [0, 1], got {habit_share}")
    rng, habit_rng = random.Random(f"pairs:{seed}"), random.Random(f"pairs-habit:{seed}")
    pairs = []
    for p in problems:
        orders = p.orders()
        order = rng.choice(orders)
        wording = rng.randrange(10**6)
        steps = p.steps(order)
        flawed = None
        if habit is not None and habit_rng.random() < habit_share:
            bad = habit_steps(p, steps, habit)
            if bad is not None:
                text = p.render(bad, wording)
                flawed = Flawed(text, first_error(p, text), habit, bad[-1].c)
        if flawed is None:
            flawed = make_flawed(p, steps, rng, wording)
        if flawed is None:
            continue
        pairs.append(
            {
                "id": p.uid,
                "prompt": p.prompt(),
                "chosen": p.render(steps, wording),
                "rejected": flawed.text,
                "first_error": flawed.first_error,
                "flaw": flawed.kind,
                "answer": p.answer,
            }
        )
    return pairs


def habit_steps(problem: Problem, steps: list[Step], habit: str = "div-as-mul") -> list[Step] | None:
    """`steps` with the habit and every later line continued from the wrong value, or None when the
    habit does not apply (no line it touches) or would break an exact division later on.

    - "div-as-mul": every "splits into k equal piles" line multiplies instead (v * k, the wording kept):
      one operator token decides it, as a misread word would;
    - "product+1": every product line a * b is written one too high;
    - "skip-last": the rationale stops one operation early (the last op's lines are never written and the
      answer is the value before it): one decision, `####` or one more line, on every problem, as a hasty
      solver would."""
    if habit not in HABITS:
        raise ValueError(f"unknown habit {habit!r}; valid: {', '.join(HABITS)}")
    touched = []
    last_op = steps[-1].op_index

    def edit(i: int, s: Step, kind: str, b: int) -> tuple[str, int, int] | None:
        if habit == "skip-last" and s.op_index == last_op:
            touched.append(i)
            return None
        if habit == "div-as-mul" and kind == "div":
            touched.append(i)
            return "mul", b, 0
        if habit == "product+1" and kind in ("group", "mul"):
            touched.append(i)
            return kind, b, 1
        return kind, b, 0

    out = _continue(problem, steps, edit)
    return out if out and touched else None


def habit_rationales(
    problem: Problem, k: int, rate: float, seed: int = 0, habit: str = "div-as-mul"
) -> list[str]:
    """Up to k rationales (`rationale_variants`), each carrying the habit with probability `rate` (drawn
    per problem, rationale and seed) where the habit applies; the others valid. rate 0: valid_rationales."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"habit rate must be in [0, 1], got {rate}")
    rng = random.Random(f"habit:{problem.uid}:{seed}")
    out = []
    for steps, wording in rationale_variants(problem, k, seed):
        flawed = habit_steps(problem, steps, habit) if rng.random() < rate else None
        out.append(problem.render(flawed or steps, wording))
    return out
