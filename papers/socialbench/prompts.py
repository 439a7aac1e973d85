"""SocialBench prompts: category normalisation and the official templates, both languages.

Every template below is the official evaluator's string (spec "Prompt templates"; official `dataset.py` at
commit 1287b67): each starts and ends with one newline. Language: `meta.lang == "en"` takes the English
template, anything else the Chinese one (official rule). The `instruction` field of an item is not used,
as in the official prompt builder.

Category normalisation (spec "Task categories"): any category starting with `Individual-MEM` takes the
memory path. The official code at HEAD compares with the exact string `Individual-MEM`, so it crashes on
the released memory file (whose categories are `Individual-MEM-Short` / `-Long`); we do not. The older
single category `Individual-MEM` is split by dialogue length (< 40 turns: short), as the pre-release
scorer did.
"""

from __future__ import annotations

import re

# The nine table columns, in the order of the published table (published.csv metric names).
COLUMNS = (
    "SA Style",
    "SA Know",
    "EP Situ.",
    "EP Emo.",
    "CM Short",
    "CM Long",
    "SP Pos.",
    "SP Neu.",
    "SP Neg.",
)

# meta.category -> (task kind, table column). EP Emo. pools DialogueEmotionDetect and HumorSarcasmDetect
# (pre-release scorer: every EP item that is not SituationUnderstanding).
CATEGORY_COLUMNS = {
    "Individual-SA-RoleStyle": ("sa", "SA Style"),
    "Individual-SA-RoleKnowledge": ("sa", "SA Know"),
    "Individual-EP-SituationUnderstanding": ("ep_plain", "EP Situ."),
    "Individual-EP-HumorSarcasmDetect": ("ep_plain", "EP Emo."),
    "Individual-EP-DialogueEmotionDetect": ("ep_emotion", "EP Emo."),
    "Individual-MEM-Short": ("memory", "CM Short"),
    "Individual-MEM-Long": ("memory", "CM Long"),
    "Group-SAP-Positive": ("sp", "SP Pos."),
    "Group-SAP-Neutral": ("sp", "SP Neu."),
    "Group-SAP-Negative": ("sp", "SP Neg."),
}
LEGACY_MEMORY_CATEGORY = "Individual-MEM"
LEGACY_LONG_MEMORY_TURNS = 40
"""Pre-release scorer: an `Individual-MEM` item with at least this many dialogue turns is CM Long."""


class ItemError(ValueError):
    """An item that cannot be rendered or scored: unknown category or a missing/ill-typed field."""


def normalize_category(item: dict) -> str:
    """The item's category in the released naming; `Individual-MEM*` always maps to a memory category."""
    category = _field(item, "meta.category", str)
    if category == LEGACY_MEMORY_CATEGORY:
        turns = len(_field(item, "dialogue", list))
        return "Individual-MEM-Long" if turns >= LEGACY_LONG_MEMORY_TURNS else "Individual-MEM-Short"
    if category.startswith(LEGACY_MEMORY_CATEGORY) and category not in CATEGORY_COLUMNS:
        raise ItemError(f"unknown memory category {category!r}; valid: Individual-MEM, -Short, -Long")
    if category not in CATEGORY_COLUMNS:
        raise ItemError(f"unknown category {category!r}; valid: {', '.join(CATEGORY_COLUMNS)}")
    return category


def task_kind(item: dict) -> str:
    """One of sa, ep_emotion, ep_plain, memory, sp."""
    return CATEGORY_COLUMNS[normalize_category(item)][0]


def column_of(item: dict) -> str:
    """The table column (one of COLUMNS) an item is averaged into."""
    return CATEGORY_COLUMNS[normalize_category(item)][1]


def _field(item: dict, path: str, kind: type):
    value = item
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ItemError(f"field {path!r} missing")
        value = value[key]
    if not isinstance(value, kind):
        raise ItemError(f"field {path!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def render_conversations(dialogue: list[dict]) -> str:
    """`"<from>: <value>\\n"` for every turn, in order."""
    parts = []
    for i, turn in enumerate(dialogue):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or "value" not in turn:
            raise ItemError(f"field 'dialogue[{i}]' needs string 'from' and 'value'")
        parts.append(f"{turn['from']}: {turn['value']}\n")
    return "".join(parts)


def render_options(choices: dict) -> str:
    """`"<letter>. <text>\\n"` for every choice, in dict order."""
    return "".join(f"{letter}. {text}\n" for letter, text in choices.items())


def render_group_profiles(profiles: dict, max_lines: int = 10) -> str:
    """Every profile with newline runs collapsed and cut to its first 10 lines, joined by three newlines."""
    shortened = []
    for text in profiles.values():
        lines = re.sub(r"\n+", "\n", str(text)).split("\n")
        shortened.append("\n".join(lines[:max_lines]))
    return "\n\n\n".join(shortened)


SA_EN = """
==Profile==
{role_profile}

==Conversations==
{conversations}

You are playing the role of {role_name}, you need to embody the knowledge and style of {role_name}.
Based on the provided role Profile and Conversations, please choose the best option (A, B, C, or D):
{options}

Your selection:
"""
SA_ZH = """
==角色描述==
{role_profile}

==对话历史==
{conversations}

你要扮演{role_name}角色，你在聊天中要具备该角色对应的知识背景，语气风格等特征。
请根据所给的{role_name}角色描述和对话历史，从下面四个选项（A. B. C.和D.）中选择符合{role_name}的选项：
{options}

你的选择：
"""
EMOTION_EN = """
==Conversations==
{conversations}

Select the option () that best matches the mood in utterance "{utterance}". Single Choice
{options}

Your selection:
"""
EMOTION_ZH = """
==对话历史==
{conversations}

单选选择题，选择最符合"{utterance}"说话者当时心情的选项()
{options}

你的选择:
"""
MEMORY_EN = (
    """
==Profile==
{role_profile}

==Conversations==
{conversations}

You are playing the role of {role_name}, you need to embody the knowledge and style of {role_name}.
Based on the provided role Profile and Conversations, you must produce a reply as the Assistant to response to the latest User's message (one term is enough):
Assistant:"""
    + " \n"
)  # the official template has a space after "Assistant:"
MEMORY_ZH = (
    """
==角色描述==
{role_profile}

==对话历史==
{conversations}

你要扮演{role_name}角色，你在聊天中要具备该角色对应的知识背景，语气风格等特征。
请根据所给的{role_name}角色描述和对话历史，根据最后一个User的对话再补充一轮你作为Assistant的回复（一轮就好）：
Assistant:"""
    + " \n"
)
SP_EN = """
==Profiles==
{role_profiles}

==Conversations==
{conversations}

You are playing the role of {role_name}, you need to embody the social preference of {role_name}.
Based on the provided role profile and conversations, please choose the best option (A, B, C, or D) as your response:
{options}

Your selection (You can only output A, B, C or D, and no other characters.):
"""
SP_ZH = """
==角色描述==
{role_profiles}

==对话历史==
{conversations}

你要扮演{role_name}角色，你在聊天中要具备该角色对应的社交偏好。
请根据所给的{role_name}角色描述和对话历史，从下面四个选项（A. B. C.和D.）中选择最优的选项作为你的回复：
{options}

你的选择（你只能输出A，B，C或D，不要输出其他单词。）：
"""
TEMPLATES = {
    "sa": (SA_EN, SA_ZH),
    "ep_emotion": (EMOTION_EN, EMOTION_ZH),
    "memory": (MEMORY_EN, MEMORY_ZH),
    "sp": (SP_EN, SP_ZH),
}


def build_prompt(item: dict) -> str:
    """The official zero-shot prompt of one item (a single user turn; the chat template comes later)."""
    kind = task_kind(item)
    dialogue = _field(item, "dialogue", list)
    conversations = render_conversations(dialogue)
    if kind == "ep_plain":  # Humor/Situ: no template, the question is inside the single User turn
        return conversations + "\n" + render_options(_field(item, "choices", dict))
    english = str(item["meta"].get("lang")).lower() == "en"  # official: lang.lower() == "en"
    template = TEMPLATES[kind][0 if english else 1]
    if kind == "ep_emotion":
        if not dialogue:
            raise ItemError("field 'dialogue' is empty; the emotion template quotes its last utterance")
        utterance = dialogue[-1]["value"]
        return template.format(
            conversations=conversations,
            utterance=utterance,
            options=render_options(_field(item, "choices", dict)),
        )
    name = _field(item, "meta.name", str)
    profiles = _field(item, "meta.profile", dict)
    if kind == "sp":
        return template.format(
            role_profiles=render_group_profiles(profiles),
            conversations=conversations,
            role_name=name,
            options=render_options(_field(item, "choices", dict)),
        )
    if name not in profiles:
        raise ItemError(f"field 'meta.profile' has no entry for meta.name {name!r}")
    fields = dict(role_profile=profiles[name], conversations=conversations, role_name=name)
    if kind == "sa":
        fields["options"] = render_options(_field(item, "choices", dict))
    return template.format(**fields)
