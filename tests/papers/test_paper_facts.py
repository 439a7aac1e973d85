"""Each paper folder's facts: published.csv equals the spec's, claims.yaml names real rows."""

import csv
import filecmp
from collections import Counter
from pathlib import Path

import pytest

from common import claims as claims_mod
from common import results

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "papers"
# Published deltas recomputed by hand from the spec's text (abstract / claim sections).
EXPECTED_DELTAS = {
    ("qrm", "reinforce_qrm_beats_orm"): 4.70,
    ("qrm", "ppo_qrm_beats_orm"): 5.85,
    ("qrm", "reinforce_qrm_beats_dpo_rm"): 5.73,
    ("qrm", "ppo_qrm_beats_dpo_rm"): 4.56,
    ("qrm", "qrm_converges_faster_than_orm"): 12.0,
    ("qrm", "qrm_converges_faster_than_step_prm"): 11.0,
    ("socialbench", "llama2_70b_beats_13b"): 48.83 - 43.11,
    ("socialbench", "llama2_13b_beats_7b"): 43.11 - 33.80,
    ("ipvrm", "ipvrm_processbench_beats_implicit_prm"): 39.1 - 25.4,
    ("ipvrm", "distrl_beats_grpo_with_ipvrm"): 16.7 - 16.3,
    ("ipvrm", "distrl_raises_rm_score"): -0.140 - -0.181,
    ("proxykd", "proxykd_beats_blackbox_kd"): 56.78 - 53.66,
    ("proxykd", "proxy_alignment_matters"): -10.40,
    ("adkd", "adkd_beats_mgskd"): 1.9,
    ("socialbench", "closed_beats_best_open"): 79.39 - 73.97,
    ("umi", "umi_beats_single_llm_act_em"): 58.94 - 53.26,
}


@pytest.mark.parametrize("slug", list(results.PAPERS))
def test_published_csv_is_the_specs(slug):
    ours = REPO / "papers" / slug / "published.csv"
    theirs = SHARED / f"{slug}.published.csv"
    if not theirs.exists():
        pytest.skip("../shared is not beside this checkout")
    assert filecmp.cmp(ours, theirs, shallow=False)
    with open(ours, newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames) == results.RESULT_COLUMNS


@pytest.mark.parametrize("slug", list(results.PAPERS))
def test_claims_name_existing_rows_and_sensible_deltas(slug):
    claims = claims_mod.load_claims(slug)
    published = results.load_published(slug)
    # a paper's headline claims, the spec's orderings (issue 21 added qrm's and socialbench's) and the
    # calibration arms that must win (ipvrm's Best-of-N has one per RM): at most 12 per results folder (a
    # separately run part, `part:`, such as lco's toy-dense, has its own)
    per_part = Counter(c.get("part") for c in claims)
    assert (
        per_part[None] >= 2 and max(per_part.values()) <= 12 and len({c["id"] for c in claims}) == len(claims)
    )
    for claim in claims:
        block = claim["published"]
        delta = claims_mod.block_delta(block, published)
        if "unavailable" in block:
            assert delta is None
            continue
        assert delta is not None, f"{slug}/{claim['id']}: its published rows are not in published.csv"
        expected = EXPECTED_DELTAS.get((slug, claim["id"]))
        if expected is not None:
            assert delta == pytest.approx(expected, abs=1e-6)
        if "delta_method" not in block:  # the published direction agrees with the claim's
            assert (delta > 0) == (claim["direction"] == "higher"), claim["id"]
        toy = claim["toy"]
        assert {"method", "baseline"} <= set(toy) or "unavailable" in toy or "delta_method" in toy, claim[
            "id"
        ]
    # every paper can check at least one of its claims at toy scale
    assert any("unavailable" not in c["toy"] for c in claims)


@pytest.mark.parametrize("slug", list(results.PAPERS))
def test_readme_has_claim_citation_deviations_and_generated_block(slug):
    text = (REPO / "papers" / slug / "README.md").read_text()
    assert results.PAPER_BLOCK[0] in text and results.PAPER_BLOCK[1] in text
    if slug == "socialbench":  # its README is written by the paper's own engineer
        return
    assert "## Claim" in text and "arXiv:" in text and f"make reproduce PAPER={slug}" in text
    deviations = text.split("## Deviations", 1)[1]
    assert deviations.count("\n- ") >= 3, "the spec's code-vs-paper deviations, as bullets"
