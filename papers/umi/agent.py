"""The agents: static teacher-forced step prediction (Table 1) and the live loop over a tool world.

An `Agent` holds one text generator per role (`roles[r](prompts) -> outputs`, batched); `mode="multi"`
is alpha-UMi (planner -> caller | summarizer, spec "Roles and control flow"), `mode="backbone"` the
single-LLM ReAct format (one model writes "thought\\nAction: ..." or "thought\\nconclusion: ...").

Prompt consistency (spec: the official train/inference mismatches): `prefix` is prepended at inference
as it was at training (ours; the official static eval drops "system: "), and the caller's / summarizer's
history ends with `<planner_tag>: <planner text></s>` (ours "assistant", as training; official static
eval "planner"). Both official behaviours are one setting away (config.EvalConfig).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from papers.umi.formats import (
    EOS_TEXT,
    NEXT_CALLER,
    NEXT_CONCLUSION,
    NEXT_GIVE_UP,
    SUFFIX,
    TEMPLATES,
    fill,
    is_empty_output,
    parse_call,
    route_planner,
    serialize_history,
)
from papers.umi.preprocess import backbone_history

Generate = Callable[[list[str]], list[str]]


@dataclass
class Agent:
    roles: dict[str, Generate]
    mode: str = "multi"
    templates: dict | None = None
    prefix: str = ""
    planner_tag: str = "assistant"

    def prompt(self, role: str, tools, history: str, thought: str = "") -> str:
        template = (self.templates or TEMPLATES)[f"toolbench_{role}"]
        return self.prefix + fill(template, tools, history, thought) + SUFFIX[role]

    def step(self, items: Sequence[dict]) -> list[dict]:
        """One agent step for each item {tools, history (role turns)}: {route, planner, caller | answer,
        prediction (the official prediction string)}."""
        if self.mode == "backbone":
            return self._backbone_step(items)
        hists = [serialize_history(it["history"]) for it in items]
        raw = self.roles["planner"]([self.prompt("planner", it["tools"], h) for it, h in zip(items, hists)])
        out = []
        for text in raw:
            route, planner = route_planner("none" if is_empty_output(text) else text.strip())
            out.append({"route": route, "planner": planner})
        for route, role, tag in (("caller", "caller", "caller"), ("conclusion", "summarizer", "conclusion")):
            idx = [k for k, o in enumerate(out) if o["route"] == route]
            if not idx:
                continue
            prompts = []
            for k in idx:
                hist = hists[k] + f"{self.planner_tag}: {out[k]['planner']}{EOS_TEXT}"
                thought = out[k]["planner"] if role == "caller" else ""
                prompts.append(self.prompt(role, items[k]["tools"], hist, thought))
            for k, text in zip(idx, self.roles[role](prompts)):
                out[k]["text"] = text.strip()
                out[k]["prediction"] = f"asssitant: {out[k]['planner']}{EOS_TEXT}{tag}: {text.strip()}"
        for o in out:
            o.setdefault("prediction", o["planner"])
        return out

    def _backbone_step(self, items: Sequence[dict]) -> list[dict]:
        prompts = [
            self.prompt("backbone", it["tools"], serialize_history(backbone_history(it["history"])))
            for it in items
        ]
        out = []
        for text in self.roles["backbone"](prompts):
            text = text.strip()
            if "conclusion: give up" in text:
                thought = text.split("conclusion: give up")[0].strip()
                out.append({"route": "give up", "planner": f"{thought}\n {NEXT_GIVE_UP}"})
                out[-1]["prediction"] = out[-1]["planner"]
            elif "conclusion: " in text:
                thought, answer = text.split("conclusion: ", 1)
                planner = f"{thought.strip()}\n {NEXT_CONCLUSION}"
                out.append({"route": "conclusion", "planner": planner, "text": answer.strip()})
                out[-1]["prediction"] = f"asssitant: {planner}{EOS_TEXT}conclusion: {answer.strip()}"
            else:
                thought, _, call = text.partition("Action:")
                planner = f"{thought.strip()}\n {NEXT_CALLER}"
                call = "Action:" + call if call else ""
                out.append({"route": "caller", "planner": planner, "text": call})
                out[-1]["prediction"] = f"asssitant: {planner}{EOS_TEXT}caller: {call}"
        return out


def predict_static(agent: Agent, steps: Sequence[dict], batch: int = 64) -> list[dict]:
    """Teacher-forced predictions for the static test steps: step + {prediction}."""
    out = []
    for s in range(0, len(steps), batch):
        chunk = steps[s : s + batch]
        for step, pred in zip(chunk, agent.step(chunk)):
            out.append({**step, "prediction": pred["prediction"], "route": pred["route"]})
    return out


def run_live(agent: Agent, world, queries: Sequence[dict], max_steps: int = 8) -> list[dict]:
    """The live loop: planner, caller and summarizer act on `world.call` until a conclusion, a give-up
    or `max_steps` planner turns. Pass (deterministic world, no judge): the answer equals the gold answer,
    or the agent gives up where the gold trajectory gives up."""
    states = [
        {"tools": q["tools"], "history": [{"from": "user", "value": q["instruction"]}]} for q in queries
    ]
    results: list[dict | None] = [None] * len(queries)
    for _ in range(max_steps):
        live = [k for k, r in enumerate(results) if r is None]
        if not live:
            break
        for k, pred in zip(live, agent.step([states[k] for k in live])):
            hist = states[k]["history"]
            hist.append({"from": "assistant", "value": pred["planner"]})
            if pred["route"] == "give up":
                results[k] = {"answer": None, "steps": len(hist)}
            elif pred["route"] == "conclusion":
                results[k] = {"answer": pred.get("text", ""), "steps": len(hist)}
            else:
                action, args = parse_call(pred.get("text", ""))
                hist.append({"from": "caller", "value": pred.get("text", "")})
                hist.append({"from": "observation", "value": world.call(action, args)})
    out = []
    for q, r in zip(queries, results):
        answer = r["answer"] if r else "unfinished"
        passed = answer == q["answer"] if r else False
        out.append({"instruction": q["instruction"], "gold": q["answer"], "answer": answer, "pass": passed})
    return out
