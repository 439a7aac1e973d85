"""alpha-UMi text formats: the prompt templates, history serialisation, slot filling and the parsers of
planner and caller outputs (spec "Method": "Roles and control flow", C, "Prompt formats").

Every string here is the official one (GLPFT/utils/prompt_lib.py, via the spec), typos included
("assess", "Base on"): the released models were trained on them. Slots are filled by plain string
replacement in the order {doc} -> {tool_names} -> {history} -> {thought}, never `str.format` (tool docs
and arguments hold JSON braces).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

EOS_TEXT = "</s>"
"""The literal end-of-turn string inside histories (a LLaMA tokenizer maps it to the EOS id)."""
NEXT_CALLER, NEXT_CONCLUSION, NEXT_GIVE_UP = "Next: caller.", "Next: conclusion.", "Next: give up."
CONTROL_TOKENS = (NEXT_CALLER, NEXT_CONCLUSION, NEXT_GIVE_UP)
ROLES = ("backbone", "planner", "caller", "summarizer")
TURN_ROLES = ("user", "assistant", "caller", "conclusion", "observation")

_APIS = "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\n"
_ACTION = (
    "Action: the name of api that should be called in this step, should be exactly in [{tool_names}],\n"
    "Action Input: the api call request."
)
TEMPLATES = {
    "toolbench_backbone": _APIS
    + "You should answer the action of next step in the following format:\nThe thought to solve the question,\n"
    + _ACTION
    + "\nOnce you think the question is finished, output conclusion: the final answer of the question or "
    "give up if you think you cannot answer this question.\n",
    "toolbench_planner": _APIS
    + "You are the assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\n"
    "Answer with a following format:\nThe thought of the next step, followed by Next: caller or conclusion "
    "or give up.",
    "toolbench_caller": _APIS
    + "The thought of this step is:\n{thought}\nBase on the thought make an api call in the following format:\n"
    + _ACTION,
    "toolbench_summarizer": "Make a conclusion based on the conversation history:\n{history}",
}
"""The four ToolBench templates, exact text (spec "Prompt formats")."""
SUFFIX = {
    "backbone": " assistant: ",
    "planner": " assistant: ",
    "caller": " caller: ",
    "summarizer": " conclusion: ",
}
"""The role suffix appended to a filled template."""
TRAIN_PREFIX = "system: "
"""Official training prepends this to every input; official inference does not (spec, mismatch 1)."""


class FormatError(ValueError):
    """A turn or role the formats do not know; the message names it."""


def render_doc(tools: Sequence[dict]) -> str:
    """`{doc}`: one `json.dumps(tool)` a line, each followed by a newline."""
    return "".join(json.dumps(tool) + "\n" for tool in tools)


def tool_names(tools: Sequence[dict]) -> str:
    """`{tool_names}`: the tools' `Name`s joined by ", "."""
    return ", ".join(tool["Name"] for tool in tools)


def serialize_history(turns: Sequence[dict]) -> str:
    """`{history}` (spec C): `role: value</s>` per turn, observations without the `</s>`."""
    parts = []
    for i, turn in enumerate(turns):
        role = turn.get("from")
        if role not in TURN_ROLES:
            raise FormatError(f"history turn {i}: unknown role {role!r}; valid: {', '.join(TURN_ROLES)}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise FormatError(f"history turn {i} ({role}): 'value' is not a string")
        parts.append(f"{role}: {value}" + ("" if role == "observation" else EOS_TEXT))
    return "".join(parts)


def fill(template: str, tools: Sequence[dict], history: str, thought: str = "") -> str:
    """Plain replacement, in the official order {doc} -> {tool_names} -> {history} -> {thought}."""
    out = template.replace("{doc}", render_doc(tools)).replace("{tool_names}", tool_names(tools))
    return out.replace("{history}", history).replace("{thought}", thought)


def role_prompt(
    role: str, tools: Sequence[dict], history: str, thought: str = "", train: bool = False
) -> str:
    """The model input of one role: template filled + role suffix; `train` adds the official "system: "
    prefix (the official code does so only at training time)."""
    if role not in SUFFIX:
        raise FormatError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    text = fill(TEMPLATES[f"toolbench_{role}"], tools, history, thought) + SUFFIX[role]
    return TRAIN_PREFIX + text if train else text


def route_planner(text: str, static: bool = True) -> tuple[str, str]:
    """(route, planner text cut after its marker) in the official priority order: give up > conclusion >
    caller. No marker means caller, with "Next: caller." appended (static eval: no space; real-time: " ")."""
    for route, marker in (("give up", NEXT_GIVE_UP), ("conclusion", NEXT_CONCLUSION)):
        if marker in text:
            return route, text[: text.index(marker) + len(marker)]
    if NEXT_CALLER in text:
        return "caller", text[: text.index(NEXT_CALLER) + len(NEXT_CALLER)]
    return "caller", text + ("" if static else " ") + NEXT_CALLER


def is_empty_output(text: str) -> bool:
    """The official "empty" planner output: "", "." or "," (after strip)."""
    return text.strip() in ("", ".", ",")


def parse_call(text: str) -> tuple[str, str]:
    """(action, action input) of a caller output: the text after the last "Action:" cut before any
    "Action Input:" ("none" if missing), and the text after the last "Action Input:" ("{}" if missing)."""
    action, args = "none", "{}"
    if "Action Input:" in text:
        args = text.rsplit("Action Input:", 1)[1].strip()
    if "Action:" in text:
        action = text.rsplit("Action:", 1)[1].split("Action Input:", 1)[0].strip()
    return action, args
