"""`python -m common.reproduce`: exit codes and one-line messages a user sees."""

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from common import reproduce, results, tables

REPO = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "common.reproduce", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_paper_lists_the_valid_ones():
    out = run("gpt5")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: unknown paper 'gpt5'; valid: qrm, lco, ipvrm, mcckd, proxykd, adkd, socialbench, umi"
    )


def test_unknown_scale_lists_the_valid_ones():
    out = run("qrm", "--scale", "huge")
    assert out.returncode == 2 and "valid: toy, small, paper" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("slug", ["qrm", "lco", "ipvrm", "mcckd", "proxykd", "adkd", "umi", "socialbench"])
def test_paper_without_pipeline_says_so(slug):
    if (REPO / "papers" / slug / "pipeline.py").exists():
        pytest.skip(f"papers/{slug} has a pipeline now; its own tests cover reproduce")
    out = run(slug)
    assert out.returncode == 3
    assert out.stderr.strip() == (
        f"papers/{slug}: no pipeline yet - the claim and published table are in papers/{slug}/README.md"
    )


def test_help_explains():
    out = run("--help")
    assert out.returncode == 0 and "--scale" in out.stdout and "--data-dir" in out.stdout


def test_runs_the_pipeline_then_prints_the_comparison(tmp_path, monkeypatch, capsys):
    """With a pipeline present: REPRO_DATA_DIR is set, reproduce() is called, the README and summary follow."""
    shutil.copytree(REPO / "papers", tmp_path / "papers", ignore=shutil.ignore_patterns("results", "*.py"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    (tmp_path / "papers" / "qrm" / "pipeline.py").write_text("# stands in for the real pipeline\n")
    for module in (reproduce, results, tables):
        monkeypatch.setattr(module, "ROOT", tmp_path)
    calls = []

    def fake_reproduce(scale, *, force=False, data_dir=None):
        calls.append((scale, force, data_dir))
        rows = [
            dict(
                table="toy",
                setting="s",
                model="tiny",
                method=m,
                benchmark="toy-arith",
                metric="pass@1",
                value=v,
            )
            for m, v in (("REINFORCE+Q-RM", 0.4), ("REINFORCE+ORM", 0.3))
        ]
        return results.write_results("qrm", scale, rows, seeds=[0], config={}, wall_time_s=1.0)

    monkeypatch.setitem(sys.modules, "papers.qrm.pipeline", types.SimpleNamespace(reproduce=fake_reproduce))
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    assert reproduce.main(["qrm", "--force", "--data-dir", str(tmp_path / "mirror")]) == 0
    assert calls == [("toy", True, str(tmp_path / "mirror"))]
    assert os.environ["REPRO_DATA_DIR"] == str(tmp_path / "mirror")
    out = capsys.readouterr().out
    assert "### Claims at toy scale" in out and "| +0.100 | yes |" in out
    # qrm claims: REINFORCE (rows given) holds, PPO and the DPO-RM claim have no rows
    assert "| built | toy | 1/1 hold, 2 without rows |" in (tmp_path / "README.md").read_text()
    assert "Reproduced, toy scale" in (tmp_path / "papers" / "qrm" / "README.md").read_text()
