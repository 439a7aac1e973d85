"""The paper's claim in miniature: individual-level skill does not imply group-level skill (spec "Toy-scale check" 2-3).

A generator (seeded) writes SA-style and SP-style items in the official JSON schema, so they go through
the real prompt renderer and scorer:
- roles get 3 trait words each from a 200-word vocabulary; every profile also names an ally and a rival;
- SA item: 4 options, the correct one repeats one of the role's trait words, the distractors use trait
  words of other roles (individual skill: know your own profile);
- SP item: 3 roles talk; the ally and the rival each propose a different place; the correct option agrees
  with the ally. Every option carries exactly one of the role's trait words, so lexical overlap with the
  own profile carries no signal (group skill: read the other agents).
Agents: a random letter; an overlap agent (most words shared with `meta.profile[meta.name]`, ties -> first);
a bag-of-words logistic regression on (profile, option) pairs trained on SA items only.
Expected (spec): overlap >= 90 on SA and 25 +- 6 on SP; LR >= 80 on held-out SA and <= 35 on SP; random
25 +- 6 on both: a strong individual score next to a chance-level group score.
"""

from __future__ import annotations

import random
import re

import numpy as np

from papers.socialbench.prompts import build_prompt
from papers.socialbench.scoring import keyword_recall, score_item

LETTERS = "ABCD"
SYLLABLES = ("ka", "lo", "mi", "ne", "pu", "ra", "si", "to", "vu", "ze")


def _words(n: int, rng: random.Random, length: int) -> list[str]:
    """`n` distinct made-up words of `length` syllables (no overlap with the template words)."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(SYLLABLES) for _ in range(length)))
    return sorted(out)


def _world(seed: int, n_roles: int = 40) -> tuple[random.Random, list[str], dict[str, list[str]], list[str]]:
    rng = random.Random(seed)
    vocab = _words(200, rng, 3)
    names = [w.capitalize() for w in _words(n_roles, rng, 2)]
    places = _words(30, rng, 4)
    traits = {name: rng.sample(vocab, 3) for name in names}
    return rng, names, traits, places


def _profile(name: str, traits: dict[str, list[str]], ally: str, rival: str) -> str:
    t = traits[name]
    return f"{name}: traits {t[0]} {t[1]} {t[2]}.\nally {ally}.\nrival {rival}."


def make_sa_items(n: int, seed: int = 0) -> list[dict]:
    """SA-style items (Individual-SA-RoleStyle): pick the line that shows your own trait."""
    rng, names, traits, _ = _world(seed)
    items = []
    for i in range(n):
        name, ally, rival = rng.sample(names, 3)
        others = [w for other in names if other != name for w in traits[other] if w not in traits[name]]
        lines = [rng.choice(traits[name])] + rng.sample(others, 3)
        order = rng.sample(range(4), 4)
        choices = {LETTERS[k]: f"Honestly, I feel so {lines[j]} today." for k, j in enumerate(order)}
        gold = LETTERS[order.index(0)]
        items.append(
            {
                "id": f"synthetic-sa:{i}",
                "dialogue": [{"from": "User", "value": "How are you feeling today?"}],
                "instruction": "",
                "choices": choices,
                "label": [gold],
                "meta": {
                    "lang": "en",
                    "category": "Individual-SA-RoleStyle",
                    "name": name,
                    "profile": {name: _profile(name, traits, ally, rival)},
                },
            }
        )
    return items


def make_sp_items(n: int, seed: int = 0) -> list[dict]:
    """SP-style items (Group-SAP-Neutral): side with your ally's proposal, not your rival's."""
    rng, names, traits, places = _world(seed + 10_000)
    items = []
    for i in range(n):
        name, ally, rival = rng.sample(names, 3)
        ally_place, rival_place, *other = rng.sample(places, 4)
        proposals = [ally_place, rival_place, *other]
        order = rng.sample(range(4), 4)
        choices = {
            LETTERS[k]: f"Sure, let us go to the {proposals[j]}, it feels {rng.choice(traits[name])}."
            for k, j in enumerate(order)
        }
        speakers = [(ally, ally_place), (rival, rival_place)]
        rng.shuffle(speakers)
        dialogue = [{"from": who, "value": f"I say we should go to the {where}!"} for who, where in speakers]
        profiles = {
            r: _profile(r, traits, *rng.sample([x for x in names if x != r], 2)) for r in (ally, rival)
        }
        profiles[name] = _profile(name, traits, ally, rival)
        items.append(
            {
                "id": f"synthetic-sp:{i}",
                "dialogue": dialogue,
                "instruction": "",
                "choices": choices,
                "label": [LETTERS[order.index(0)]],
                "meta": {"lang": "en", "category": "Group-SAP-Neutral", "name": name, "profile": profiles},
            }
        )
    return items


def tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def overlap_agent(item: dict) -> str:
    """The option sharing most words with the role's own profile (ties -> first option)."""
    own = tokens(item["meta"]["profile"][item["meta"]["name"]])
    shared = [len(own & tokens(text)) for text in item["choices"].values()]
    return list(item["choices"])[int(np.argmax(shared))]


def random_agent(item: dict, rng: random.Random) -> str:
    return rng.choice(list(item["choices"]))


class BowLogReg:
    """Logistic regression on bag-of-words features of (own profile, option) pairs.

    Features: the indicator of every vocabulary word present in both profile and option, plus the count
    of shared words. Trained by full-batch gradient descent with L2 (numpy; a second, no GPU).
    """

    def __init__(self, vocab: list[str], l2: float = 1e-3, lr: float = 0.5, steps: int = 500):
        self.index = {w: i for i, w in enumerate(vocab)}
        self.l2, self.lr, self.steps = l2, lr, steps
        self.w = np.zeros(len(vocab) + 2)

    def features(self, profile: str, option: str) -> np.ndarray:
        x = np.zeros(len(self.index) + 2)
        shared = tokens(profile) & tokens(option)
        for word in shared:
            if word in self.index:
                x[self.index[word]] = 1.0
        x[-2], x[-1] = len(shared), 1.0  # shared-word count, bias
        return x

    def _pairs(self, item: dict) -> np.ndarray:
        profile = item["meta"]["profile"][item["meta"]["name"]]
        return np.stack([self.features(profile, text) for text in item["choices"].values()])

    def fit(self, items: list[dict]) -> BowLogReg:
        x = np.concatenate([self._pairs(it) for it in items])
        y = np.concatenate([[float(k in it["label"]) for k in it["choices"]] for it in items])
        for _ in range(self.steps):
            p = 1 / (1 + np.exp(-(x @ self.w)))
            self.w -= self.lr * (x.T @ (p - y) / len(y) + self.l2 * self.w)
        return self

    def __call__(self, item: dict) -> str:
        return list(item["choices"])[int(np.argmax(self._pairs(item) @ self.w))]


def accuracy(agent, items: list[dict]) -> float:
    """100 x mean official score of the agent's letter, graded through the real prompt + scorer path."""
    scores = []
    for it in items:
        build_prompt(it)  # every synthetic item must render with the official template
        scores.append(score_item(it, agent(it)))
    return 100 * sum(s for s in scores if s is not None) / len(scores)


def individual_vs_group(seed: int = 0, n_items: int = 400, n_train: int = 200) -> dict[str, dict[str, float]]:
    """agent -> {"SA": accuracy, "SP": accuracy}; the LR agent's SA accuracy is on held-out items."""
    sa, sp = make_sa_items(n_items, seed), make_sp_items(n_items, seed)
    rng = random.Random(seed)
    vocab = sorted({w for it in sa + sp for p in it["meta"]["profile"].values() for w in tokens(p)})
    logreg = BowLogReg(vocab).fit(sa[:n_train])
    return {
        "random-letter": {
            "SA": accuracy(lambda it: random_agent(it, rng), sa),
            "SP": accuracy(lambda it: random_agent(it, rng), sp),
        },
        "overlap-agent": {"SA": accuracy(overlap_agent, sa), "SP": accuracy(overlap_agent, sp)},
        "bow-logreg": {"SA": accuracy(logreg, sa[n_train:]), "SP": accuracy(logreg, sp)},
    }


def memory_check(n: int = 50, seed: int = 0) -> dict[str, float]:
    """Synthetic memory items with 2-3 keywords and replies holding a known number of them.

    Returns the largest |computed recall - known fraction| (must be 0), and whether an empty reply is
    undefined (1.0) or not (0.0).
    """
    rng = random.Random(seed)
    vocab = _words(100, rng, 3)
    worst = 0.0
    for _ in range(n):
        keywords = rng.sample(vocab, rng.choice((2, 3)))
        hits = rng.randint(0, len(keywords))
        said = [k.upper() if rng.random() < 0.5 else k for k in keywords[:hits]]  # case must not matter
        reply = "Well, " + " and ".join(said) + " come to mind." if said else "I do not remember."
        worst = max(worst, abs(keyword_recall(reply, keywords) - hits / len(keywords)))
    return {"max_abs_error": worst, "empty_is_undefined": float(keyword_recall("", ["x"]) is None)}
