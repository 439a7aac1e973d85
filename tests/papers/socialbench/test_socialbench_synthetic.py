"""The synthetic individual-vs-group check and the memory-scorer check (spec "Toy-scale check" 2-3)."""

from collections import Counter

from papers.socialbench.prompts import build_prompt
from papers.socialbench.synthetic import (
    individual_vs_group,
    make_sa_items,
    make_sp_items,
    memory_check,
    overlap_agent,
    tokens,
)


def test_items_follow_the_official_schema_and_are_deterministic():
    sa, sp = make_sa_items(50, seed=0), make_sp_items(50, seed=0)
    assert sa == make_sa_items(50, seed=0) and sp == make_sp_items(50, seed=0)
    assert sa != make_sa_items(50, seed=1)
    for it in sa + sp:
        assert set(it) >= {"dialogue", "instruction", "choices", "label", "meta"}
        assert list(it["choices"]) == ["A", "B", "C", "D"] and it["label"][0] in "ABCD"
        assert it["meta"]["name"] in it["meta"]["profile"]
        build_prompt(it)
    assert len(sp[0]["meta"]["profile"]) == 3  # a group of three roles
    # the correct letter is spread over A-D, so "always A" or "first on ties" is at chance
    assert min(Counter(it["label"][0] for it in make_sp_items(400)).values()) > 70


def test_sp_options_carry_no_lexical_signal_from_the_own_profile():
    for it in make_sp_items(100):
        own = tokens(it["meta"]["profile"][it["meta"]["name"]])
        assert len({len(own & tokens(text)) for text in it["choices"].values()}) == 1
        assert overlap_agent(it) == "A"  # all tied: the overlap agent takes the first option


def test_individual_skill_does_not_imply_group_skill():
    acc = individual_vs_group(seed=0)
    assert acc["overlap-agent"]["SA"] >= 90 and abs(acc["overlap-agent"]["SP"] - 25) <= 6
    assert acc["bow-logreg"]["SA"] >= 80 and acc["bow-logreg"]["SP"] <= 35
    assert abs(acc["random-letter"]["SA"] - 25) <= 6 and abs(acc["random-letter"]["SP"] - 25) <= 6


def test_memory_scorer_recall_is_exact_and_empty_is_undefined():
    assert memory_check() == {"max_abs_error": 0.0, "empty_is_undefined": 1.0}
