"""The toy world, the GLUE loaders on the real SST-2 files, bad inputs as one line, and a tiny end-to-end run."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import apply_overrides
from common.data import DataError, shared_mirror
from common.models import load_tokenizer
from papers.adkd.config import get_config
from papers.adkd.data import SIGNAL_WEIGHTS, glue_task, signal_sum_examples
from papers.adkd.pipeline import reproduce

REPO = Path(__file__).resolve().parents[3]
SHARED = shared_mirror()
needs_shared = pytest.mark.skipif(
    SHARED is None or not (SHARED / "sst2" / "train.tsv").exists(),
    reason="../shared/data/sst2 not beside the checkout",
)
TINY_SYNTHETIC = [
    "glue.enabled=false",
    "seeds=[0,1]",
    "run.workers=1",
    "synthetic.data.n_teacher_train=256",
    "synthetic.data.n_teacher_val=64",
    "synthetic.data.n_student_train=64",
    "synthetic.data.n_test=200",
    "synthetic.teacher.epochs=2",
    "synthetic.student.epochs=2",
]


def test_signal_sum_world_is_seeded_and_labelled_by_the_signed_sum():
    a, b = signal_sum_examples(200, seed=3), signal_sum_examples(200, seed=3)
    assert a == b and a != signal_sum_examples(200, seed=4)
    weights = dict(zip(range(2, 10), SIGNAL_WEIGHTS))
    for ex in a:
        ids = ex["input_ids"]
        assert len(ids) == 13 and ids[0] == 1 and all(2 <= t < 40 for t in ids[1:])
        total = sum(weights.get(t, 0.0) for t in ids[1:])
        assert abs(total) > 0.25 and ex["label"] == int(total > 0)


@needs_shared
def test_real_sst2_splits_load_from_the_shared_mirror():
    data = get_config("toy").glue.data
    task = glue_task("sst2", data, load_tokenizer("minilm-l6"), str(SHARED))
    assert len(task.test) == 872 and task.key["n_train_rows"] == 67349
    assert sum(ex["label"] for ex in task.test) == 444
    assert len(task.teacher_train) == data.n_teacher_train and len(task.teacher_val) == data.n_teacher_val
    s0, s1 = task.student_train(0), task.student_train(1)
    assert len(s0) == data.n_student_train and s0 != s1 and s0 == task.student_train(0)
    ids = {tuple(ex["input_ids"]) for ex in task.teacher_train}
    assert all(tuple(ex["input_ids"]) in ids for ex in s0)  # drawn from the teacher's sentences


def _mirror(tmp_path: Path, train_lines: list[str]) -> Path:
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("label\tsentence\n" + "\n".join(train_lines) + "\n")
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    return tmp_path


def _glue_cfg():
    return apply_overrides(get_config("toy"), ["synthetic.enabled=false", "run.workers=1"])


def test_tsv_row_with_a_missing_column_is_one_line(tmp_path):
    mirror = _mirror(tmp_path, ["1\tgood", "0"])
    with pytest.raises(SystemExit) as err:
        reproduce(_glue_cfg(), data_dir=str(mirror))
    msg = str(err.value)
    assert "\n" not in msg and "sst2/train.tsv row 2" in msg and "'sentence' missing" in msg


def test_label_outside_the_classes_is_one_line(tmp_path):
    mirror = _mirror(tmp_path, ["1\tgood", "0\tbad", "2\tugly"])
    with pytest.raises(SystemExit) as err:
        reproduce(_glue_cfg(), data_dir=str(mirror))
    msg = str(err.value)
    assert "\n" not in msg and "row 3" in msg and "outside the task's classes 0..1" in msg


def test_top_k_above_d_is_one_line():
    cfg = apply_overrides(get_config("toy"), [*TINY_SYNTHETIC, "synthetic.student.top_k=49"])
    with pytest.raises(
        SystemExit, match=r"top-K K = 49 must be between 1 and the teacher's hidden size d = 48$"
    ):
        reproduce(cfg)


@pytest.mark.slow
def test_cli_exits_non_zero_with_one_line_for_k_above_d(tmp_path):
    env = {**os.environ, "REPRO_RUNS": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "common.reproduce", "adkd", *[f"--set={s}" for s in TINY_SYNTHETIC]]
    proc = subprocess.run(
        [*args, "--set=synthetic.student.top_k=100"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "adkd toy: toy-signal-sum: top-K K = 100 must be between 1 and the teacher's hidden size d = 48"
    )


def test_small_preset_without_the_model_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = apply_overrides(get_config("small"), ["glue.tasks=[sst2]"])
    mirror = _mirror(tmp_path, ["1\tgood", "0\tbad"])
    with pytest.raises(SystemExit) as err:
        reproduce(cfg, data_dir=str(mirror))
    assert "\n" not in str(err.value) and "could not be loaded" in str(err.value)


def _rows(out: Path) -> list[dict]:
    with open(out / "reproduced.csv") as f:
        return list(csv.DictReader(f))


def test_tiny_synthetic_run_writes_results_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    cfg = apply_overrides(get_config("toy"), TINY_SYNTHETIC)
    out = reproduce(cfg, results_root=tmp_path)
    rows = _rows(out)
    assert {(r["method"], r["setting"]) for r in rows} == {
        (m, f"toy-signal-sum n_student=64 seed {s}") for m in ("KD", "AD-KD") for s in (0, 1)
    } | {("teacher", "toy-signal-sum n_teacher=256")}
    assert all(r["benchmark"] == "toy-signal-sum" and 0 <= float(r["value"]) <= 100 for r in rows)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seeds"] == [0, 1] and "toy-signal-sum" in prov["tasks"]
    assert (out / "toy-signal-sum.png").stat().st_size > 0
    again = reproduce(cfg, results_root=tmp_path)  # every stage cached: the same numbers
    assert _rows(again) == rows
    arm = next((tmp_path / "runs" / "adkd" / "toy" / "toy-signal-sum").glob("AD-KD-seed1-*"))
    (arm / "metrics.json").unlink()  # as if killed before its last write: retrained, bit for bit
    assert _rows(reproduce(cfg, results_root=tmp_path)) == rows


def test_data_error_is_a_data_error():
    with pytest.raises(DataError, match="unknown GLUE task"):
        glue_task("wnli", get_config("toy").glue.data, None, None)


def test_pkd_across_hidden_sizes_is_one_line():
    cfg = apply_overrides(get_config("toy"), [*TINY_SYNTHETIC, "synthetic.student.methods=[KD, PKD]"])
    with pytest.raises(
        SystemExit, match=r"PKD needs the student's hidden size \(32\) to equal the teacher's \(48\)"
    ):
        reproduce(cfg)


@pytest.mark.slow
@needs_shared
def test_tiny_real_sst2_run_with_minilm(tmp_path, monkeypatch):
    """The HF path end to end on the real files: MiniLM teacher, 2-layer student, KD and AD-KD."""
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    sets = [
        "synthetic.enabled=false",
        "seeds=[0]",
        "run.workers=1",
        "glue.data.n_teacher_train=64",
        "glue.data.n_teacher_val=32",
        "glue.data.n_student_train=32",
        "glue.data.n_test=64",
        "glue.teacher.epochs=1",
        "glue.student.epochs=1",
        "glue.student.net.num_layers=2",
    ]
    out = reproduce(apply_overrides(get_config("toy"), sets), results_root=tmp_path)
    rows = _rows(out)
    assert {r["method"] for r in rows} == {"KD", "AD-KD", "teacher"} and {r["benchmark"] for r in rows} == {
        "SST-2 dev"
    }
    assert all(0 <= float(r["value"]) <= 100 for r in rows)
