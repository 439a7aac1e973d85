"""MiniToolBench (spec "Toy-scale check"): a seeded synthetic tool world, deterministic tools with
failures and backups, gold trajectories in the alpha-UMi conversation form, and a word-level tokenizer.

    world = MiniToolBench(seed=0)
    trajs = world.trajectories(n=600, split="train")     # [{tools, instruction, conversations, answer}]
    obs = world.call("get_weather_for_city", '{"city": "paris"}')   # "obs_get_weather_for_city_17" | "error"

- 16 tools, 8 intents (each a primary and a backup tool with the same arguments), argument types city
  (20), name (20), number (1-50), currency (6). A query asks 1-3 intents with the values inline.
- A call's observation is `obs_<tool>_<sha(tool, args) % 50>`; a call fails ("error") when
  sha(world seed, tool, args) % 100 < 15, so the same call always fails: p = 0.15 per tool. The gold plan
  retries a failed primary with the backup and gives up when both fail.
- The gold final answer is the observation tokens joined by spaces, in order.
A query's tool list is its intents' primaries and backups. The conversations are cut into role samples
by the production preprocessing (papers/umi/preprocess.py) with the toy templates of `TOY_TEMPLATES`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence

from papers.umi.formats import NEXT_CALLER, NEXT_CONCLUSION, NEXT_GIVE_UP

CITIES = tuple(
    [
        "paris",
        "rome",
        "oslo",
        "lima",
        "cairo",
        "delhi",
        "tokyo",
        "seoul",
        "quito",
        "dakar",
        "perth",
        "miami",
        "boston",
        "madrid",
        "vienna",
        "prague",
        "lagos",
        "hanoi",
        "dubai",
        "sofia",
    ]
)
NAMES = tuple(
    [
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "frank",
        "grace",
        "heidi",
        "ivan",
        "judy",
        "kevin",
        "laura",
        "mike",
        "nina",
        "oscar",
        "peggy",
        "quinn",
        "rita",
        "sam",
        "tina",
    ]
)
CURRENCIES = tuple(["usd", "eur", "gbp", "jpy", "cny", "inr"])
INTENTS = {  # intent noun: (primary, backup, argument types)
    "weather": ("get_weather_for_city", "fetch_forecast_by_city", ("city",)),
    "population": ("get_population_of_city", "lookup_census_for_city", ("city",)),
    "salary": ("get_salary_for_name", "estimate_pay_for_name", ("name", "currency")),
    "age": ("get_age_of_name", "lookup_birth_year_of_name", ("name",)),
    "price": ("convert_price_to_currency", "quote_amount_in_currency", ("number", "currency")),
    "news": ("get_news_for_city", "search_headlines_in_city", ("city",)),
    "email": ("get_email_of_name", "find_contact_for_name", ("name",)),
    "stock": ("get_stock_by_number", "lookup_ticker_number", ("number",)),
}
FAIL_PERCENT = 15
TOY_TEMPLATES = {
    "toolbench_backbone": "apis: {doc}history: {history}",
    "toolbench_planner": "apis: {doc}history: {history}",
    "toolbench_caller": "apis: {doc}history: {history}thought: {thought}",
    "toolbench_summarizer": "history: {history}",
}
"""Short toy templates with the official slots (the official text would triple the CPU cost)."""


def _sha(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def tool_doc(tool: str) -> dict:
    for primary, backup, kinds in INTENTS.values():
        if tool in (primary, backup):
            return {"Name": tool, "input": {k: "string" if k != "number" else "number" for k in kinds}}
    raise KeyError(tool)


class MiniToolBench:
    def __init__(self, seed: int = 0):
        self.seed = seed

    def call(self, tool: str, args_json: str) -> str:
        """Execute one call: "error" for an unknown tool, bad JSON or wrong arguments, or a seeded failure."""
        try:
            kinds = tool_doc(tool)["input"]
            args = json.loads(args_json)
        except (KeyError, json.JSONDecodeError):
            return "error"
        if not isinstance(args, dict) or sorted(args) != sorted(kinds):
            return "error"
        canon = json.dumps(args, sort_keys=True)
        if _sha(self.seed, tool, canon) % 100 < FAIL_PERCENT:
            return "error"
        return f"obs_{tool}_{_sha(tool, canon) % 50}"

    def _query(self, rng: random.Random) -> list[tuple[str, dict]]:
        picks = rng.sample(sorted(INTENTS), rng.randint(1, 3))
        values = {"city": CITIES, "name": NAMES, "currency": CURRENCIES}
        out = []
        for intent in picks:
            args = {}
            for kind in INTENTS[intent][2]:
                args[kind] = rng.randint(1, 50) if kind == "number" else rng.choice(values[kind])
            out.append((intent, args))
        return out

    def trajectory(self, rng: random.Random) -> dict:
        asks = self._query(rng)
        text = " and ".join(f"{i} of " + " in ".join(str(v) for v in a.values()) for i, a in asks)
        tools = [tool_doc(t) for i, _ in asks for t in INTENTS[i][:2]]
        conv, answers = [{"from": "user", "value": text}], []
        for intent, args in asks:
            primary, backup, _ = INTENTS[intent]
            obs = None
            for k, tool in enumerate((primary, backup)):
                why = f"use {tool} for {intent}" if k == 0 else f"{primary} failed so use {tool} for {intent}"
                conv.append({"from": "assistant", "value": f"{why}\n {NEXT_CALLER}"})
                conv.append({"from": "caller", "value": f"Action: {tool}\nAction Input: {json.dumps(args)}"})
                obs = self.call(tool, json.dumps(args))
                conv.append({"from": "observation", "value": obs})
                if obs != "error":
                    break
            if obs == "error":
                conv.append(
                    {"from": "assistant", "value": f"both tools failed for {intent}\n {NEXT_GIVE_UP}"}
                )
                return {"tools": tools, "instruction": text, "conversations": conv, "answer": None}
            answers.append(obs)
        conv.append({"from": "assistant", "value": f"all intents answered\n {NEXT_CONCLUSION}"})
        conv.append({"from": "conclusion", "value": " ".join(answers)})
        return {"tools": tools, "instruction": text, "conversations": conv, "answer": " ".join(answers)}

    def trajectories(self, n: int, split: str) -> list[dict]:
        rng = random.Random(_sha(self.seed, split))
        return [self.trajectory(rng) for _ in range(n)]


PHRASES = (
    "</s>", "Action Input:", "Action:", NEXT_CALLER, NEXT_CONCLUSION, NEXT_GIVE_UP, "assistant: ", "caller: ",
    "observation: ", "user: ", "conclusion: ", "system: ", "planner: ", "apis: ", "history: ", "thought: ",
)  # fmt: skip
_PATTERN = re.compile(
    "|".join(re.escape(p) for p in PHRASES) + r'| ?"[A-Za-z_]+"| ?[A-Za-z]+(?:_[A-Za-z]+)*|_?\d+|\s| ?[^\w\s]'
)
SPECIALS = ("<pad>", "<s>", "<unk>", "</s>")


class WordTokenizer:
    """Word-level tokenizer: the control phrases, quoted words, words (underscores inside), numbers,
    single whitespace and punctuation are tokens; decode(encode(x)) == x for text of the world.
    `</s>` in text is the EOS id, as a LLaMA tokenizer makes it (spec C)."""

    def __init__(self, texts: Iterable[str]):
        vocab = set()
        for text in texts:
            vocab.update(self.pieces(text))
        self.itos = [*SPECIALS, *sorted(vocab - set(SPECIALS))]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad_token_id, self.bos_token_id, self.unk_token_id = 0, 1, 2
        self.eos_token, self.eos_token_id = "</s>", self.stoi["</s>"]

    @staticmethod
    def pieces(text: str) -> list[str]:
        return _PATTERN.findall(text)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [self.stoi.get(p, self.unk_token_id) for p in self.pieces(text)]
        return [self.bos_token_id, *ids] if add_bos else ids

    def __call__(self, text: str) -> dict:
        return {"input_ids": self.encode(text)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        skip = {0, 1, self.eos_token_id} if skip_special_tokens else set()
        return "".join(self.itos[i] for i in ids if i not in skip)
