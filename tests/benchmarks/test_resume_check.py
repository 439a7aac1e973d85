"""benchmarks/resume_check.py: its comparison (what counts as the same results), its CLI errors, its configs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from common.reproduce import resolve_config
from common.results import PAPERS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "resume_check.py"
spec = importlib.util.spec_from_file_location("resume_check", SCRIPT)
resume_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resume_check)


def results(root: Path, csv: str, prov: dict, curves: dict) -> Path:
    out = root / "results" / "qrm" / "toy"
    out.mkdir(parents=True)
    (out / "reproduced.csv").write_text(csv)
    (out / "provenance.json").write_text(json.dumps(prov))
    (out / "curves.json").write_text(json.dumps(curves))
    return out


def test_compare_ignores_wall_times_and_run_folders_but_not_numbers(tmp_path):
    csv = "table,setting,model,method,benchmark,metric,value\ntoy,s seed 0,m,A,b,pass@1,40.0\n"
    ref = results(tmp_path / "reference", csv, {"wall_time_s": 3.0, "hardware": {"load_avg_15min": 2}},
                  {"runs": [{"wall_s": 1.0, "dir": str(tmp_path / "reference" / "runs" / "x")}]})  # fmt: skip
    same = results(tmp_path / "a", csv, {"wall_time_s": 9.0, "hardware": {"load_avg_15min": 7}},
                   {"runs": [{"wall_s": 2.0, "dir": str(tmp_path / "a" / "runs" / "x")}]})  # fmt: skip
    assert resume_check.compare(ref, same) == (True, [])
    other = results(tmp_path / "b", csv.replace("40.0", "40.1"), {"wall_time_s": 3.0, "seeds": [1]},
                    {"runs": [{"wall_s": 1.0, "loss": 2.0}]})  # fmt: skip
    assert resume_check.compare(ref, other) == (False, ["curves.json", "provenance.json"])
    (other / "details.md").write_text("x")
    assert "details.md (missing)" in resume_check.compare(ref, other)[1]


def test_every_built_paper_has_a_reduced_config_that_resolves():
    assert set(resume_check.REDUCED) == set(PAPERS)
    for slug, sets in resume_check.REDUCED.items():
        resolve_config(slug, "toy", sets)  # a bad key or value raises


def test_unknown_paper_is_one_line_and_help_explains():
    bad = subprocess.run([sys.executable, str(SCRIPT), "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "unknown paper 'nope'" in bad.stderr and "qrm" in bad.stderr
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "SIGKILL" in out.stdout and "--kills" in out.stdout
