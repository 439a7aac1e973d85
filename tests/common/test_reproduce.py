"""`python -m common.reproduce`: the resolved config, --set overrides, exit codes and one-line messages.

The pipeline tests run against a fake paper (`papers.fake`, put in sys.modules) so they do not depend
on the state of the real papers.
"""

import dataclasses
import logging
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


@dataclasses.dataclass(frozen=True)
class RM:
    lr: float = 1e-3
    steps: int = 10


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    scale: str = "toy"
    seeds: tuple[int, ...] = (0, 1)
    rm: RM = RM()


def fake_paper(monkeypatch, slug="fake", pipeline=True):
    """Register `papers.<slug>` with a config module (toy and small presets) and, optionally, a
    pipeline whose reproduce() records its calls. Returns the call list."""
    calls = []
    monkeypatch.setitem(results.PAPERS, slug, "test paper")
    config = types.ModuleType(f"papers.{slug}.config")
    presets = {"toy": FakeConfig(), "small": FakeConfig(scale="small", rm=RM(steps=100))}
    config.get_config = lambda scale: presets[scale]
    monkeypatch.setitem(sys.modules, f"papers.{slug}", types.ModuleType(f"papers.{slug}"))
    monkeypatch.setitem(sys.modules, f"papers.{slug}.config", config)
    if pipeline:
        module = types.ModuleType(f"papers.{slug}.pipeline")

        def fake_reproduce(cfg, *, force=False, data_dir=None):
            calls.append((cfg, force, data_dir))
            return Path("/tmp/results")

        module.reproduce = fake_reproduce
        monkeypatch.setitem(sys.modules, f"papers.{slug}.pipeline", module)
    monkeypatch.setattr(
        reproduce, "report", lambda slug, scale, out: calls.append(("report", slug, scale)) or "summary"
    )
    return calls


def test_unknown_paper_lists_the_valid_ones():
    out = run("gpt5")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: unknown paper 'gpt5'; valid: qrm, lco, ipvrm, mcckd, proxykd, adkd, socialbench, umi"
    )


def test_unknown_scale_lists_the_valid_ones():
    out = run("qrm", "--scale", "huge")
    assert out.returncode == 2 and "valid: toy, small, paper" in out.stderr and out.stderr.count("\n") == 1


def test_paper_without_pipeline_says_so(monkeypatch, capsys):
    fake_paper(monkeypatch, "nopipe", pipeline=False)
    assert reproduce.main(["nopipe"]) == reproduce.EXIT_NO_PIPELINE
    assert capsys.readouterr().err.strip() == (
        "papers/nopipe: no pipeline yet - the claim and published table are in papers/nopipe/README.md"
    )


def test_help_explains_every_option_with_examples():
    out = run("--help")
    assert out.returncode == 0
    for text in ("--scale", "--set", "--force", "--data-dir", "examples:", "--set rm.lr=3e-4"):
        assert text in out.stdout


def test_resolved_config_is_logged_and_passed_to_the_pipeline(tmp_path, monkeypatch, caplog):
    calls = fake_paper(monkeypatch)
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    caplog.set_level(logging.INFO, logger="common.reproduce")
    argv = ["fake", "--scale", "small", "--set", "rm.lr=3e-4", "--set", "seeds=[3]", "--force"]
    mirror = str(tmp_path)  # --data-dir must be a directory
    assert reproduce.main([*argv, "--data-dir", mirror]) == 0
    cfg, force, data_dir = calls[0]
    assert cfg == FakeConfig(scale="small", seeds=(3,), rm=RM(lr=3e-4, steps=100))
    assert (force, data_dir) == (True, mirror)
    assert calls[1] == ("report", "fake", "small")
    assert os.environ["REPRO_DATA_DIR"] == mirror
    logged = caplog.text
    assert "fake at small scale, resolved config:" in logged
    assert "rm.lr = 0.0003" in logged and "rm.steps = 100" in logged and "seeds = [3]" in logged


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("rm.nope=1", "error: --set rm.nope: unknown key 'nope' in rm; valid: lr, steps"),
        ("nope=1", "error: --set nope: unknown key 'nope' in FakeConfig; valid: scale, seeds, rm"),
        ("rm.steps=abc", "error: --set rm.steps: 'abc' is not an int"),
        ("rm", "error: --set 'rm': expected key.path=value"),
    ],
)
def test_bad_set_is_one_line_naming_the_key(monkeypatch, capsys, assignment, message):
    calls = fake_paper(monkeypatch)
    assert reproduce.main(["fake", "--set", assignment]) == reproduce.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == message + "\n"
    assert calls == []  # nothing ran


def test_a_paper_without_the_preset_is_one_line(monkeypatch, capsys):
    fake_paper(monkeypatch)
    assert reproduce.main(["fake", "--scale", "paper"]) == reproduce.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: papers/fake: no 'paper' preset") and err.count("\n") == 1


def test_runs_the_pipeline_then_prints_the_comparison(tmp_path, monkeypatch, capsys):
    """The real report step: the README tables are regenerated and the claims summary printed."""
    shutil.copytree(REPO / "papers", tmp_path / "papers", ignore=shutil.ignore_patterns("results", "*.py"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    (tmp_path / "papers" / "qrm" / "pipeline.py").write_text("# stands in for the real pipeline\n")
    for module in (results, tables):
        monkeypatch.setattr(module, "ROOT", tmp_path)
    calls = []

    def fake_reproduce(cfg, *, force=False, data_dir=None):
        calls.append((cfg.scale, force, data_dir))
        rows = [
            dict(
                table="toy",
                setting=f"s seed {seed}",
                model="tiny",
                method=m,
                benchmark="toy-arith",
                metric="pass@1",
                value=v + seed,
            )
            for seed in (0, 1)
            for m, v in (("REINFORCE+Q-RM", 40.0), ("REINFORCE+ORM", 30.0))
        ]
        return results.write_results("qrm", cfg.scale, rows, seeds=[0], config={}, wall_time_s=1.0)

    config = types.ModuleType("papers.qrm.config")
    config.get_config = lambda scale: FakeConfig(scale=scale)
    monkeypatch.setitem(sys.modules, "papers.qrm.config", config)
    pipeline = types.ModuleType("papers.qrm.pipeline")
    pipeline.reproduce = fake_reproduce
    monkeypatch.setitem(sys.modules, "papers.qrm.pipeline", pipeline)
    (tmp_path / "mirror").mkdir()
    assert reproduce.main(["qrm", "--force", "--data-dir", str(tmp_path / "mirror")]) == 0
    assert calls == [("toy", True, str(tmp_path / "mirror"))]
    out = capsys.readouterr().out
    assert "### Claims at toy scale" in out and "| +10.00 ± 0.00 (n=2) | [+10.00, +10.00] | holds |" in out
    # qrm claims: REINFORCE (rows given) holds, PPO and the DPO-RM claim have no rows, three cannot be checked
    top = (tmp_path / "README.md").read_text()
    assert (
        "| built | toy | 1 s (load " in top
        and " CPU | 1/1 hold, 4 without rows, 3 not checkable at toy |" in top  # wall, load, CPU; no cache
        and "cached stages reused" not in top
    )
    assert "Reproduced, toy scale" in (tmp_path / "papers" / "qrm" / "README.md").read_text()


def test_repro_results_sends_the_results_elsewhere_and_leaves_the_readmes(tmp_path, monkeypatch, capsys):
    """`$REPRO_RESULTS` (benchmarks/resume_check.py): write_results and the pipelines' own files go to
    $REPRO_RESULTS/<slug>/<scale>/; papers/<slug>/results/ and the READMEs are not touched."""
    shutil.copytree(REPO / "papers", tmp_path / "papers", ignore=shutil.ignore_patterns("results", "*.py"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    for module in (results, tables):
        monkeypatch.setattr(module, "ROOT", tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("README.md")}
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv(results.RESULTS_ENV, str(elsewhere))
    assert results.results_dir("lco", "toy") == elsewhere / "lco" / "toy"
    assert results.results_dir("lco", "toy", root=tmp_path) == tmp_path / "papers" / "lco" / "results" / "toy"
    with pytest.raises(results.ResultsError, match="unknown paper"):
        results.results_dir("nope", "toy")

    def fake_reproduce(cfg, *, force=False, data_dir=None):
        row = dict(table="toy", setting="s seed 0", model="tiny", method="REINFORCE+Q-RM")
        row |= dict(benchmark="toy-arith", metric="pass@1", value=40.0)
        return results.write_results("qrm", cfg.scale, [row], seeds=[0], config={}, wall_time_s=1.0)

    config = types.ModuleType("papers.qrm.config")
    config.get_config = lambda scale: FakeConfig(scale=scale)
    monkeypatch.setitem(sys.modules, "papers.qrm.config", config)
    pipeline = types.ModuleType("papers.qrm.pipeline")
    pipeline.reproduce = fake_reproduce
    monkeypatch.setitem(sys.modules, "papers.qrm.pipeline", pipeline)
    assert reproduce.main(["qrm"]) == 0
    assert (elsewhere / "qrm" / "toy" / "reproduced.csv").exists()
    assert not (tmp_path / "papers" / "qrm" / "results").exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("README.md")} == before
    assert "README tables not regenerated" in capsys.readouterr().out
