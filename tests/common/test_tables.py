"""common.tables: the aggregate table (seeds grouped, published twin beside), the units check, the top
README's runtime column, and plots that name every arm with the legend outside the axes."""

import json
import shutil
from pathlib import Path

import pytest

from common import plots, results, tables

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def root(tmp_path):
    """A scratch repo: every paper's published.csv, claims.yaml and README, and the top README."""
    for slug in results.PAPERS:
        (tmp_path / "papers" / slug).mkdir(parents=True)
        for name in ("published.csv", "claims.yaml", "README.md"):
            shutil.copy(REPO / "papers" / slug / name, tmp_path / "papers" / slug / name)
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    return tmp_path


def _row(method, setting, value, metric="pass@1", table="toy", model="tiny", benchmark="toy-arith"):
    return dict(
        table=table,
        setting=setting,
        model=model,
        method=method,
        benchmark=benchmark,
        metric=metric,
        value=value,
    )


def test_aggregate_groups_seeds_on_every_other_column():
    rows = [_row("A", f"arith seed {i}", v) for i, v in enumerate((40.0, 42.0, 44.0))]
    rows += [_row("A", "arith seed 0", 10.0, metric="pass@8"), _row("SFT", "arith (before RL)", 41.6)]
    rows += [_row("A", "ood seed 0", 5.0), _row("A", "ood seed 1", 7.0)]
    got = tables.aggregate([{**r, "value": str(r["value"])} for r in rows])
    assert [(g["method"], g["setting"], g["metric"], g["n"]) for g in got] == [
        ("A", "arith", "pass@1", 3),
        ("A", "arith", "pass@8", 1),
        ("SFT", "arith (before RL)", "pass@1", 1),
        ("A", "ood", "pass@1", 2),
    ]
    assert got[0]["mean"] == pytest.approx(42.0) and got[0]["sd"] == pytest.approx(2.0)
    assert got[1]["sd"] is None and got[3]["sd"] == pytest.approx(2**0.5)


def test_results_table_shows_mean_sd_n_and_the_published_twin(root):
    twin = results.load_published("qrm", root)[0]  # SFT, GSM8K, Pass@1, 63.08
    rows = [{**twin, "setting": f"{twin['setting']} seed {i}", "value": 63.0 + i} for i in range(3)]
    rows.append({**twin, "method": "DPO", "setting": f"{twin['setting']} seed 0", "value": 1.5})
    rows.append({**twin, "metric": "Pass@4", "value": 70.0})  # no published Pass@4 row
    results.write_results("qrm", "small", rows, seeds=[0, 1, 2], config={}, wall_time_s=403.2, root=root)
    block = tables.render_paper_block("qrm", root, scales=["small"])
    assert "| SFT | GSM8K | Pass@1 | 64.00 ± 1.00 | 3 | 63.08 |" in block
    assert "| DPO | GSM8K | Pass@1 | 1.50 | 1 | 68.16 |" in block
    assert "| SFT | GSM8K | Pass@4 | 70.00 | 1 | - |" in block
    assert "wall time 6 min 43 s" in block and "Every row: table `math_main" in block
    assert block.index("### Reproduced, small scale") < block.index("### Claims at small scale")
    assert block.index("### Claims at small scale") < block.index("### Published")
    table, per_seed = block.split("Per seed against published (small; within ±1: 2/4 rows)")
    assert " seed 0 |" not in table and " seed 2 | Llama-3.2-3B-Instruct | SFT |" in per_seed


def test_a_pipelines_details_file_is_shown_under_its_results_table(root):
    twin = results.load_published("qrm", root)[0]
    results.write_results(
        "qrm", "small", [{**twin, "value": 60.0}], seeds=[0], config={}, wall_time_s=1.0, root=root
    )
    assert "criterion | passes" not in tables.render_paper_block("qrm", root, scales=["small"])
    details = root / "papers" / "qrm" / "results" / "small" / tables.DETAILS
    details.write_text("#### Pass criteria\n\n| criterion | passes |\n|---|---|\n| 1 | yes |\n")
    block = tables.render_paper_block("qrm", root, scales=["small"])
    assert block.index("### Reproduced, small scale") < block.index("| criterion | passes |")
    assert block.index("| 1 | yes |") < block.index("### Claims at small scale")


def test_published_tables_named_in_claims_yaml_are_shown_whole_as_grids(root):
    claims = root / "papers" / "ipvrm" / "claims.yaml"
    text = claims.read_text().replace("published_tables:", "old_published_tables:")
    claims.write_text("published_tables: [Table 7]\n" + text)
    block = tables.render_paper_block("ipvrm", root)
    table7 = block.split("#### Table 7 (setting training-time mean over rollouts)")[1]
    assert (
        "| model | method | train rollouts mean per-token RM score (Eq. 19) | train rollouts verifier accuracy |"
        in table7
    )
    assert "| Qwen3-0.6B-Base | DistRL w/ IPVRM | -0.14 | 23.5 |" in table7
    assert len([line for line in table7.splitlines() if line.startswith("| ")]) == 1 + 8  # header + 8 rows
    claims.write_text("published_tables: [Table 99]\n" + text)
    with pytest.raises(results.ResultsError, match="'Table 99', not a table of published.csv"):
        tables.render_paper_block("ipvrm", root)


def test_units_check_names_the_paper_and_metric(root):
    """A fraction (0.416) where published.csv has points (63.08) is an error, not a table."""
    rows = [_row("REINFORCE+Q-RM", f"arith seed {i}", v) for i, v in enumerate((0.41, 0.43))]
    rows += [_row("REINFORCE+Q-RM", "arith seed 0", 0.2, metric="pass@1 (sampled, T=1)")]
    rows += [_row("Q-RM", "pairs", 0.7, metric="pairwise accuracy", benchmark="toy-pairs")]  # no twin metric
    results.write_results("qrm", "toy", rows, seeds=[0, 1], config={}, wall_time_s=1, root=root)
    with pytest.raises(results.ResultsError) as err:
        tables.check_units("qrm", "toy", root)
    message = str(err.value)
    assert message.startswith("papers/qrm/results/toy/reproduced.csv: metric 'pass@1' is a fraction")
    assert "'pass@1 (sampled, T=1)'" in message and "'Pass@1' in points (e.g. 63.08)" in message
    assert "pairwise accuracy" not in message and message.endswith("(x100)")
    assert tables.claims_summary("qrm", "toy", root).startswith("units differ from published.csv")
    readme = root / "papers" / "qrm" / "README.md"
    before = readme.read_text()
    with pytest.raises(results.ResultsError, match="metric 'pass@1' is a fraction"):
        tables.write_tables(["qrm", "mcckd"], root=root)
    assert readme.read_text() == before  # the bad paper's README is left alone ...
    assert (
        "| [qrm](papers/qrm/README.md) | reward model + RL |" in (root / "README.md").read_text()
    )  # ... the rest written
    points = [{**r, "value": r["value"] * 100} if r["metric"].startswith("pass") else r for r in rows]
    results.write_results("qrm", "toy", points, seeds=[0, 1], config={}, wall_time_s=1, root=root)
    tables.check_units("qrm", "toy", root)  # points: fine
    zeros = [{**r, "value": 0.0} for r in rows]  # a floor of 0 is 0 in any unit
    results.write_results("qrm", "toy", zeros, seeds=[0, 1], config={}, wall_time_s=1, root=root)
    tables.check_units("qrm", "toy", root)


def test_units_check_leaves_metrics_without_a_points_twin_alone(root):
    (root / "papers" / "mcckd" / "README.md").write_text("x\n<!-- results:start -->\n<!-- results:end -->\n")
    rows = [
        _row(m, f"arith seed {i}", 0.3, metric="accuracy") for m in ("MCC-KD", "CoT-KD") for i in range(2)
    ]
    results.write_results("mcckd", "toy", rows, seeds=[0, 1], config={}, wall_time_s=1, root=root)
    tables.check_units("mcckd", "toy", root)  # mcckd's published.csv is empty: no twin, no error


def test_format_duration():
    assert [tables.format_duration(s) for s in (0.4, 54.6, 60, 403.2, 432.32, 3725, None)] == [
        "0 s",
        "55 s",
        "1 min 0 s",
        "6 min 43 s",
        "7 min 12 s",
        "1 h 2 min",
        "-",
    ]


def test_papers_table_has_the_toy_runtime(root):
    for slug, seconds in (("mcckd", 403.2), ("socialbench", 54.6)):
        out = root / "papers" / slug / "results" / "toy"
        out.mkdir(parents=True)
        (out / "provenance.json").write_text(json.dumps({"wall_time_s": seconds}))
    text = tables.render_papers_table(root)
    assert text.splitlines()[0] == "| paper | kind | pipeline | results | toy runtime | claims at toy scale |"
    assert "| [mcckd](papers/mcckd/README.md) | LLM distillation | not built yet | - | 6 min 43 s |" in text
    assert (
        "| [socialbench](papers/socialbench/README.md) | benchmark / evaluator | not built yet | - | 55 s |"
        in text
    )
    assert "| [lco](papers/lco/README.md) | RL | not built yet | - | - | no results yet |" in text


def test_plot_curves_names_every_arm_and_keeps_the_legend_outside(tmp_path):
    seeds = [[(0, 40.0 + s), (1, 42.0 + s), (2, 45.0 - s)] for s in range(3)]
    series = {
        "REINFORCE+Q-RM": seeds,
        "REINFORCE+ORM": [[(x, y - 2) for x, y in run] for run in seeds],
        "REINFORCE+oracle": [(0, 41.0), (2, 50.0)],  # one run, today's format
    }
    fig = plots.curves_figure(series, "t", "updates", "pass@1", reference={"SFT": 41.6})
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [*series, "seed #1", "seed #2", "seed #3", "SFT (41.60)"]
    lines = ax.get_lines()
    colours = {line.get_color() for line in lines[:3]}
    assert len(colours) == 1 and lines[3].get_color() != lines[0].get_color()  # one colour per method
    assert [line.get_linestyle() for line in lines[:3]] == ["-", "-.", ":"]  # seeds as line styles
    assert lines[-1].get_linestyle() == "--" and tuple(lines[-1].get_ydata()) == (41.6, 41.6)
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1  # right of the axes, not over the data
    path = plots.plot_curves(series, tmp_path / "sub" / "p.png", "t", "x", "y", reference={"SFT": 41.6})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_band_and_the_old_single_run_format(tmp_path):
    runs = [[(0, 1.0), (1, 2.0)], [(0, 3.0), (1, 4.0)]]
    fig = plots.curves_figure({"A": runs, "B": [(0, 0.5), (1, 0.7)]}, "t", "x", "y", band=True)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B", "min-max over 2 seeds"]
    assert tuple(ax.get_lines()[0].get_ydata()) == (2.0, 3.0)  # the mean over seeds at each x
    assert plots._runs([[0, 1.0], [1, 2.0]]) == [[(0, 1.0), (1, 2.0)]]  # one run read back from JSON
    assert plots._runs([[], [[0, 1.0]]]) == [[], [(0, 1.0)]]  # two seeds, the first without points
    old = plots.plot_curves({"a": [(0, 1), (1, 2)], "b": [(0, 2), (1, 1)]}, tmp_path / "p.png", "t", "x", "y")
    assert old == tmp_path / "p.png" and old.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
