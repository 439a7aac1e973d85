"""The toy pipeline end to end at seconds scale: rows, criteria, resume from the stage cache, same table."""

import json

import pytest

from papers.umi.pipeline import reproduce


@pytest.mark.slow
def test_toy_pipeline_runs_resumes_and_is_deterministic(tiny_cfg, runs, tmp_path):
    out = reproduce(tiny_cfg, results_root=tmp_path)
    csv1 = (out / "reproduced.csv").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["toy_criteria"]) and "frequent_tool" in prov["toy_per_seed"]["0"]
    methods = {line.split(",")[3] for line in csv1.splitlines()[1:]}
    assert methods == {
        "Single-LLM",
        "Single-LLM multi-task",
        "Multi-LLM one-stage",
        "alpha-UMi",
        "most-frequent tool",
    }
    results = sorted(runs.rglob("result.json"))
    assert len(results) == 4
    stamps = [p.stat().st_mtime_ns for p in results]
    out2 = reproduce(tiny_cfg, results_root=tmp_path)  # every stage cached: nothing retrained
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert (out2 / "reproduced.csv").read_text() == csv1
