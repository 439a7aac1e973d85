"""`python -m common.reproduce`: exit codes and one-line messages a user sees."""

import subprocess
import sys
from pathlib import Path

import pytest

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
