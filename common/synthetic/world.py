"""The toy reasoning world: GSM8K-shaped word problems over small integers, from a seed.

A problem is a start quantity and 2-5 operations on it (add, subtract, multiply, exact divide, and
"buy m groups of k", which takes two steps: m * k, then the addition). A rationale is one line per step,
a few words then the arithmetic (`He finds 3 more, so 5 + 3 = 8.`), and the last line is `#### <answer>`
so the GSM8K graders in `common.scoring` apply unchanged.

Several rationales are valid for one problem: adjacent additions/subtractions commute (when no
intermediate goes negative), a group product can be computed before it is needed, and each step has
several wordings. `rationale_diversity` measures how different two rationales are (MCC-KD filters by it).

    world = WorldConfig(seed=0)
    splits = make_splits(world)            # {"train": [...], "validation": [...], "test": [...]}
    p = splits["test"][0]; p.prompt(); p.rationale(order, wording_seed); p.answer

The same seed gives the same problems, bit for bit; no question text appears in two splits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Ben", "Eva", "Kim", "Max"]
ITEMS = ["apples", "stickers", "marbles", "books", "coins", "cards", "pens", "shells", "eggs", "beads"]
FRIENDS = ["a friend", "his sister", "her brother", "a neighbour", "the teacher", "a cousin"]
DISTRACTORS = [
    "{name} likes the colour blue.",
    "It is a sunny day.",
    "{name} is {n} years old.",
    "The shop opens at {n} o'clock.",
    "{name} walks {n} minutes to school.",
]

# Story sentence and rationale wordings per operation. {k}/{m}: operands, {item}, {friend}.
STORY = {
    "add": ["Then {pronoun} finds {k} more {item}.", "{pronoun_cap} gets {k} more {item} as a gift."],
    "sub": ["Then {pronoun} gives {k} {item} to {friend}.", "{pronoun_cap} loses {k} {item}."],
    "mul": [
        "Then the number of {item} grows to {k} times as many.",
        "{pronoun_cap} ends up with {k} times as many {item}.",
    ],
    "div": [
        "Then {pronoun} shares the {item} equally among {k} bags and keeps one bag.",
        "{pronoun_cap} splits the {item} into {k} equal piles and keeps one pile.",
    ],
    "group": [
        "Then {pronoun} buys {m} packs with {k} {item} in each.",
        "{pronoun_cap} gets {m} boxes of {k} {item}.",
    ],
}
WORDING = {
    "add": ["{pronoun_cap} finds {k} more, so", "Adding {k},", "After getting {k} more,"],
    "sub": ["{pronoun_cap} gives away {k}, so", "Taking away {k},", "After losing {k},"],
    "mul": ["{k} times as many is", "Multiplying by {k},", "Growing {k} times,"],
    "div": ["One of {k} equal parts is", "Dividing by {k},", "Sharing among {k},"],
    "group": ["The packs hold", "In the boxes there are", "{m} groups of {k} make"],
    "group_add": ["Adding the packs,", "With the boxes,", "Together,"],
}
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class WorldConfig:
    """The difficulty dial and the seed. Defaults are the calibrated toy setting (see README.md)."""

    seed: int = 0
    min_ops: int = 2
    """Fewest arithmetic lines in a rationale (a "buy m groups of k" op takes two)."""
    max_ops: int = 3
    max_start: int = 12
    max_operand: int = 6
    """Largest number added, subtracted, or in a group."""
    max_factor: int = 3
    """Largest multiplier / divisor."""
    max_value: int = 60
    """No intermediate value exceeds this."""
    distractor_prob: float = 0.2
    n_train: int = 4000
    n_validation: int = 300
    n_test: int = 500


DEFAULT_WORLD = WorldConfig()


@dataclass(frozen=True)
class Op:
    kind: str  # add | sub | mul | div | group
    k: int
    m: int = 0  # the number of groups, for "group"


@dataclass(frozen=True)
class Step:
    """One rationale line's arithmetic: a <symbol> b = c, with the op that produced it."""

    a: int
    symbol: str
    b: int
    c: int
    kind: str
    op_index: int

    def arithmetic(self) -> str:
        return f"{self.a} {self.symbol} {self.b} = {self.c}"


def apply(kind: str, value: int, k: int) -> int:
    return {"add": value + k, "sub": value - k, "mul": value * k, "div": value // k}[kind]


@dataclass(frozen=True)
class Problem:
    uid: str
    name: str
    pronoun: str
    item: str
    start: int
    ops: tuple[Op, ...]
    story: tuple[str, ...]
    answer: int

    @property
    def question(self) -> str:
        return " ".join(self.story) + f" How many {self.item} does {self.name} have now?"

    def prompt(self) -> str:
        """The plain prompt format every toy pipeline uses (see README.md)."""
        return f"Question: {self.question}\nAnswer:"

    def orders(self) -> list[tuple[int, ...]]:
        """Valid orders of the ops: adjacent add/sub may swap while every value stays in range."""
        base = tuple(range(len(self.ops)))
        found, frontier = {base}, [base]
        while frontier:
            order = frontier.pop()
            for i in range(len(order) - 1):
                a, b = self.ops[order[i]], self.ops[order[i + 1]]
                if {a.kind, b.kind} <= {"add", "sub", "group"} and (a.kind, b.kind) != ("group", "group"):
                    swapped = order[:i] + (order[i + 1], order[i]) + order[i + 2 :]
                    if swapped not in found and self._in_range(swapped):
                        found.add(swapped)
                        frontier.append(swapped)
        return sorted(found)

    def _in_range(self, order: tuple[int, ...]) -> bool:
        return all(s.c >= 0 for s in self.steps(order))

    def steps(self, order: tuple[int, ...] | None = None, group_first: bool = False) -> list[Step]:
        """The arithmetic lines of the rationale that applies the ops in `order`.

        A group op is two lines, m * k = p then value + p; with `group_first`, every group product is
        computed at the start instead (another valid rationale).
        """
        order = tuple(range(len(self.ops))) if order is None else order
        lines, value = [], self.start
        if group_first:
            for i in order:
                op = self.ops[i]
                if op.kind == "group":
                    lines.append(Step(op.m, "*", op.k, op.m * op.k, "group", i))
        for i in order:
            op = self.ops[i]
            if op.kind == "group":
                if not group_first:
                    lines.append(Step(op.m, "*", op.k, op.m * op.k, "group", i))
                new = value + op.m * op.k
                lines.append(Step(value, "+", op.m * op.k, new, "group_add", i))
            else:
                new = apply(op.kind, value, op.k)
                lines.append(Step(value, SYMBOL[op.kind], op.k, new, op.kind, i))
            value = new
        return lines

    def render(self, steps: list[Step], wording_seed: int = 0, answer: int | None = None) -> str:
        """Rationale text: one line per step and the final `#### answer` line."""
        rng = random.Random(wording_seed)
        fill = self._fill()
        lines = []
        for s in steps:
            op = self.ops[s.op_index]
            words = rng.choice(WORDING[s.kind]).format(k=op.k, m=op.m, **fill)
            lines.append(f"{words} {s.arithmetic()}.")
        final = steps[-1].c if answer is None else answer
        return "\n".join(lines + [f"#### {final}"])

    def rationale(
        self, order: tuple[int, ...] | None = None, wording_seed: int = 0, group_first: bool = False
    ) -> str:
        return self.render(self.steps(order, group_first), wording_seed)

    def _fill(self) -> dict:
        return {"pronoun": self.pronoun, "pronoun_cap": self.pronoun.capitalize(), "item": self.item}


def _sample_problem(rng: random.Random, cfg: WorldConfig, index: int) -> Problem:
    name = rng.choice(NAMES)
    pronoun = "she" if name in ("Ann", "Mia", "Zoe", "Ivy", "Eva", "Kim") else "he"
    item = rng.choice(ITEMS)
    start = rng.randint(2, cfg.max_start)
    n_lines = rng.randint(cfg.min_ops, cfg.max_ops)  # lines of arithmetic; a group op takes two
    ops, value, lines = [], start, 0
    while lines < n_lines:
        kind = rng.choice(
            ["add", "sub", "mul", "div", "group"] if n_lines - lines >= 2 else ["add", "sub", "mul", "div"]
        )
        if kind == "add":
            op = Op("add", rng.randint(1, cfg.max_operand))
        elif kind == "sub":
            if value < 2:
                continue
            op = Op("sub", rng.randint(1, min(cfg.max_operand, value - 1)))
        elif kind == "mul":
            op = Op("mul", rng.randint(2, cfg.max_factor))
        elif kind == "div":
            divisors = [d for d in range(2, cfg.max_factor + 1) if value % d == 0]
            if not divisors:
                continue
            op = Op("div", rng.choice(divisors))
        else:
            op = Op("group", rng.randint(2, cfg.max_operand), m=rng.randint(2, cfg.max_factor))
        new = value + op.m * op.k if kind == "group" else apply(kind, value, op.k)
        if new > cfg.max_value:
            continue
        ops.append(op)
        value = new
        lines += 2 if kind == "group" else 1
    fill = {"pronoun": pronoun, "pronoun_cap": pronoun.capitalize(), "item": item}
    story = [f"{name} has {start} {item}."]
    for op in ops:
        story.append(rng.choice(STORY[op.kind]).format(k=op.k, m=op.m, friend=rng.choice(FRIENDS), **fill))
    if rng.random() < cfg.distractor_prob:
        pos = rng.randint(1, len(story))
        story.insert(pos, rng.choice(DISTRACTORS).format(name=name, n=rng.randint(3, 12)))
    return Problem(f"arith-{cfg.seed}-{index}", name, pronoun, item, start, tuple(ops), tuple(story), value)


def make_splits(cfg: WorldConfig = DEFAULT_WORLD) -> dict[str, list[Problem]]:
    """Train / validation / test problems; a question text never appears in two splits."""
    rng = random.Random(f"toy-arith:{cfg.seed}")
    sizes = {"train": cfg.n_train, "validation": cfg.n_validation, "test": cfg.n_test}
    seen: set[str] = set()
    out: dict[str, list[Problem]] = {k: [] for k in sizes}
    index = 0
    # test first, so its problems do not depend on the train size
    for split in ("test", "validation", "train"):
        while len(out[split]) < sizes[split]:
            problem = _sample_problem(rng, cfg, index)
            index += 1
            if problem.question in seen:
                continue
            seen.add(problem.question)
            out[split].append(problem)
    return out


def rationale_diversity(a: str, b: str) -> float:
    """1 - Jaccard similarity of the two rationales' line sets (0: identical lines, 1: none shared).

    Lines are compared whole, so a different step order with the same wording scores 0 unless a line
    changed; different wording or a different group split changes lines.
    """
    la, lb = set(a.strip().splitlines()[:-1]), set(b.strip().splitlines()[:-1])
    if not la and not lb:
        return 0.0
    return 1.0 - len(la & lb) / len(la | lb)


def rationale_variants(problem: Problem, k: int, seed: int = 0) -> list[tuple[list[Step], int]]:
    """Up to k distinct valid rationales as (steps, wording seed): different orders, group placement and
    wordings, drawn from a generator seeded by the problem and `seed`."""
    rng = random.Random(f"{problem.uid}:{seed}")
    variants = [
        (o, g)
        for o in problem.orders()
        for g in ((False, True) if any(op.kind == "group" for op in problem.ops) else (False,))
    ]
    out: list[tuple[list[Step], int]] = []
    texts: set[str] = set()
    attempts = 0
    while len(out) < k and attempts < 20 * k:
        order, group_first = rng.choice(variants)
        steps, wording = problem.steps(order, group_first), rng.randrange(10**6)
        text = problem.render(steps, wording)
        if text not in texts:
            texts.add(text)
            out.append((steps, wording))
        attempts += 1
    return out


def valid_rationales(problem: Problem, k: int, seed: int = 0) -> list[str]:
    """Up to k distinct valid rationales: different orders, group placement and wordings."""
    return [problem.render(steps, wording) for steps, wording in rationale_variants(problem, k, seed)]
