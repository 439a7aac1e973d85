"""Pairwise-accuracy CLI on the real held-out pairs (a few of them) with tiny models; row counts; bad paths."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.models import build_tiny_causal_lm
from common.synthetic.tokenizer import world_tokenizer
from papers.qrm.pairwise import EXPECTED_ROWS, load_pairs, main
from papers.qrm.reward_models import TokenScorer

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "qrm").is_dir(), reason="shared/data/qrm is not beside the repo")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = world_tokenizer()
    lm = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    root = tmp_path_factory.mktemp("models")
    TokenScorer.from_model(lm, seed=0).save(root / "scorer", tokenizer=tok)
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    return root


@needs_data
def test_row_counts_of_the_real_pair_files():
    for name, n in EXPECTED_ROWS.items():
        pairs = load_pairs(name, DATA)
        assert len(pairs) == n
        assert all(p["prompt"] and p["chosen"] and p["rejected"] for p in pairs)
    assert EXPECTED_ROWS == {"gsm8k": 787, "math": 2291}
    assert len(load_pairs("math", DATA, limit=7)) == 7


@needs_data
@pytest.mark.parametrize("which", ["scorer", "lm"])
def test_cli_runs_on_the_real_pairs(saved, tmp_path, capsys, which):
    out = tmp_path / "acc.json"
    argv = [
        str(saved / which),
        "--data-dir",
        str(DATA),
        "--limit",
        "6",
        "--max-len",
        "384",
        "--out",
        str(out),
    ]
    assert main([*argv, "--reduce", "last" if which == "lm" else "mean"]) == 0
    report = json.loads(out.read_text())
    assert report["model_kind"] == ("token_scorer" if which == "scorer" else "fresh_head")
    assert set(report["results"]) == {"gsm8k", "math"}
    for res in report["results"].values():
        assert res["n"] == 6 and 0.0 <= res["accuracy"] <= 1.0
    assert report["commit"] and report["chat_template"] is True
    assert "gsm8k: accuracy" in capsys.readouterr().out


def test_bad_model_path_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "papers.qrm.pairwise", str(tmp_path / "nope"), "--dataset", "gsm8k"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pairwise: ") and "nope" in lines[0]


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "787" in out and "--reduce" in out and "--limit" in out
