"""Determinism of a reduced toy reproduction (issue 14, item 3): AD-KD's synthetic signal-sum run.

Two runs of the same resolved config, each from an empty REPRO_RUNS (the second in a fresh interpreter
with another PYTHONHASHSEED), write byte-identical reproduced.csv files; their provenance records every
seed the run used (the run's `seeds`, the data seed, the teacher's seed, the seed of every student arm)
and the same commit and package versions; and a run with another seed writes another table, so the
comparison can fail. Results go to a tmp repo root (`results_root`), never to the committed
papers/adkd/results/ (checked).

AD-KD is the cheapest trained pipeline here: a 2-layer teacher and 1-layer students from scratch, a few
CPU-seconds per run at these sizes (about 35 CPU-s for the whole test, interpreter start included). A
smaller teacher stays at the majority class, and then every seed gives the same table and the last
check has no teeth.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import apply_overrides, config_dict
from papers.adkd.config import get_config
from papers.adkd.pipeline import reproduce

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "papers" / "adkd" / "results"
# Non-default data and teacher seeds, so the provenance check cannot pass on the defaults by accident.
REDUCED = [
    "glue.enabled=false",
    "seeds=[0, 1]",
    "run.workers=1",
    "synthetic.data.data_seed=3",
    "synthetic.data.n_teacher_train=512",
    "synthetic.data.n_teacher_val=64",
    "synthetic.data.n_student_train=64",
    "synthetic.data.n_test=400",
    "synthetic.teacher.seed=7",
    "synthetic.teacher.epochs=4",
    "synthetic.student.epochs=6",
]


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _seed_leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """`dotted.path -> value` of every config field whose name mentions a seed."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _seed_leaves(value, f"{prefix}{key}.")
        elif "seed" in key:
            out[prefix + key] = value
    return out


def _run(cfg, tmp: Path, name: str, monkeypatch) -> Path:
    monkeypatch.setenv("REPRO_RUNS", str(tmp / name / "runs"))
    return reproduce(cfg, results_root=tmp / name)


# The second run in a fresh interpreter with another string-hash seed: no state carried over from the
# first run, and no table that depends on set or dict-of-str iteration order.
SECOND_RUN = """
import sys
from pathlib import Path
from common.config import apply_overrides
from papers.adkd.config import get_config
from papers.adkd.pipeline import reproduce
reproduce(apply_overrides(get_config("toy"), sys.argv[2:]), results_root=Path(sys.argv[1]))
"""


def _run_in_subprocess(tmp: Path, name: str) -> Path:
    env = {**os.environ, "REPRO_RUNS": str(tmp / name / "runs"), "PYTHONHASHSEED": "12345"}
    args = [sys.executable, "-c", SECOND_RUN, str(tmp / name), *REDUCED]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / name / "papers" / "adkd" / "results" / "toy"


@pytest.mark.slow
def test_reduced_toy_is_byte_identical_across_fresh_runs_and_a_new_seed_changes_it(tmp_path, monkeypatch):
    committed = _checksums(COMMITTED)
    cfg = apply_overrides(get_config("toy"), REDUCED)
    first = _run(cfg, tmp_path, "a", monkeypatch)
    second = _run_in_subprocess(tmp_path, "b")
    table = (first / "reproduced.csv").read_bytes()
    assert (second / "reproduced.csv").read_bytes() == table

    prov_a, prov_b = (json.loads((out / "provenance.json").read_text()) for out in (first, second))
    assert prov_a["seeds"] == prov_b["seeds"] == [0, 1]
    want = _seed_leaves(config_dict(cfg))
    assert want["synthetic.data.data_seed"] == 3 and want["synthetic.teacher.seed"] == 7
    assert _seed_leaves(prov_a["config"]) == _seed_leaves(prov_b["config"]) == want
    arms = prov_a["tasks"]["toy-signal-sum"]["arms"]
    assert sorted((a["method"], a["seed"]) for a in arms) == [
        ("AD-KD", 0),
        ("AD-KD", 1),
        ("KD", 0),
        ("KD", 1),
    ]
    for key in ("commit", "dirty", "versions", "python"):
        assert prov_a[key] == prov_b[key], key

    # Another run seed (the teacher, its seed and the data unchanged, so its stage is reused): the
    # students' numbers move, not only the `seed N` in the setting column.
    other = _run(apply_overrides(cfg, ["seeds=[2]"]), tmp_path, "b", monkeypatch)
    rows = [line.split(",") for line in table.decode().splitlines()[1:]]
    new_rows = [line.split(",") for line in (other / "reproduced.csv").read_text().splitlines()[1:]]
    students = {(r[3], r[6]) for r in rows if r[3] != "teacher" and r[1].endswith("seed 0")}
    new_students = {(r[3], r[6]) for r in new_rows if r[3] != "teacher"}
    assert {m for m, _ in new_students} == {"KD", "AD-KD"} and new_students != students
    assert _checksums(COMMITTED) == committed
