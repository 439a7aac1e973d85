"""MCC-KD pipeline pieces: result rows and summary, config presets, CLI errors, the real-model smoke run."""

import json
from pathlib import Path

import pytest

from common.results import RESULT_COLUMNS
from papers.mcckd import real_svamp
from papers.mcckd.config import PRESETS, get_config
from papers.mcckd.pipeline import reproduce, summary, toy_rows

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _arm(method, seed, acc, ood, kl):
    return {
        "method": method,
        "seed": seed,
        "toy-arith": {"strict": acc, "flexible": acc},
        "toy-arith-ood": {"strict": ood, "flexible": ood + 0.01},
        "answer_kl": kl,
    }


def test_rows_and_summary():
    arms = [
        _arm("CoT-KD", 0, 0.5, 0.2, 0.3),
        _arm("MCC-KD", 0, 0.6, 0.1, 0.1),
        _arm("CoT-KD", 1, 0.4, 0.2, 0.2),
    ]
    arms.append(_arm("MCC-KD", 1, 0.5, 0.3, 0.1))
    rows = toy_rows(arms)
    assert all(set(r) == set(RESULT_COLUMNS) for r in rows) and len(rows) == 4 * 5
    acc = [r["value"] for r in rows if r["metric"] == "accuracy" and r["benchmark"] == "toy-arith"]
    assert acc == [50.0, 60.0, 40.0, 50.0]
    s = summary(arms)
    assert s["MCC-KD toy-arith"] == (55.0, 5.0) and s["MCC-KD wins toy-arith"] == 2
    assert s["MCC-KD wins toy-arith-ood"] == 1


def test_presets_carry_the_spec_defaults():
    paper = get_config("paper")
    assert (paper.student.alpha, paper.student.temperature, paper.student.lr) == (0.01, 1.3, 1e-5)
    assert paper.filters.jaccard_threshold == 0.8 and paper.filters.answer_span == "answer_tokens"
    assert set(PRESETS) == {"toy", "small", "paper"}
    with pytest.raises(ValueError, match="unknown scale"):
        get_config("huge")


def test_non_toy_scales_run_the_scaled_driver(monkeypatch, tmp_path):
    from papers.mcckd import scaled

    seen = []

    def fake(cfg, force=False, data_dir=None):
        seen.append((cfg.scale, force, data_dir))
        return tmp_path

    monkeypatch.setattr(scaled, "reproduce_scaled", fake)
    assert reproduce("small", force=True, data_dir="d") == tmp_path
    assert reproduce("paper") == tmp_path
    assert seen == [("small", True, "d"), ("paper", False, None)]


def test_scaled_driver_errors_are_one_line(monkeypatch):
    from papers.mcckd import scaled
    from papers.mcckd.scaled_data import MissingTrainData

    def fake(cfg, force=False, data_dir=None):
        raise MissingTrainData("ASDiv train questions are not mirrored\nsecond line")

    monkeypatch.setattr(scaled, "reproduce_scaled", fake)
    with pytest.raises(SystemExit, match=r"^mcckd small: ASDiv train questions are not mirrored$"):
        reproduce("small")


def test_cli_rejects_eval_every_beyond_steps(capsys):
    with pytest.raises(SystemExit):
        real_svamp.main(["--steps", "5", "--eval-every", "10"])
    assert "--eval-every 10 is larger than --steps 5" in capsys.readouterr().err


@pytest.mark.slow
def test_real_svamp_smoke(tmp_path):
    out = tmp_path / "r.json"
    real_svamp.main(
        ["--steps", "1", "--eval-every", "1", "--questions", "1", "--limit-dev", "1", "--limit-test", "1"]
        + ["--max-new-tokens", "4", "--lora-r", "2", "--method", "MCC-KD", "--out", str(out)]
        + ["--data-dir", str(SHARED)]
    )
    result = json.loads(out.read_text())
    assert result["data_stats"]["records"] == 642 and result["arms"][0]["method"] == "MCC-KD"
