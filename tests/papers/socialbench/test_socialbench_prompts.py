"""Prompt rendering for every category and both languages, and category normalisation."""

import json
from pathlib import Path

import pytest

from papers.socialbench.prompts import (
    ItemError,
    build_prompt,
    column_of,
    normalize_category,
    render_group_profiles,
)

EP_FILE = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "data"
    / "socialbench"
    / "emotional_perception.json"
)
DIALOGUE = [{"from": "User", "value": "hi"}, {"from": "Bob", "value": "hello there"}]
CHOICES = {"A": "one", "B": "two", "C": "three", "D": "four"}
CONV = "User: hi\nBob: hello there\n"
OPTS = "A. one\nB. two\nC. three\nD. four\n"


def item(category, lang="en", **meta):
    return {
        "dialogue": DIALOGUE,
        "instruction": "ignored",
        "choices": CHOICES,
        "label": ["A"],
        "meta": {
            "lang": lang,
            "category": category,
            "name": "Bob",
            "profile": {"Bob": "Bob is kind."},
            **meta,
        },
    }


def test_sa_english_and_chinese_exact():
    en = build_prompt(item("Individual-SA-RoleStyle"))
    assert en == (
        "\n==Profile==\nBob is kind.\n\n==Conversations==\n" + CONV + "\n\n"
        "You are playing the role of Bob, you need to embody the knowledge and style of Bob.\n"
        "Based on the provided role Profile and Conversations, please choose the best option (A, B, C, or D):\n"
        + OPTS
        + "\n\nYour selection:\n"
    )
    zh = build_prompt(item("Individual-SA-RoleKnowledge", lang="zh"))
    assert zh.startswith("\n==角色描述==\nBob is kind.\n\n==对话历史==\n" + CONV)
    assert (
        "请根据所给的Bob角色描述和对话历史，从下面四个选项（A. B. C.和D.）中选择符合Bob的选项：\n" + OPTS
        in zh
    )
    assert zh.endswith("\n你的选择：\n")
    # official: lang.lower() == "en": an upper-case "EN" is English, anything else Chinese
    en = build_prompt(item("Individual-SA-RoleKnowledge"))
    assert build_prompt(item("Individual-SA-RoleKnowledge", lang="EN")) == en
    assert build_prompt(item("Individual-SA-RoleKnowledge", lang=None)) == zh


def test_emotion_template_quotes_the_last_utterance():
    en = build_prompt(item("Individual-EP-DialogueEmotionDetect"))
    assert en == (
        "\n==Conversations==\n" + CONV + "\n\n"
        'Select the option () that best matches the mood in utterance "hello there". Single Choice\n'
        + OPTS
        + "\n\nYour selection:\n"
    )
    zh = build_prompt(item("Individual-EP-DialogueEmotionDetect", lang="zh"))
    assert '单选选择题，选择最符合"hello there"说话者当时心情的选项()\n' in zh
    assert zh.endswith("\n你的选择:\n")


@pytest.mark.parametrize(
    "category", ["Individual-EP-HumorSarcasmDetect", "Individual-EP-SituationUnderstanding"]
)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_humor_and_situation_have_no_template(category, lang):
    assert build_prompt(item(category, lang=lang)) == CONV + "\n" + OPTS


@pytest.mark.parametrize("category", ["Individual-MEM-Short", "Individual-MEM-Long", "Individual-MEM"])
def test_memory_template_for_every_memory_category(category):
    mem = item(category)
    del mem["choices"]
    en = build_prompt(mem)
    assert en.endswith(
        "you must produce a reply as the Assistant to response to the latest User's message "
        "(one term is enough):\nAssistant: \n"
    )
    zh = build_prompt({**mem, "meta": {**mem["meta"], "lang": "zh"}})
    assert zh.endswith("根据最后一个User的对话再补充一轮你作为Assistant的回复（一轮就好）：\nAssistant: \n")
    assert "==角色描述==\nBob is kind.\n" in zh


def test_category_normalisation_and_columns():
    assert column_of(item("Individual-MEM-Short")) == "CM Short"
    assert column_of(item("Individual-MEM-Long")) == "CM Long"
    short, long = item("Individual-MEM"), item("Individual-MEM")
    long["dialogue"] = DIALOGUE * 20  # 40 turns: the pre-release scorer's threshold
    short["dialogue"] = DIALOGUE * 19 + DIALOGUE[:1]  # 39 turns
    assert normalize_category(long) == "Individual-MEM-Long"
    assert normalize_category(short) == "Individual-MEM-Short"
    assert column_of(item("Individual-EP-HumorSarcasmDetect")) == "EP Emo."  # pooled with emotion
    assert column_of(item("Individual-EP-DialogueEmotionDetect")) == "EP Emo."
    assert column_of(item("Group-SAP-Negative")) == "SP Neg."


def test_group_profiles_keep_ten_lines_and_three_newlines_between():
    long = "\n\n".join(f"line{i}" for i in range(15))
    text = render_group_profiles({"Ann": long, "Bob": "b1\n\n\nb2"})
    first, second = text.split("\n\n\n")
    assert first.split("\n") == [f"line{i}" for i in range(10)]
    assert second == "b1\nb2"
    sp = item("Group-SAP-Positive", profile={"Ann": long, "Bob": "b1\n\n\nb2"})
    en = build_prompt(sp)
    assert en.startswith("\n==Profiles==\n" + text + "\n\n==Conversations==\n" + CONV + "\n\n")
    assert en.endswith("Your selection (You can only output A, B, C or D, and no other characters.):\n")
    zh = build_prompt({**sp, "meta": {**sp["meta"], "lang": "zh"}})
    assert "你要扮演Bob角色，你在聊天中要具备该角色对应的社交偏好。" in zh
    assert zh.endswith("你的选择（你只能输出A，B，C或D，不要输出其他单词。）：\n")


def test_bad_items_raise_one_clear_error():
    with pytest.raises(ItemError, match="unknown category 'Individual-XX'"):
        build_prompt(item("Individual-XX"))
    with pytest.raises(ItemError, match="unknown memory category"):
        build_prompt(item("Individual-MEM-Medium"))
    with pytest.raises(ItemError, match="no entry for meta.name 'Bob'"):
        build_prompt(item("Individual-SA-RoleStyle", profile={"Ann": "x"}))
    bad = item("Individual-SA-RoleStyle")
    del bad["choices"]
    with pytest.raises(ItemError, match="'choices' missing"):
        build_prompt(bad)
    with pytest.raises(ItemError, match=r"dialogue\[0\]"):
        build_prompt({**item("Individual-EP-HumorSarcasmDetect"), "dialogue": [{"value": "x"}]})


def test_every_real_ep_item_renders_deterministically():
    items = json.loads(EP_FILE.read_text(encoding="utf-8"))
    prompts = [build_prompt(it) for it in items]
    assert prompts == [build_prompt(it) for it in items]
    assert all(p.endswith("\n") for p in prompts)
    first_humor = next(it for it in items if it["meta"]["category"] == "Individual-EP-HumorSarcasmDetect")
    assert build_prompt(first_humor).startswith("User: 单选题。下面几个小故事中，哪个最幽默()。\n\nA. ")
