"""The `evaluate` modules under metrics/: each loads by path, offline, and equals the project's function.

Every module is a thin wrapper (one implementation); these tests load it with `evaluate.load(<path>)` and
compare its numbers with the plain function on real data from ../shared/data (and on the spec's vectors
where a spec gives them), and check that bad input stops with one clear line.
"""

from __future__ import annotations

import json
import os
import random
from functools import cache
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
evaluate = pytest.importorskip("evaluate")

from common.data import load_rows, shared_mirror  # noqa: E402
from common.metric_inputs import CheckedColumns  # noqa: E402
from common.scoring import extract_choice, gsm8k_is_correct, math_is_correct  # noqa: E402
from papers.socialbench.data import load_items  # noqa: E402
from papers.socialbench.prompts import column_of, normalize_category  # noqa: E402
from papers.socialbench.scoring import Graded, score_item, summarize  # noqa: E402
from papers.umi.data import OOD_TEST, load_trajectories, static_steps, toolbench_root  # noqa: E402
from papers.umi.metrics import static_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_mirror()
needs_data = pytest.mark.skipif(
    DATA is None, reason="../shared/data (the data mirror) is not beside the checkout"
)
TEXT_MODULES = ("gsm8k_accuracy", "math_accuracy", "mcq_accuracy", "socialbench", "umi_step_metrics")
MODULES = (*TEXT_MODULES, "processbench_f1")  # processbench_f1 (int columns): test_processbench_f1.py


@cache
def load(name: str):
    """The module loaded from its file path, as a user would (no hub access)."""
    return evaluate.load(str(ROOT / "metrics" / name / f"{name}.py"))


def test_every_metric_folder_is_tested():
    folders = {p.name for p in (ROOT / "metrics").iterdir() if (p / f"{p.name}.py").exists()}
    assert folders == set(MODULES)


def test_a_folder_path_loads_too():
    metric = evaluate.load(str(ROOT / "metrics" / "gsm8k_accuracy"))
    assert metric.compute(predictions=["#### 3"], references=["3"])["strict_accuracy"] == 1.0


@pytest.mark.parametrize("name", MODULES)
def test_each_module_is_its_own_class_over_the_shared_check(name):
    """evaluate.load takes the first EvaluationModule subclass in the file: the module's, never the mixin,
    and its input check is common.metric_inputs' (one implementation)."""
    metric = load(name)
    assert isinstance(metric, CheckedColumns) and type(metric) is not CheckedColumns
    assert metric.metric_name == name
    assert "def check_columns" not in (ROOT / "metrics" / name / f"{name}.py").read_text()


def test_each_import_sits_on_its_own_line():
    """evaluate reads `import a, b` as one missing package named "a,"; keep every import separate."""
    for name in MODULES:
        for number, line in enumerate((ROOT / "metrics" / name / f"{name}.py").read_text().splitlines(), 1):
            assert not (line.startswith("import ") and "," in line), (
                f"metrics/{name}/{name}.py:{number}: {line}"
            )


# ---- GSM8K --------------------------------------------------------------------------------------------


@needs_data
def test_gsm8k_equals_the_plain_function_on_real_test_rows():
    rows = load_rows("gsm8k", "test", DATA)[:300]
    rng = random.Random(0)
    preds = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]
        kind = i % 4  # correct with ####, correct without ####, wrong with ####, an answer buried mid-text
        if kind == 0:
            preds.append(f"{row['rationale']}\n#### {row['answer']}")
        elif kind == 1:
            preds.append(f"{row['rationale']} So the answer is {row['answer']}.")
        elif kind == 2:
            preds.append(f"{other['rationale']}\n#### {other['answer']}")
        else:
            preds.append(f"#### {row['answer']} but then {rng.randint(1, 9)} more")
    refs = [row["answer"] for row in rows]
    got = load("gsm8k_accuracy").compute(predictions=preds, references=refs)
    strict = sum(gsm8k_is_correct(p, r, "strict") for p, r in zip(preds, refs)) / len(refs)
    flexible = sum(gsm8k_is_correct(p, r, "flexible") for p, r in zip(preds, refs)) / len(refs)
    assert got == {"strict_accuracy": strict, "flexible_accuracy": flexible, "n": len(refs)}
    assert strict != flexible  # both are reported because they differ
    assert 0.2 < strict < 0.8 and 0.2 < flexible < 0.8


def test_gsm8k_takes_full_gsm8k_solutions_as_references():
    got = load("gsm8k_accuracy").compute(
        predictions=["x #### 1,000", "1000.0"], references=["a\n#### 1000"] * 2
    )
    assert got == {"strict_accuracy": 0.5, "flexible_accuracy": 1.0, "n": 2}


# ---- MATH ---------------------------------------------------------------------------------------------


@needs_data
def test_math_equals_math_verify_on_real_math500_rows():
    rows = load_rows("math500", "test", DATA)[:40]
    preds = [
        row["solution"] if i % 2 == 0 else rows[(i + 7) % len(rows)]["solution"] for i, row in enumerate(rows)
    ]
    refs = [row["answer"] for row in rows]
    got = load("math_accuracy").compute(predictions=preds, references=refs)
    want = sum(math_is_correct(p, r) for p, r in zip(preds, refs)) / len(refs)
    assert got == {"accuracy": want, "n": len(refs)}
    assert 0.3 < want < 0.7


# ---- multiple choice -----------------------------------------------------------------------------------


@needs_data
def test_mcq_equals_extract_choice_on_real_arc_rows():
    rows = json.loads((DATA / "proxykd" / "ARC" / "test.json").read_text())[:200]
    refs = [row["label"] for row in rows]
    forms = ["The answer is ({}).", "{}. because", "**{}**", "Answer: {}", "I think (A) or ({})", "no idea"]
    preds = []
    for i, ref in enumerate(refs):
        letter = ref if i % 3 else "ABCD"[(("ABCD".index(ref)) + 1) % 4]
        preds.append(forms[i % len(forms)].format(letter))
    got = load("mcq_accuracy").compute(predictions=preds, references=refs, choices="ABCD")
    chosen = [extract_choice(p, "ABCD") for p in preds]
    assert got["accuracy"] == sum(c == r for c, r in zip(chosen, refs)) / len(refs)
    assert got["no_choice_rate"] == sum(c is None for c in chosen) / len(refs)
    assert 0 < got["no_choice_rate"] < got["accuracy"] < 1


def test_mcq_rejects_a_reference_outside_the_choices():
    with pytest.raises(ValueError, match=r"references\[1\] is 'E', not one of the choices 'ABCD'"):
        load("mcq_accuracy").compute(predictions=["A", "B"], references=["A", "E"], choices="ABCD")


# ---- SocialBench ---------------------------------------------------------------------------------------


@cache
def ep_items() -> list[dict]:
    return load_items(["EP Situ.", "EP Emo."], DATA, download=False)


def socialbench(outputs: list[str], items: list[dict]) -> dict:
    return load("socialbench").compute(
        predictions=outputs,
        references=[it["label"] for it in items],
        categories=[it["meta"]["category"] for it in items],
        langs=[it["meta"].get("lang", "zh") for it in items],
    )


@needs_data
def test_socialbench_equals_the_evaluator_on_the_real_ep_file():
    items = ep_items()
    assert len(items) == 1209
    rng = random.Random(0)
    outputs = []
    for it in items:  # the gold, a random letter, letters in prose, nothing parseable
        roll = rng.random()
        letters = list(it["choices"])
        if roll < 0.3:
            outputs.append(",".join(it["label"]))
        elif roll < 0.6:
            outputs.append(rng.choice(letters))
        elif roll < 0.85:
            outputs.append(f"I would say {rng.choice(letters)} and maybe {rng.choice(letters)}")
        else:
            outputs.append("hmm, hard to say")
    got = socialbench(outputs, items)
    scores = [score_item(it, out) for it, out in zip(items, outputs)]
    assert got["item_scores"] == scores
    graded = [
        Graded(column_of(it), normalize_category(it), it["meta"].get("lang", "zh"), s)
        for it, s in zip(items, scores)
    ]
    want = summarize(graded)
    assert got["columns"] == want["columns"]
    assert got["categories"] == want["categories"]
    assert got["languages"] == want["languages"]
    assert got["score"] == pytest.approx(want["avg"]["official"], abs=1e-12)
    assert got["score_strict"] == pytest.approx(want["avg"]["strict"], abs=1e-12)
    undefined = sum(s is None for s in scores)
    assert got["parse_failure_rate"] == pytest.approx(100 * undefined / len(scores))
    assert got["score"] > got["score_strict"] and undefined > 0  # the two aggregates differ when parses fail


@needs_data
def test_socialbench_spec_acceptance_policies():
    """Spec "Toy-scale check" 1: oracle 100.00; always "A" 11.92 / 22.09 / 26.23 (+-0.01)."""
    items = ep_items()
    oracle = socialbench([",".join(it["label"]) for it in items], items)
    assert all(c["official"] == 100.0 for c in oracle["categories"].values())
    always_a = socialbench(["A"] * len(items), items)["categories"]
    for category, want in (
        ("Individual-EP-DialogueEmotionDetect", 11.92),
        ("Individual-EP-HumorSarcasmDetect", 22.09),
        ("Individual-EP-SituationUnderstanding", 26.23),
    ):
        assert always_a[category]["official"] == pytest.approx(want, abs=0.01)


def test_socialbench_spec_extractor_vectors_through_the_module():
    """Spec "Output parsing" vectors, seen through the per-item rule (single gold letter = first letter)."""
    emo = "Individual-EP-DialogueEmotionDetect"
    situ = "Individual-EP-SituationUnderstanding"
    cases = [  # (output, label, category, score)
        ("B.", ["B"], emo, 1.0),
        ("答案是B", ["B"], emo, 1.0),
        ("A good answer is C", ["C"], emo, 0.0),  # extracted [A, C]: only the first counts
        ("B\n\nExplanation: A is wrong", ["B"], emo, 1.0),
        ("I think B", ["B"], emo, 1.0),
        ("b", ["B"], emo, None),
        ("A、C", ["A", "C", "D"], situ, 2 / 3),
        ("ACE", ["A", "C"], situ, 0.0),  # extracted [A, E]: E is wrong
        ("I plan to go for a drive and meet Nick.", ["drive", "party"], "Individual-MEM-Short", 0.5),
        ("", ["drive"], "Individual-MEM-Long", None),
    ]
    got = load("socialbench").compute(
        predictions=[c[0] for c in cases], references=[c[1] for c in cases], categories=[c[2] for c in cases]
    )
    assert got["item_scores"] == pytest.approx([c[3] for c in cases])
    assert got["parse_failure_rate"] == pytest.approx(20.0)


def test_socialbench_bad_item_is_one_line():
    with pytest.raises(ValueError, match=r"^socialbench: item 1: unknown category 'EP'"):
        load("socialbench").compute(
            predictions=["A", "B"], references=[["A"], ["B"]], categories=[situ(), "EP"]
        )
    with pytest.raises(
        ValueError, match=r"^socialbench: references\[0\] is \[\], expected a non-empty list of str$"
    ):
        load("socialbench").compute(predictions=["A"], references=[[]], categories=[situ()])


def situ() -> str:
    return "Individual-EP-SituationUnderstanding"


# ---- bad input, every module ----------------------------------------------------------------------------


def _call(name: str, n_pred: int, bad_prediction: object = None) -> None:
    preds: list = ["A"] * n_pred
    if bad_prediction is not None:
        preds[-1] = bad_prediction
    extra = {
        "socialbench": {"references": [["A"]] * 3, "categories": [situ()] * 3},
        "umi_step_metrics": {"references": ["x"] * 3, "tool_names": [["t"]] * 3},
    }.get(name, {"references": ["A"] * 3})
    load(name).compute(predictions=preds, **extra)


@pytest.mark.parametrize("name", TEXT_MODULES)
def test_bad_input_is_one_clear_line(name):
    with pytest.raises(ValueError, match=rf"^{name}: columns of unequal length: predictions=2, references=3"):
        _call(name, 2)
    with pytest.raises(ValueError, match=rf"^{name}: predictions\[2\] is int 7, expected str$"):
        _call(name, 3, bad_prediction=7)
    with pytest.raises(ValueError, match=rf"^{name}: predictions\[0\] is NoneType None, expected str$"):
        load(name).add(prediction=None, reference=["A"] if name == "socialbench" else "A")


# ---- alpha-UMi ------------------------------------------------------------------------------------------


def call_step(action: str, args: str, thought: str = "use it") -> str:
    return f"assistant: {thought} Next: caller.</s>caller: Action: {action}\nAction Input: {args}</s>"


def test_umi_spec_vectors():
    ref = call_step("search", '{"a":1,"b":2}')
    finish = "assistant: done Next: conclusion.</s>conclusion: the capital is Paris</s>"
    metric = load("umi_step_metrics")
    same = metric.compute(predictions=[ref, finish], references=[ref, finish], tool_names=[["search"]] * 2)
    assert same["Plan ACC"] == same["Act. EM"] == same["Arg. F1"] == same["Rouge-L"] == 100.0
    assert same["Hallu."] == 0.0
    for pred_args, f1 in (
        ('{"a":1,"b":3}', 75.0),
        ('{"a":1}', 200 / 3),
        ('{"a":1,"b":2,"c":0}', 80.0),
        ("x", 0.0),
    ):
        got = metric.compute(
            predictions=[call_step("search", pred_args)], references=[ref], tool_names=[["search"]]
        )
        assert got["Arg. F1"] == pytest.approx(f1, abs=1e-3)
    wrong = [call_step("invented", '{"a":1,"b":2}'), finish]
    got = metric.compute(predictions=wrong, references=[ref, finish], tool_names=[["search"]] * 2)
    assert got["Act. EM"] == 0.0 and got["Arg. F1"] == 0.0 and got["Hallu."] == 50.0  # all steps count
    steps = [
        {"prediction": p, "reference": r, "tool_names": ["search"]} for p, r in zip(wrong, [ref, finish])
    ]
    assert got == static_metrics(steps)


@needs_data
def test_umi_equals_static_metrics_on_the_real_ood_steps():
    root = toolbench_root(DATA)
    steps = static_steps(load_trajectories(root / OOD_TEST), str(root / OOD_TEST))
    assert len(steps) == 1547
    rng = random.Random(0)  # predictions: the reference, another step's reference, or a truncated one
    preds = []
    for i, step in enumerate(steps):
        roll = rng.random()
        if roll < 0.5:
            preds.append(step["reference"])
        elif roll < 0.8:
            preds.append(steps[(i + 3) % len(steps)]["reference"])
        else:
            preds.append(step["reference"][: len(step["reference"]) // 2])
    got = load("umi_step_metrics").compute(
        predictions=preds,
        references=[s["reference"] for s in steps],
        tool_names=[s["tool_names"] for s in steps],
    )
    want = static_metrics([{**s, "prediction": p} for s, p in zip(steps, preds)])
    assert got == want
    assert got["Hallu."] > 0 and 0 < got["Plan ACC"] < 100
