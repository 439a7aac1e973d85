"""Rules B-D against the shipped example files: string identity, counts, target formats, routing."""

import pytest

from papers.umi.formats import CONTROL_TOKENS, FormatError, fill, route_planner, serialize_history
from papers.umi.preprocess import stage1_tool, stage2_conversation, trajectory_samples

ROLES = ("backbone", "planner", "caller", "summarizer")
STALE_GIVEUP = [6, 31, 36, 41, 60, 74]  # the backbone give-up samples (official bug d)


def _samples(stage2, stale):
    out = {r: [] for r in ROLES}
    for rec in stage2:
        for role, rows in trajectory_samples(rec, stale).items():
            out[role] += rows
    return out


def test_stage2_is_string_identical_to_the_shipped_conversations(shipped):
    got = [stage2_conversation(rec) for rec in shipped["stage1"]]
    assert got == [rec["conversations"] for rec in shipped["stage2"]]


@pytest.mark.parametrize("stale", [True, False])
def test_role_samples_are_string_identical_to_the_shipped_files(shipped, stale):
    got = _samples(shipped["stage2"], stale)
    assert {r: len(v) for r, v in got.items()} == {
        "backbone": 79,
        "planner": 79,
        "caller": 59,
        "summarizer": 14,
    }
    for role in ROLES:
        for k, (mine, ref) in enumerate(zip(got[role], shipped[role], strict=True)):
            assert mine["target"] == ref["target"], (role, k)
            assert mine["history"] == ref["history"] and mine["tools"] == ref["tools"], (role, k)
            if role == "backbone" and k in STALE_GIVEUP and not stale:
                assert mine["input"] != ref["input"]  # the fix: the current history, not the stale input
                assert mine["input"] != got[role][k - 1]["input"]
            else:
                assert mine["input"] == ref["input"], (role, k)
    if stale:
        assert all(got["backbone"][k]["input"] == got["backbone"][k - 1]["input"] for k in STALE_GIVEUP)


def test_target_formats_and_history_invariants(shipped):
    got = _samples(shipped["stage2"], False)
    plans = [s["target"] for s in got["planner"]]
    assert all(t.endswith(CONTROL_TOKENS) for t in plans)
    assert [sum(t.endswith(c) for t in plans) for c in CONTROL_TOKENS] == [59, 14, 6]
    assert all(
        t.startswith("Action: ") and "\nAction Input: " in t for t in (s["target"] for s in got["caller"])
    )
    assert all(s["input"].endswith(" conclusion: ") for s in got["summarizer"])
    for rec in shipped["stage2"]:
        text = serialize_history(rec["conversations"])
        for turn in rec["conversations"]:
            if turn["from"] == "observation":
                assert f"observation: {turn['value']}</s>" not in text


def test_planner_routing_priority():
    assert route_planner("a Next: give up. Next: caller.")[0] == "give up"
    assert route_planner("x Next: conclusion. y")[1] == "x Next: conclusion."
    assert route_planner("no marker") == ("caller", "no markerNext: caller.")
    assert route_planner("no marker", static=False) == ("caller", "no marker Next: caller.")


def test_fill_is_plain_replacement_with_braces():
    tools = [{"Name": "t", "input": {"a": "{x}"}}]
    out = fill("{doc}|{tool_names}|{history}|{thought}", tools, "h {doc}", "{")
    assert out == '{"Name": "t", "input": {"a": "{x}"}}\n|t|h {doc}|{'


def test_stage1_tool_rewrite():
    tool = {
        "name": "x" * 70,
        "description": "d" * 300,
        "parameters": {
            "properties": {"q": {"type": "string", "description": "e" * 300}, "n": {"type": "number"}}
        },
    }
    out = stage1_tool(tool)
    assert out["Name"] == "x" * 64 and out["function"] == "d" * 256
    assert out["input"] == {"q": "string, " + "e" * 256, "n": "number"}


def test_unknown_role_in_history_is_named():
    with pytest.raises(FormatError, match="turn 1: unknown role 'robot'"):
        serialize_history([{"from": "user", "value": "q"}, {"from": "robot", "value": "x"}])
