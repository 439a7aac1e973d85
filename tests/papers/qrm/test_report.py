"""qrm's report: the convergence speedup behind the "12x faster" claim, its rows and their verdict."""

from dataclasses import replace

import pytest

from common import claims as claims_mod
from papers.qrm.config import get_config
from papers.qrm.data import toy_task
from papers.qrm.report import result_rows, steps_to_threshold


def _curve(values, every=4):
    return [{"step": i * every, "val_pass@1": v} for i, v in enumerate(values)]


def test_speedup_is_orm_steps_over_qrm_steps_to_the_orm_best():
    orm = _curve([0.40, 0.41, 0.45, 0.44, 0.46])  # best 0.46 at step 16
    qrm = _curve([0.40, 0.47, 0.40, 0.40, 0.40])  # reaches it at step 4
    got = steps_to_threshold(qrm, orm)
    assert (got["orm_steps"], got["qrm_steps"], got["speedup"], got["speedup_bound"]) == (16, 4, 4.0, None)


def test_a_qrm_arm_that_never_reaches_it_gives_an_upper_bound_below_one():
    orm = _curve([0.40, 0.41, 0.46, 0.44, 0.45])  # best at step 8
    got = steps_to_threshold(_curve([0.40] * 5), orm)  # never reaches 0.46 in its 16 steps
    assert got["qrm_steps"] is None and got["speedup"] is None
    assert got["speedup_bound"] == pytest.approx(8 / 16)


def test_an_orm_arm_that_never_improves_defines_no_speedup():
    got = steps_to_threshold(_curve([0.5, 0.6]), _curve([0.5, 0.4]))
    assert not got["defined"] and got["speedup"] is None


def test_speedup_rows_and_the_convergence_claim(tmp_path):
    cfg = get_config("toy")
    task = toy_task(replace(cfg, data=replace(cfg.data, train_problems=4, val_problems=2, test_problems=2)))
    test = {"Pass@1": 0.5}
    runs = []
    for seed, (q, o) in enumerate(
        [([0.4, 0.5, 0.5], [0.4, 0.42, 0.45]), ([0.4, 0.4, 0.4], [0.4, 0.45, 0.4])]
    ):
        for method, values in (("REINFORCE+Q-RM", q), ("REINFORCE+ORM", o)):
            runs.append(
                {"task": "arith", "method": method, "seed": seed, "test": test, "curve": _curve(values)}
            )
    sft = {"arith": {"val": 0.4, "test": test}}
    rows = [r for r in result_rows(cfg, [task], sft, runs, []) if r["metric"] == "convergence speedup (x)"]
    assert [(r["setting"], r["method"], r["benchmark"], r["value"]) for r in rows] == [
        ("arith seed 0", "REINFORCE+Q-RM vs REINFORCE+ORM", "toy-arith", 2.0),  # 8 / 4
        ("arith seed 1", "REINFORCE+Q-RM vs REINFORCE+ORM", "toy-arith", 0.5),  # bound: 4 / 8
    ]
    claims = {c["id"]: c for c in claims_mod.load_claims("qrm")}
    deltas = claims_mod.paired_deltas(claims["qrm_converges_faster_than_orm"]["toy"], rows)
    assert sorted(deltas) == [0.5, 2.0]


def test_calibration_gate_reads_the_oracle_arm_against_sft_on_test():
    from papers.qrm.pipeline import calibration_gate

    sft = {"arith": {"test": {"Pass@1": 0.12, "Pass@1 (sampled)": 0.22}}}

    def run(seed, greedy, sampled, method="REINFORCE+oracle"):
        test = {"Pass@1": greedy, "Pass@1 (sampled)": sampled}
        return {"task": "arith", "method": method, "seed": seed, "test": test}

    runs = [run(0, 0.60, 0.40), run(1, 0.18, 0.40), run(0, 0.0, 0.0, "REINFORCE+ORM")]
    g = calibration_gate(sft, runs)
    assert g["split"] == "test" and g["seeds"] == [0, 1] and g["gate"] == "passes"
    assert g["deltas"] == [{"greedy": 48.0, "sampled": 18.0}, {"greedy": 6.0, "sampled": 18.0}]
    assert calibration_gate(sft, [runs[0], run(1, 0.16, 0.40)])["gate"] == "fails"  # seed 1: +4 greedy
    assert calibration_gate(sft, [runs[0], run(1, 0.60, 0.31)])["gate"] == "fails"  # seed 1: +9 sampled
    assert calibration_gate({}, runs) is None and calibration_gate(sft, runs[2:]) is None
