"""One trajectory -> per-role SFT samples, the official GLPFT preprocessing as the spec's rules A-D.

    conv = stage2_conversation(stage1_record)            # B: [{from, value}] in planner/caller/... form
    samples = role_samples(tools, conv, "planner")       # D: [{tools, history, input, target}]

Verified string-identical against the shipped example (`../shared/data/umi/toolbench/train-example/`,
tests/papers/umi/test_umi_preprocess.py): stage 2 for 20/20 trajectories, every input and target of
train_{backbone,planner,caller,summarizer}.json (79 / 79 / 59 / 14).

Official bug (d), the stale backbone give-up input, is reproduced by `stale_giveup_input=True` (what
the shipped file holds); the default (False) uses the current history. Bug (c), the stage-1 slice to 20
trajectories, lives in the official driver, not in these per-record functions: we never slice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from papers.umi.formats import (
    NEXT_CALLER,
    NEXT_CONCLUSION,
    NEXT_GIVE_UP,
    ROLES,
    SUFFIX,
    TEMPLATES,
    TURN_ROLES,
    FormatError,
    fill,
    serialize_history,
)

HALLUCINATED = "invalid_hallucination_function_name"
"""ToolBench's marker for a call to a tool that does not exist; such steps give no planner/caller sample."""
_RESPONSE_KEY = '"response":'
_ANSWER_KEY = '"final_answer":'


class TrajectoryError(ValueError):
    """A trajectory the rules cannot convert; the message names the record and the problem."""


def stage1_tool(tool: dict) -> dict:
    """Rule A: {"Name": name[-64:], "function": description[:256], "input": {arg: "<type>, <desc[-256:]>"}}
    from a ToolBench function (`name`, `description`, `parameters.properties`)."""
    props = (tool.get("parameters") or {}).get("properties") or {}
    inputs = {}
    for arg, spec in props.items():
        kind = spec.get("type", "")
        desc = spec.get("description")
        inputs[arg] = f"{kind}, {desc[-256:]}" if desc is not None else kind
    return {"Name": tool["name"][-64:], "function": (tool.get("description") or "")[:256], "input": inputs}


def observation_text(content: str) -> str:
    """Rule B: a function message's JSON "response" field; on broken JSON, the text after `"response":`
    (what the shipped example holds: a slice keeping the leading space and quote); "" if absent."""
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError:
        at = content.find(_RESPONSE_KEY)
        return content[at + len(_RESPONSE_KEY) :] if at >= 0 else ""
    return parsed.get("response", "") if isinstance(parsed, dict) else ""


def final_answer(arguments: str, content: str | None) -> str:
    """Rule B: the Finish call's final answer: JSON field, else a string slice after `"final_answer":`
    (UNCONFIRMED: every example parses as JSON), else the content, else "none"."""
    try:
        parsed = json.loads(arguments)
        if isinstance(parsed, dict) and isinstance(parsed.get("final_answer"), str):
            return parsed["final_answer"]
    except json.JSONDecodeError:
        at = arguments.find(_ANSWER_KEY)
        if at >= 0:
            return arguments[at + len(_ANSWER_KEY) :].strip().strip('"}\n ').strip()
    return content if content else "none"


def _is_give_up(arguments: str) -> bool:
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return "give_up_and_restart" in arguments
    return isinstance(parsed, dict) and parsed.get("return_type") == "give_up_and_restart"


def stage2_conversation(record: dict, where: str = "trajectory") -> list[dict]:
    """Rule B: a stage-1 record {tools, instruction, chains} -> the role conversation."""
    for key in ("instruction", "chains"):
        if key not in record:
            raise TrajectoryError(f"{where}: no {key!r} field")
    conv = [{"from": "user", "value": record["instruction"]}]
    for i, msg in enumerate(record["chains"][2:], start=2):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "assistant":
            call = msg.get("function_call")
            if not call:
                continue  # content-only assistant messages are dropped (official)
            content = msg.get("content")
            span = content + "\n" if content is not None else ""
            name, arguments = call.get("name"), call.get("arguments", "")
            if not isinstance(name, str) or not isinstance(arguments, str):
                raise TrajectoryError(
                    f"{where} message {i}: function_call needs string 'name' and 'arguments'"
                )
            if name == "Finish" and _is_give_up(arguments):
                conv.append({"from": "assistant", "value": span + " " + NEXT_GIVE_UP})
            elif name == "Finish":
                conv.append({"from": "assistant", "value": span + " " + NEXT_CONCLUSION})
                conv.append({"from": "conclusion", "value": final_answer(arguments, content)})
            else:
                conv.append({"from": "assistant", "value": span + " " + NEXT_CALLER})
                conv.append({"from": "caller", "value": f"Action: {name}\nAction Input: {arguments}"})
        elif role == "user":
            conv.append({"from": "user", "value": msg.get("content") or ""})
        elif role == "function":
            conv.append({"from": "observation", "value": observation_text(msg.get("content") or "")})
        else:
            raise TrajectoryError(
                f"{where} message {i}: unknown role {role!r}; valid: assistant, user, function"
            )
    return conv


def _thought(value: str) -> str:
    """The assistant value with its Next-marker removed, stripped (the backbone's thought)."""
    for marker in (NEXT_GIVE_UP, NEXT_CONCLUSION, NEXT_CALLER):
        value = value.replace(marker, "")
    return value.strip()


def _check_turns(conv: Sequence[dict], where: str) -> None:
    if not any(isinstance(t, dict) and t.get("from") == "assistant" for t in conv):
        raise TrajectoryError(f"{where}: no assistant turn")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise TrajectoryError(f"{where} turn {i}: needs string 'from' and 'value'")
        if turn.get("from") not in TURN_ROLES:
            raise TrajectoryError(
                f"{where} turn {i}: unknown role {turn.get('from')!r}; valid: {', '.join(TURN_ROLES)}"
            )


def role_samples(
    tools: Sequence[dict],
    conv: Sequence[dict],
    role: str,
    stale_giveup_input: bool = False,
    where: str = "trajectory",
    templates: dict[str, str] = TEMPLATES,
) -> list[dict]:
    """Rule D: the SFT samples {tools, history, input, target} of one role from one conversation.

    `input` is template + suffix *without* the training prefix (the shipped files hold it so; the
    training collator adds "system: "). `stale_giveup_input`: official bug (d) for the backbone."""
    if role not in ROLES:
        raise FormatError(f"{where}: unknown role {role!r}; valid: {', '.join(ROLES)}")
    _check_turns(conv, where)
    try:
        if role == "backbone":
            return _backbone_samples(tools, conv, stale_giveup_input, templates)
        return _split_samples(tools, conv, role, templates)
    except FormatError as err:
        raise TrajectoryError(f"{where}: {err}") from None


def _split_samples(tools: Sequence[dict], conv: Sequence[dict], role: str, templates: dict) -> list[dict]:
    template, out = templates[f"toolbench_{role}"], []
    for i, turn in enumerate(conv):
        history = list(conv[:i])
        nxt = conv[i + 1] if i + 1 < len(conv) else {}
        value, kind = turn["value"], turn["from"]
        if role == "planner" and kind == "assistant":
            to_role = nxt.get("from") in ("caller", "conclusion") or NEXT_GIVE_UP in value
            if not to_role or (nxt.get("from") == "caller" and HALLUCINATED in nxt["value"]):
                continue
            prompt = fill(template, tools, serialize_history(history))
        elif role == "caller" and kind == "caller" and HALLUCINATED not in value:
            prompt = fill(template, tools, serialize_history(history), history[-1]["value"])
        elif role == "summarizer" and kind == "conclusion" and value != "none":
            prompt = fill(template, tools, serialize_history(history))
        else:
            continue
        out.append(
            {"tools": list(tools), "history": history, "input": prompt + SUFFIX[role], "target": value}
        )
    return out


def backbone_target(conv: Sequence[dict], i: int) -> str | None:
    """The backbone (single-LLM) target of assistant turn i: thought + "\n" + caller value, or
    thought + "\nconclusion: " + answer, or thought + "\nconclusion: give up."; None for no step."""
    value = conv[i]["value"]
    nxt = conv[i + 1] if i + 1 < len(conv) else {}
    thought = _thought(value)
    if nxt.get("from") == "caller":
        return thought + "\n" + nxt["value"]
    if nxt.get("from") == "conclusion":
        return thought + "\nconclusion: " + nxt["value"]
    if NEXT_GIVE_UP in value:
        return thought + "\nconclusion: give up."
    return None


def backbone_history(conv: Sequence[dict]) -> list[dict]:
    """The backbone history of a conversation prefix: user and observation turns as they are, one
    `assistant: <backbone target>` per step, no separate caller / conclusion turns."""
    flat = []
    for i, turn in enumerate(conv):
        if turn["from"] in ("user", "observation"):
            flat.append({"from": turn["from"], "value": turn["value"]})
        elif turn["from"] == "assistant":
            target = backbone_target(conv, i)
            if target is not None:
                flat.append({"from": "assistant", "value": target})
    return flat


def _backbone_samples(
    tools: Sequence[dict], conv: Sequence[dict], stale_giveup_input: bool, templates: dict
) -> list[dict]:
    template, out = templates["toolbench_backbone"], []
    flat: list[dict] = []  # the backbone history: one combined assistant turn per step
    last_input = None
    for i, turn in enumerate(conv):
        kind, value = turn["from"], turn["value"]
        nxt = conv[i + 1] if i + 1 < len(conv) else {}
        if kind in ("user", "observation"):
            flat.append({"from": kind, "value": value})
            continue
        if kind != "assistant":
            continue  # caller / conclusion turns are folded into the assistant step
        target = backbone_target(conv, i)
        if target is None:
            continue
        prompt = fill(template, tools, serialize_history(flat)) + SUFFIX["backbone"]
        if NEXT_GIVE_UP in value and nxt.get("from") not in ("caller", "conclusion") and stale_giveup_input:
            prompt = last_input if last_input is not None else prompt  # official bug (d)
        out.append({"tools": list(tools), "history": list(conv[:i]), "input": prompt, "target": target})
        last_input = prompt
        flat.append({"from": "assistant", "value": target})
    return out


def trajectory_samples(
    record: dict, stale_giveup_input: bool = False, where: str = "trajectory", templates: dict = TEMPLATES
) -> dict:
    """All four roles' samples of one stage-2 record {tools, conversations}."""
    for key in ("tools", "conversations"):
        if key not in record:
            raise TrajectoryError(f"{where}: no {key!r} field")
    return {
        role: role_samples(
            record["tools"], record["conversations"], role, stale_giveup_input, where, templates
        )
        for role in ROLES
    }
