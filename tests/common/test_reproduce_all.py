"""common.reproduce_all: every paper in turn, a line per paper, a summary table, failures do not stop it."""

from __future__ import annotations

import json
import sys

from common import reproduce_all


def _fake(slug: str, scale: str) -> list[str]:
    code = {"a": 0, "b": 5, "c": 3}[slug]
    return [sys.executable, "-c", f"print('running {slug} {scale}'); raise SystemExit({code})"]


def test_every_paper_runs_in_order_and_a_failure_does_not_stop_the_rest(tmp_path):
    lines = []
    rows = reproduce_all.run_all(["a", "b", "c"], "toy", command=_fake, log_dir=tmp_path, echo=lines.append)
    assert [(r["paper"], r["exit"], r["status"]) for r in rows] == [
        ("a", 0, "ok"),
        ("b", 5, "failed (exit 5)"),
        ("c", 3, "no pipeline"),
    ]
    assert lines[0] == "[1/3] a (toy) ..." and lines[-1].startswith("[3/3] c: no pipeline in 0 min")
    assert (tmp_path / "b-toy.log").read_text() == "running b toy\n"  # each paper's output in its own log
    table = reproduce_all.summary_table(rows)
    assert table.splitlines()[2].startswith("| a | ok | 0 min") and "| all | 1/3 ok |" in table


def test_main_rejects_an_unknown_paper_in_one_line_and_writes_the_summary(tmp_path, capsys, monkeypatch):
    assert reproduce_all.main(["--papers", "qrm,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0] and "qrm" in err[0]
    monkeypatch.setattr(reproduce_all, "reproduce_command", _fake)
    monkeypatch.setattr(reproduce_all, "PAPERS", ("a", "b"))
    summary = tmp_path / "s.json"
    code = reproduce_all.main(["--papers", "a,b", "--summary", str(summary), "--log-dir", str(tmp_path)])
    assert code == 1  # b failed
    data = json.loads(summary.read_text())
    assert data["scale"] == "toy" and [r["exit"] for r in data["papers"]] == [0, 5]
