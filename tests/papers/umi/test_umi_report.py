"""The README's verdict block is rendered from provenance.json, never typed."""

import json
import shutil

import pytest

from common.results import ResultsError
from papers.umi.report import MARKERS, PAPER_DIR, render, write_block

CONDS = ("Single-LLM", "Single-LLM multi-task", "Multi-LLM one-stage", "alpha-UMi")


def _prov(umi_em=9.0):
    per_seed = {str(s): {c: {"pass rate": 10.0 * s + i} for i, c in enumerate(CONDS)} for s in range(3)}
    return {
        "scale": "toy", "commit": "abcdef0123456", "dirty": False, "seeds": [0, 1, 2], "wall_time_s": 125.0,
        "hardware": {"cpu_count": 2, "load_avg_15min": 1.5},
        "config": {"real": {"model": "smollm2-135m-instruct"}},
        "toy_criteria": {
            "(EM+F1)/2 alpha-UMi >= Single-LLM + 2": [umi_em, 5.0, umi_em >= 7.0],
            "(EM+F1)/2 alpha-UMi >= Multi-LLM one-stage": [umi_em, 4.0, umi_em >= 4.0],
            "Hallu. alpha-UMi <= Single-LLM": [30.0, 40.0, True],
            "every condition beats the most-frequent tool on Act. EM": [
                {"Single-LLM": 12.0, "Single-LLM multi-task": 8.0, "Multi-LLM one-stage": 11.0, "alpha-UMi": 13.0},
                10.0, False,
            ],
        },
        "toy_per_seed": per_seed,
        "real": {"method": "zero-shot (floor)", "wall_s": 3.0, "static": {
            "n steps": 16, "n call": 12, "n finish": 3, "Plan ACC": 75.0, "Act. EM": 0.0, "Arg. F1": 0.0,
            "Hallu.": 43.75, "Rouge-L": 0.0}},
    }  # fmt: skip


def test_render_states_each_verdict_from_the_numbers():
    text = render(_prov(9.0))
    assert "alpha-UMi 9.0 vs Single-LLM 5.0 (needs +2): holds" in text
    assert "most-frequent tool (10.0 Act. EM): **fails** (at or below it: Single-LLM multi-task 8.0)" in text
    # pass rates 0/10/20 (+i): Single-LLM mean 10.0, sd 10.0; alpha-UMi 13.0 +- 10.0
    assert "Single-LLM 10.0 ± 10.0" in text and "alpha-UMi 13.0 ± 10.0" in text
    assert "wall 2 min 5 s on 2 cores" in text and "Hallu. 43.75" in text
    assert "(needs +2): **fails**" in render(_prov(6.0))


def test_write_block_replaces_only_the_block(tmp_path):
    (tmp_path / "results" / "toy").mkdir(parents=True)
    (tmp_path / "results" / "toy" / "provenance.json").write_text(json.dumps(_prov()))
    (tmp_path / "README.md").write_text(f"head\n{MARKERS[0]}\nold 1.23\n{MARKERS[1]}\ntail\n")
    text = write_block("toy", tmp_path).read_text()
    assert text.startswith("head\n") and text.endswith("tail\n") and "old 1.23" not in text
    assert render(_prov()) in text
    with pytest.raises(ResultsError, match="no provenance"):
        write_block("small", tmp_path)


def test_committed_readme_block_is_the_render_of_committed_provenance(tmp_path):
    prov = PAPER_DIR / "results" / "toy" / "provenance.json"
    if not prov.is_file():
        pytest.skip("no committed toy results")
    readme = (PAPER_DIR / "README.md").read_text()
    shutil.copytree(PAPER_DIR / "results", tmp_path / "results")
    (tmp_path / "README.md").write_text(readme)
    assert write_block("toy", tmp_path).read_text() == readme
