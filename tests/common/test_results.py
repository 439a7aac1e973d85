"""common.results: write + provenance, claims with paired-delta verdicts, the dirty check, the CLI."""

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common import claims, results, stats, tables

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
    assert prov["hardware"]["load_avg_15min"] >= 0 and prov["hardware"]["cpu_count"] >= 1
    assert not list(out.glob("*.tmp"))
    # the top README's runtime column says how busy the machine was
    top = tables.render_papers_table(root)
    load = prov["hardware"]["load_avg_15min"]
    assert f"| 12 s (load {load:g} on {prov['hardware']['cpu_count']} cores) |" in top


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
    before = {c.id: c for c in claims.evaluate_claims("qrm", "toy", root)}
    assert all(c.verdict is None and c.reproduced_delta is None for c in before.values())
    assert before["ppo_qrm_beats_orm"].note == "no rows yet"
    results.write_results(
        "qrm", "toy", toy_rows(40.0, 30.0), seeds=[0, 1], config={}, wall_time_s=1, root=root
    )
    got = {c.id: c for c in claims.evaluate_claims("qrm", "toy", root)}
    assert got["reinforce_qrm_beats_orm"].verdict == "holds"  # +10 in both seeds: a zero-width interval
    assert got["reinforce_qrm_beats_orm"].reproduced_delta == pytest.approx(10.0)
    assert got["reinforce_qrm_beats_orm"].stats.n == 2
    assert got["reinforce_qrm_beats_orm"].published_delta == pytest.approx(4.70)
    assert got["ppo_qrm_beats_orm"].verdict is None  # no PPO rows at all
    results.write_results(
        "qrm", "toy", toy_rows(30.0, 40.0), seeds=[0, 1], config={}, wall_time_s=1, root=root
    )
    assert {c.id: c for c in claims.evaluate_claims("qrm", "toy", root)}[
        "reinforce_qrm_beats_orm"
    ].verdict == "fails"
    results.write_results(
        "qrm", "toy", toy_rows(40.0, 30.0, seeds=(0,)), seeds=[0], config={}, wall_time_s=1, root=root
    )
    one = {c.id: c for c in claims.evaluate_claims("qrm", "toy", root)}["reinforce_qrm_beats_orm"]
    assert one.verdict == "inconclusive" and one.reproduced_delta == pytest.approx(
        10.0
    )  # one seed never holds


def _t_interval(deltas):
    """Hand-written: mean +- t_{0.975, n-1} sd / sqrt(n) (quantiles typed from a t table)."""
    t975 = {2: 12.706204736174698, 3: 4.302652729749464, 4: 3.182446305284263, 5: 2.7764451051977987}
    n = len(deltas)
    mean = sum(deltas) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1))
    return mean, t975[n] * sd / math.sqrt(n)


def test_mcckd_committed_toy_verdicts_from_an_independent_reading_of_the_csv():
    """issue 15: each verdict comes from the per-seed paired deltas and their t-interval. Recomputed here
    from papers/mcckd/results/toy/reproduced.csv by hand (pairing by seed, t table typed in), so the test
    follows the committed results and fails if the pairing, the interval or the rule drift."""
    rows = list(csv.DictReader((REPO / "papers/mcckd/results/toy/reproduced.csv").open()))
    got = {c.id: c for c in claims.evaluate_claims("mcckd", "toy")}
    for cid, bench, metric, side in (
        ("mcckd_beats_single_rationale_kd", "toy-arith", "accuracy", 1),
        ("mcckd_beats_single_rationale_kd_ood", "toy-arith-ood", "accuracy", 1),
        ("mcckd_answers_agree_across_rationales", "toy-arith", "answer KL across rationales", -1),
    ):
        value = {
            (r["method"], r["setting"]): float(r["value"])
            for r in rows
            if r["benchmark"] == bench and r["metric"] == metric
        }
        seeds = sorted(s for m, s in value if m == "MCC-KD" and ("CoT-KD", s) in value)
        deltas = [value[("MCC-KD", s)] - value[("CoT-KD", s)] for s in seeds]
        mean, half = _t_interval(deltas)
        claim = got[cid]
        assert claim.stats.n == len(deltas) and claim.stats.method == "t"
        assert claim.stats.mean == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert claim.stats.half_width == pytest.approx(half, rel=1e-9)
        low, high = side * (mean - half), side * (mean + half)
        want = "holds" if min(low, high) > 0 else "fails" if max(low, high) < 0 else "inconclusive"
        assert claim.verdict == want, (cid, mean, half)


def test_paired_deltas_pair_by_setting_and_broadcast_a_single_baseline():
    def row(method, setting, value, metric="acc"):
        return dict(
            table="toy",
            setting=setting,
            model="m",
            method=method,
            benchmark="b",
            metric=metric,
            value=str(value),
        )

    rows = [
        row("A", "w seed 0", 5),
        row("A", "w seed 1", 7),
        row("B", "w seed 1", 4),
        row("B", "w seed 0", 1),
    ]
    rows += [row("A", "w seed 2", 9), row("B", "w seed 0", 100, metric="other")]
    block = {"filter": {"metric": "acc"}, "method": "A", "baseline": "B"}
    assert claims.paired_deltas(block, rows) == [4.0, 3.0]  # seed 2 has no baseline: unpaired, left out
    start = [row("A", "w seed 0", 5), row("A", "w seed 1", 7), row("B", "w (before RL)", 2)]
    assert claims.paired_deltas(block, start) == [3.0, 5.0]  # one baseline row (the starting point)
    assert claims.paired_deltas(block, [row("A", "x", 1)]) == []
    assert claims.paired_deltas({"unavailable": "u"}, rows) == []
    with pytest.raises(results.ResultsError, match="no 'A' row pairs with a 'B' row"):
        claims.paired_deltas(block, [row("A", "s0", 1), row("B", "s1", 1), row("B", "s2", 1)], "c")
    with pytest.raises(results.ResultsError, match="two rows for 'A'.*narrow the block's filter"):
        claims.paired_deltas({"method": "A", "baseline": "B"}, [row("A", "s", 1), row("A", "s", 2)])
    delta_rows = [row("A vs B", f"w seed {i}", v) for i, v in enumerate((1.0, 2.0))]
    assert claims.paired_deltas({"delta_method": "A vs B"}, delta_rows) == [1.0, 2.0]


def test_split_seed():
    assert results.split_seed("arith seed 0") == ("arith", 0)
    assert results.split_seed("arith, long seed 12") == ("arith, long", 12)
    assert results.split_seed("seed 3") == ("", 3)
    assert results.split_seed("seed 0, 400+400 items") == ("seed 0, 400+400 items", None)
    assert results.split_seed("arith (before RL)") == ("arith (before RL)", None)
    assert results.split_seed("reseed 3") == ("reseed 3", None)


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
    assert [c["within"] for c in results.compare_numbers("qrm", "small", tolerance=5.0, root=root)] == [
        True,
        True,
    ]
    # small scale reads the published block on the reproduced rows
    shift = {rows[0]["method"]: 0.5, rows[1]["method"]: -3.0}
    ppo = {c.id: c for c in claims.evaluate_claims("qrm", "small", root)}["ppo_qrm_beats_orm"]
    expected = ppo.published_delta + shift["PPO+Q-RM"] - shift["PPO+ORM"]
    assert ppo.reproduced_delta == pytest.approx(expected) and ppo.verdict == "inconclusive"  # one pair
    block = tables.render_paper_block("qrm", root, scales=["small"], tolerance=1.0)
    assert (
        "within ±1: 1/2 rows" in block and "Claims at small scale" in block and "Claims at toy" not in block
    )


def test_tables_rewrite_only_the_marked_blocks(root):
    results.write_results(
        "qrm", "toy", toy_rows(40.0, 30.0), seeds=[0, 1], config={}, wall_time_s=1, root=root
    )
    readme = root / "papers" / "qrm" / "README.md"
    readme.write_text(readme.read_text() + "\nA user's note below the block.\n")
    tables.write_tables(["qrm"], root=root)
    text = readme.read_text()
    assert "A user's note below the block." in text and "## Claim" in text
    assert "| +10.00 ± 0.00 (n=2) | [+10.00, +10.00] | holds |" in text and "Reproduced, toy scale" in text
    assert "| REINFORCE+Q-RM | toy-arith | pass@1 | 40.50 ± 0.71 | 2 |" in text  # seeds aggregated
    top = (root / "README.md").read_text()
    hw = json.loads((root / "papers/qrm/results/toy/provenance.json").read_text())["hardware"]
    assert (
        f"| [qrm](papers/qrm/README.md) | reward model + RL | built | toy | 1 s (load {hw['load_avg_15min']:g} "
        f"on {hw['cpu_count']} cores) "
        "| 1/1 hold, 4 without rows, 3 not checkable at toy |" in top
    )
    assert "| [lco](papers/lco/README.md) | RL | not built yet | - | - | no results yet |" in top
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
        claims.load_claims("qrm", root)
    path.write_text("claims:\n  - id: x\n    statement: s\n")
    with pytest.raises(results.ResultsError, match="field 'direction' missing"):
        claims.load_claims("qrm", root)
    good = "claims:\n  - id: x\n    statement: s\n    direction: higher\n    published: {unavailable: u}\n"
    for toy, match in (
        ("{method: a}", "toy needs method [+] baseline"),
        ("{method: a, baseline: b, direction: up}", "x toy: direction must be higher or lower"),
        ("{method: a, baseline: b, margin: -1}", "toy margin must be a number >= 0"),
    ):
        path.write_text(good + f"    toy: {toy}\n")
        with pytest.raises(results.ResultsError, match=match):
            claims.load_claims("qrm", root)
    assert str(path) in str(pytest.raises(results.ResultsError, claims.load_claims, "qrm", root).value)
    for text, match in (
        ("claims: [\n", "not valid YAML"),
        ("claims: [a]\n", "claim 0: must be a mapping"),
        ("- 1\n", "non-empty list"),
    ):
        path.write_text(text)
        with pytest.raises(results.ResultsError, match=match):
            claims.load_claims("qrm", root)


def test_verdict_needs_the_whole_interval_past_the_margin():
    def interval(low, high):
        return stats.DeltaStats((low + high) / 2, 1.0, 5, low, high, "t")

    assert claims.verdict(interval(0.1, 2.0), "higher") == "holds"
    assert claims.verdict(interval(-0.1, 2.0), "higher") == "inconclusive"
    assert claims.verdict(interval(-2.0, -0.1), "higher") == "fails"
    assert claims.verdict(interval(0.0, 0.0), "higher") == "fails"  # a tie is not a win
    assert claims.verdict(interval(-2.0, -0.1), "lower") == "holds"
    assert claims.verdict(interval(0.1, 2.0), "lower") == "fails"
    assert claims.verdict(interval(1.0, 3.0), "higher", margin=1.0) == "holds"  # margin reached
    assert claims.verdict(interval(0.5, 3.0), "higher", margin=1.0) == "inconclusive"
    assert claims.verdict(interval(0.2, 0.9), "higher", margin=1.0) == "fails"  # positive, but short
    assert claims.verdict(interval(-3.0, -1.5), "lower", margin=1.0) == "holds"
    assert claims.verdict(stats.delta_stats([5.0]), "higher") == "inconclusive"  # one seed never holds
    assert claims.verdict(None, "higher") is None


def test_toy_block_direction_margin_and_unavailable(root):
    """A toy metric with its own sense (a KL, lower is better), a pass margin, and an uncheckable claim."""
    (root / "papers" / "qrm" / "claims.yaml").write_text(
        """claims:
  - id: kl
    statement: method is closer to the teacher
    direction: higher
    published: {filter: {benchmark: GSM8K+MATH average, metric: Pass@1}, method: REINFORCE+Q-RM, baseline: REINFORCE+ORM}
    toy: {filter: {metric: KL}, method: A, baseline: B, direction: lower}
  - id: margin
    statement: A beats B by at least 2 points
    direction: higher
    published: {unavailable: not published}
    toy: {filter: {metric: acc}, method: A, baseline: B, margin: 2.0}
  - id: closed
    statement: a closed model wins
    direction: higher
    published: {unavailable: not published}
    toy: {unavailable: no closed model at toy scale}
"""
    )
    rows = [
        dict(
            table="toy",
            setting=f"w seed {i}",
            model="m",
            method=m,
            benchmark="toy-arith",
            metric=k,
            value=v[i],
        )
        for m, k, v in (
            ("A", "KL", (0.9, 0.92, 0.88)),
            ("B", "KL", (1.1, 1.12, 1.09)),
            ("A", "acc", (51.5, 51.4, 51.6)),
            ("B", "acc", (50.0, 50.0, 50.0)),
        )
        for i in range(3)
    ]
    results.write_results("qrm", "toy", rows, seeds=[0, 1, 2], config={}, wall_time_s=1, root=root)
    got = {c.id: c for c in claims.evaluate_claims("qrm", "toy", root)}
    assert got["kl"].verdict == "holds" and got["kl"].direction == "lower"
    assert got["kl"].reproduced_delta == pytest.approx(-0.2033333, abs=1e-6)
    assert got["kl"].published_delta == pytest.approx(4.7)
    assert got["margin"].verdict == "fails" and got["margin"].reproduced_delta == pytest.approx(1.5)
    assert got["margin"].stats.high < 2.0 and got["margin"].margin == 2.0
    assert got["closed"].verdict is None and "no closed model" in got["closed"].note
    assert tables.claims_summary("qrm", "toy", root) == "1/2 hold, 1 fails, 1 not checkable at toy"
    block = tables.render_paper_block("qrm", root)
    assert "not checkable at toy scale: no closed model at toy scale" in block and "| **fails** |" in block
    assert "| lower | +4.70 | -0.203 ± 0.014 (n=3) |" in block and "| higher, margin 2 |" in block


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "common.tables", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_diff_and_bad_input():
    out = run_cli("diff", "qrm", "--scale", "small", "--tolerance", "0.5")
    assert (
        out.returncode == 0 and "### Claims at small scale" in out.stdout and "REINFORCE+Q-RM" in out.stdout
    )
    bad = run_cli("diff", "gpt5")
    assert bad.returncode == 2 and bad.stderr.strip().startswith(
        "error: unknown paper 'gpt5'; valid: qrm, lco"
    )
    bad = run_cli("tables", "--scale", "huge")
    assert (
        bad.returncode == 2 and bad.stderr.strip() == "error: unknown scale 'huge'; valid: toy, small, paper"
    )


def test_small_scale_reads_the_scaled_block_where_the_published_one_is_a_delta_row(root):
    """reinforce_qrm_beats_dpo_rm is published as a delta row (+5.73); at small/paper scale its `scaled`
    block pairs the Pass@1 rows the pipeline writes."""
    rows = [
        dict(
            table="math_main",
            setting=f"gsm8k seed {seed}",
            model="m",
            method=method,
            benchmark="GSM8K+MATH average",
            metric="Pass@1",
            value=value + seed,
        )
        for seed in (0, 1, 2)
        for method, value in (("REINFORCE+Q-RM", 50.0), ("REINFORCE+DPO-RM", 47.0))
    ]
    results.write_results("qrm", "small", rows, seeds=[0, 1, 2], config={}, wall_time_s=1, root=root)
    got = {c.id: c for c in claims.evaluate_claims("qrm", "small", root)}["reinforce_qrm_beats_dpo_rm"]
    assert got.stats.n == 3 and got.reproduced_delta == pytest.approx(3.0) and got.verdict == "holds"
    assert got.published_delta == pytest.approx(5.73)
    path = root / "papers" / "qrm" / "claims.yaml"
    path.write_text(path.read_text().replace(", baseline: REINFORCE+DPO-RM}\n    toy", "}\n    toy", 1))
    with pytest.raises(results.ResultsError, match="reinforce_qrm_beats_dpo_rm: scaled needs method"):
        claims.load_claims("qrm", root)
