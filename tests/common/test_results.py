"""common.results / common.tables: write + provenance, claims evaluation, rendering, atomicity."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from common import results, tables

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def root(tmp_path):
    """A scratch repo with the real qrm paper folder and the top README."""
    shutil.copytree(
        REPO / "papers" / "qrm", tmp_path / "papers" / "qrm", ignore=shutil.ignore_patterns("results")
    )
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    for slug in results.PAPERS:
        (tmp_path / "papers" / slug).mkdir(parents=True, exist_ok=True)
        for name in ("published.csv", "claims.yaml", "README.md"):
            if not (tmp_path / "papers" / slug / name).exists():
                shutil.copy(REPO / "papers" / slug / name, tmp_path / "papers" / slug / name)
    return tmp_path


def toy_rows(qrm, orm, seeds=(0, 1)):
    rows = []
    for seed in seeds:
        for method, value in (("REINFORCE+Q-RM", qrm), ("REINFORCE+ORM", orm)):
            rows.append(
                dict(
                    table="toy",
                    setting=f"arith seed {seed}",
                    model="tiny-student",
                    method=method,
                    benchmark="toy-arith",
                    metric="pass@1",
                    value=value + seed,
                )
            )
    return rows


def test_write_results_roundtrip_and_provenance(root):
    out = results.write_results(
        "qrm",
        "toy",
        toy_rows(40.0, 30.0),
        seeds=[0, 1],
        config={"lr": 1e-3},
        wall_time_s=12.345,
        grader="gsm8k strict",
        sampling={"temperature": 1.0},
        root=root,
    )
    assert out == root / "papers" / "qrm" / "results" / "toy"
    with open(out / "reproduced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and tuple(rows[0]) == results.RESULT_COLUMNS
    assert float(rows[1]["value"]) == 30.0
    prov = json.loads((out / "provenance.json").read_text())
    for key in (
        "commit",
        "dirty",
        "versions",
        "hardware",
        "seeds",
        "grader",
        "sampling",
        "wall_time_s",
        "config",
        "timestamp_utc",
        "command",
    ):
        assert key in prov, key
    assert prov["seeds"] == [0, 1] and prov["wall_time_s"] == 12.35 and prov["versions"]["torch"]
    assert prov["commit"] and len(prov["commit"]) == 40  # the test runs inside the project's git checkout
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"value": "n/a"}, "not a number"),
        ({"value": float("nan")}, "NaN"),
        ({"extra": 1}, "unknown"),
        ({"metric": None}, None),
    ],
)
def test_bad_rows_name_the_row(root, bad, match):
    row = toy_rows(1.0, 0.0)[0]
    if bad.get("metric", 0) is None:
        del row["metric"]
        match = "missing"
    else:
        row.update(bad)
    with pytest.raises(results.ResultsError, match=f"row 0: .*{match}"):
        results.write_results("qrm", "toy", [row], seeds=[0], config={}, wall_time_s=1, root=root)
    assert not (root / "papers" / "qrm" / "results" / "toy" / "reproduced.csv").exists()


def test_unknown_scale_and_paper(root):
    with pytest.raises(results.ResultsError, match="valid: toy, small, paper"):
        results.write_results("qrm", "huge", toy_rows(1, 0), seeds=[0], config={}, wall_time_s=1, root=root)
    with pytest.raises(results.ResultsError, match="valid: qrm"):
        results.paper_dir("gpt5")


def test_claims_hold_fail_and_missing(root):
    before = {c.id: c for c in results.evaluate_claims("qrm", "toy", root)}
    assert all(c.holds is None and c.reproduced_delta is None for c in before.values())
    results.write_results(
        "qrm", "toy", toy_rows(40.0, 30.0), seeds=[0, 1], config={}, wall_time_s=1, root=root
    )
    got = {c.id: c for c in results.evaluate_claims("qrm", "toy", root)}
    assert got["reinforce_qrm_beats_orm"].holds is True
    assert got["reinforce_qrm_beats_orm"].reproduced_delta == pytest.approx(10.0)
    assert got["reinforce_qrm_beats_orm"].published_delta == pytest.approx(4.70)
    assert got["ppo_qrm_beats_orm"].holds is None  # no PPO rows at all
    results.write_results("qrm", "toy", toy_rows(30.0, 40.0), seeds=[0], config={}, wall_time_s=1, root=root)
    assert {c.id: c for c in results.evaluate_claims("qrm", "toy", root)}[
        "reinforce_qrm_beats_orm"
    ].holds is False


def test_small_scale_compares_numbers_with_tolerance(root):
    published = [
        r
        for r in results.load_published("qrm", root)
        if r["benchmark"] == "GSM8K+MATH average"
        and r["metric"] == "Pass@1"
        and r["method"] in ("PPO+Q-RM", "PPO+ORM")
    ]
    rows = [
        {**published[0], "value": float(published[0]["value"]) + 0.5},
        {**published[1], "value": float(published[1]["value"]) - 3.0},
    ]
    results.write_results("qrm", "small", rows, seeds=[0], config={}, wall_time_s=1, root=root)
    compared = results.compare_numbers("qrm", "small", tolerance=1.0, root=root)
    assert [c["within"] for c in compared] == [True, False]
    assert compared[1]["delta"] == pytest.approx(-3.0)


def test_tables_rewrite_only_the_marked_blocks(root):
    results.write_results(
        "qrm", "toy", toy_rows(40.0, 30.0), seeds=[0, 1], config={}, wall_time_s=1, root=root
    )
    readme = root / "papers" / "qrm" / "README.md"
    readme.write_text(readme.read_text() + "\nA user's note below the block.\n")
    tables.write_tables(["qrm"], root=root)
    text = readme.read_text()
    assert "A user's note below the block." in text and "## Claim" in text
    assert "| yes |" in text and "Reproduced, toy scale" in text
    top = (root / "README.md").read_text()
    assert "| [qrm](papers/qrm/README.md) | reward model + RL | not built yet | toy | 1/3 hold |" in top
    tables.write_tables(["qrm"], root=root)  # idempotent
    assert readme.read_text() == text


def test_missing_markers_is_a_clear_error(root):
    (root / "papers" / "qrm" / "README.md").write_text("# no markers\n")
    with pytest.raises(results.ResultsError, match="markers"):
        tables.write_tables(["qrm"], root=root)


def test_bad_claims_file_names_the_field(root):
    path = root / "papers" / "qrm" / "claims.yaml"
    path.write_text(
        "claims:\n  - id: x\n    statement: s\n    direction: up\n    published: {}\n    toy: {}\n"
    )
    with pytest.raises(results.ResultsError, match="direction must be higher or lower"):
        results.load_claims("qrm", root)
    path.write_text("claims:\n  - id: x\n    statement: s\n")
    with pytest.raises(results.ResultsError, match="field 'direction' missing"):
        results.load_claims("qrm", root)


def test_plot_curves_writes_a_png(tmp_path):
    path = tables.plot_curves(
        {"a": [(0, 1), (1, 2)], "b": [(0, 2), (1, 1)]}, tmp_path / "p.png", "t", "x", "y"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
