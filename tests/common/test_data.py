"""common.data: every registered split loads from the shared mirror with the documented counts and
row schema; bad rows, names and paths stop with one clear line; the mirror/env switch; the hub path as
far as it runs offline (a fake `load_dataset` for the field mapping, a real offline call for the error)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from common import data
from common.scoring import normalize_number
from papers.ipvrm.data import DATASETS as IPVRM
from papers.mcckd.data import DATASETS as MCCKD
from papers.proxykd.data import DATASETS as PROXYKD
from papers.qrm.data import DATASETS as QRM

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"

# Row counts from each folder's SOURCE.md.
COUNTS = {
    ("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319, ("math500", "test"): 500, ("svamp", "test"): 1000,
    ("asdiv", "test"): 2215, ("asdiv", "full"): 2305, ("sst2", "validation"): 872,
    ("processbench", "gsm8k"): 400, ("processbench", "math"): 1000, ("processbench", "olympiadbench"): 1000,
    ("processbench", "omnimath"): 1000, ("mcckd-gsm8k", "dev"): 660, ("mcckd-gsm8k", "test"): 659,
    ("mcckd-svamp", "train"): 700, ("mcckd-svamp", "dev"): 150, ("mcckd-svamp", "test"): 150,
    ("mcckd-asdiv", "dev"): 313, ("mcckd-asdiv", "test"): 314, ("mcckd-csqa", "dev"): 1221,
    ("mcckd-csqa", "test"): 1221, ("proxykd-agieval", "test"): 2071, ("proxykd-arc", "test"): 1172,
    ("proxykd-bbh", "test"): 5511, ("proxykd-csqa", "test"): 2442, ("proxykd-gsm8k", "test"): 1319,
    ("qrm-gsm8k", "test"): 1319, ("qrm-math", "test"): 4926, ("qrm-math", "train"): 36864,
    ("qrm-gsm8k-pairwise", "test"): 787, ("qrm-math-pairwise", "test"): 2291,
    ("ipvrm-policy-eval", "validation"): 1620,
}  # fmt: skip
# common's sets and each paper's own declarations (papers/<slug>/data.py)
REGISTRY = {**data.DATASETS, **IPVRM, **MCCKD, **PROXYKD, **QRM}
NUMERIC = {"gsm8k", "svamp", "mcckd-gsm8k", "mcckd-svamp", "mcckd-asdiv", "proxykd-gsm8k", "qrm-gsm8k"}


def load(name: str, split: str, data_dir=None) -> list[dict]:
    return data.load_rows(REGISTRY[name], split, data_dir)


NOT_MIRRORED = {("proxykd-mmlu", "test")}
"""Registered splits ../shared/data does not hold: read from the hub (cais/mmlu at small / paper scale)."""


def test_registry_and_counts_cover_each_other():
    registered = {(n, s) for n in REGISTRY for s in data.split_names(REGISTRY[n])}
    assert registered - NOT_MIRRORED == set(COUNTS) and registered >= NOT_MIRRORED
    assert all(REGISTRY[n].hub_id for n, _ in NOT_MIRRORED)  # each has a hub copy to read instead
    assert len(REGISTRY) == len(data.DATASETS) + len(IPVRM) + len(MCCKD) + len(PROXYKD) + len(QRM)
    assert set(data.DATASETS) == {"gsm8k", "math500", "svamp", "asdiv", "sst2", "processbench"}


@pytest.mark.parametrize("name, split", sorted(COUNTS))
def test_every_split_loads_from_the_mirror_with_the_row_schema(name, split):
    rows = load(name, split, data_dir=DATA)
    assert len(rows) == COUNTS[name, split]
    ids = [row["id"] for row in rows]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids)
    text_key = "sentence" if name == "sst2" else "question"
    assert all(isinstance(row[text_key], str) and row[text_key].strip() for row in rows)
    if name not in ("sst2", "processbench", "qrm-gsm8k-pairwise"):
        assert all(isinstance(row["answer"], str) for row in rows)
    if name in NUMERIC:
        assert all(row["answer"] == normalize_number(row["answer"]) for row in rows)


def test_normalised_contents_of_the_math_datasets():
    gsm8k = data.load_rows("gsm8k", "test", DATA)
    assert gsm8k[0]["answer"] == "18" and gsm8k[0]["id"] == "gsm8k-test-0"
    assert gsm8k[0]["rationale"].endswith("$<<9*2=18>>18 every day at the farmer’s market.")
    assert "2125" in {r["answer"] for r in gsm8k}  # "#### 2,125" in the file
    assert not any("####" in r["rationale"] for r in gsm8k)
    math500 = data.load_rows("math500", "test", DATA)[0]
    assert (
        math500["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
        and math500["id"] == "test/precalculus/807.json"
    )
    assert "\\boxed{" in math500["solution"] and math500["level"] == 2
    svamp = data.load_rows("svamp", "test", DATA)[0]
    assert svamp["question"] == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert (svamp["id"], svamp["answer"]) == ("chal-1", "51")
    asdiv = {r["answer_with_unit"]: r["answer"] for r in data.load_rows("asdiv", "full", DATA)}
    assert asdiv["9 (apples)"] == "9" and asdiv["6 (cm); 15 (cm)"] == "6; 15" and asdiv["Yes"] == "Yes"


def test_contents_of_the_other_datasets():
    assert Counter(r["label"] for r in data.load_rows("sst2", "validation", DATA)) == {1: 444, 0: 428}
    bench = data.load_rows("processbench", "gsm8k", DATA)
    assert sum(r["label"] == -1 for r in bench) == 193 and all(r["steps"] for r in bench)
    rationales = load("mcckd-svamp", "train", DATA)
    assert all(len(r["rationales"]) == 10 for r in rationales)
    assert "rationale" not in load("mcckd-svamp", "test", DATA)[0]  # empty output
    assert Counter(r["data_source"] for r in load("ipvrm-policy-eval", "validation", DATA)) == {
        "olympiad-bench": 675, "math-500": 500, "minerva-math": 272, "aimo-aime2024": 90, "aimo-amc": 83
    }  # fmt: skip
    assert set(r["answer"] for r in load("mcckd-csqa", "dev", DATA)) == set("ABCDE")


# --- bad input -----------------------------------------------------------------------------------------


def _mirror(tmp_path: Path, relpath: str, content: str) -> Path:
    path = tmp_path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return tmp_path


def _jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


GOOD_GSM8K = {"question": "q?", "answer": "1 + 1 = 2\n#### 2"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"question": "q?"}, "row 3: field 'answer' missing"),
        ({"question": 5, "answer": "#### 2"}, "row 3: field 'question' should be str, got int"),
        ({"question": "q?", "answer": "two"}, "row 3: field 'answer' has no final '#### <number>'"),
        ("{not json", "row 3: not valid JSON"),
        ("[1, 2]", "row 3: expected an object, got list"),
    ],
)
def test_bad_gsm8k_row_names_file_row_and_field(tmp_path, bad, message):
    root = _mirror(tmp_path, "gsm8k/test.jsonl", _jsonl(GOOD_GSM8K, GOOD_GSM8K, bad, GOOD_GSM8K))
    with pytest.raises(data.DataError) as err:
        data.load_rows("gsm8k", "test", data_dir=root)
    assert str(err.value).startswith(str(root / "gsm8k" / "test.jsonl") + " " + message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name, split, relpath, record, message",
    [
        ("math500", "test", "math500/test.jsonl",
         {"problem": "p", "solution": "s", "answer": "1", "subject": "x", "level": "2", "unique_id": "u"},
         "row 1: field 'level' should be int, got str '2'"),
        ("svamp", "test", "svamp/SVAMP.json",
         [{"ID": "c", "Body": "b", "Question": "q", "Equation": "e", "Answer": "many", "Type": "t"}],
         "row 1: field 'Answer' is not a number: 'many'"),
        ("processbench", "math", "ipvrm/processbench/math.json",
         [{"id": "m", "generator": "g", "problem": "p", "steps": ["a"], "final_answer_correct": True, "label": True}],
         "row 1: field 'label' should be int, got bool"),
        ("processbench", "math", "ipvrm/processbench/math.json",
         [{"id": "m", "generator": "g", "problem": "p", "steps": ["a", 2], "final_answer_correct": True, "label": 0}],
         "row 1: field 'steps' should be a list of strings"),
        ("ipvrm-policy-eval", "validation", "ipvrm/policy_eval/val.jsonl",
         {"data_source": "d", "prompt": [{"role": "user", "content": "c"}], "reward_model": {"style": "rule"}},
         "row 1: field 'reward_model.ground_truth' missing"),
        ("mcckd-csqa", "dev", "mcckd/CSQA/dev.json", [{"instruction": "q", "output": "", "label": "F"}],
         "row 1: field 'label' should be one letter A-E, got 'F'"),
        ("sst2", "validation", "sst2/dev.tsv", "sentence\tlabel\ngood film\t1\nbad film\t2\n",
         "row 2: field 'label' should be 0 or 1, got '2'"),
        ("proxykd-arc", "test", "proxykd/ARC/test.json", {"instruction": "q", "label": "A"},
         ": expected a JSON list of records, got dict"),
        ("asdiv", "full", "asdiv/ASDiv.xml", "<ProblemSet><Problem ID='1'>", ": not valid XML"),
    ],
)  # fmt: skip
def test_bad_rows_of_other_layouts(tmp_path, name, split, relpath, record, message):
    if isinstance(record, str):
        content = record
    else:
        content = _jsonl(record) if relpath.endswith(".jsonl") else json.dumps(record)
    root = _mirror(tmp_path, relpath, content)
    with pytest.raises(data.DataError) as err:
        load(name, split, data_dir=root)
    assert str(err.value).startswith(str(root / relpath) + ("" if message.startswith(":") else " ") + message)


def test_missing_file_in_the_mirror(tmp_path):
    with pytest.raises(data.DataError, match=r"math500/test\.jsonl: file not found"):
        data.load_rows("math500", "test", data_dir=tmp_path)


def test_unknown_dataset_and_split_list_the_valid_ones():
    with pytest.raises(data.DataError) as err:
        data.load_rows("gsm9k", "test", DATA)
    assert str(err.value).startswith(
        "unknown dataset 'gsm9k'; valid: "
    ) and "gsm8k, math500, processbench" in str(err.value)
    with pytest.raises(
        data.DataError, match=r"^unknown split 'dev' for dataset 'gsm8k'; valid: test, train$"
    ):
        data.load_rows("gsm8k", "dev", DATA)


# --- mirror / env switch -----------------------------------------------------------------------------


def test_env_var_selects_the_mirror_and_data_dir_overrides_it(tmp_path, monkeypatch):
    env_root = _mirror(tmp_path / "env", "gsm8k/test.jsonl", _jsonl({"question": "env?", "answer": "#### 1"}))
    arg_root = _mirror(tmp_path / "arg", "gsm8k/test.jsonl", _jsonl({"question": "arg?", "answer": "#### 2"}))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_root))
    assert data.load_rows("gsm8k", "test") == [
        {"id": "gsm8k-test-0", "question": "env?", "answer": "1", "rationale": ""}
    ]
    assert data.load_rows("gsm8k", "test", data_dir=str(arg_root))[0]["question"] == "arg?"
    assert data.resolve_data_dir() == env_root
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match=f"nowhere \\(from {data.DATA_DIR_ENV}\\) is not a directory"):
        data.load_rows("gsm8k", "test")
    with pytest.raises(data.DataError, match=r"nowhere \(from --data-dir\) is not a directory"):
        data.load_rows("gsm8k", "test", data_dir=tmp_path / "nowhere")
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir() is None


# --- hub path ------------------------------------------------------------------------------------------


def test_hub_rows_go_through_the_same_field_mapping(monkeypatch):
    import datasets

    calls = []
    hub = {
        "openai/gsm8k": [GOOD_GSM8K, {"question": "q2", "answer": "#### 1,000"}],
        "ChilleD/SVAMP": [{"ID": "chal-777", "Body": "b.", "Question": "q?", "Equation": "e", "Answer": "145", "Type": "t"}],
        "stanfordnlp/sst2": [{"idx": 7, "sentence": "fine ", "label": 1}],
    }  # fmt: skip

    def fake_load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return hub[hub_id]

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert [r["answer"] for r in data.load_rows("gsm8k", "test")] == ["2", "1000"]
    assert data.load_rows("svamp", "test")[0] == {
        "id": "chal-777", "question": "b. q?", "answer": "145", "equation": "e", "type": "t"
    }  # fmt: skip
    assert data.load_rows("sst2", "validation") == [{"id": "7", "sentence": "fine", "label": 1}]
    assert calls == [
        ("openai/gsm8k", "main", "test"), ("ChilleD/SVAMP", None, "train+test"), ("stanfordnlp/sst2", None, "validation")
    ]  # fmt: skip
    hub["openai/gsm8k"] = [GOOD_GSM8K, {"question": "q2"}]
    with pytest.raises(
        data.DataError, match=r"^hf://openai/gsm8k\[main\]:test row 2: field 'answer' missing$"
    ):
        data.load_rows("gsm8k", "test")


def test_mirror_only_split_reads_shared_data_beside_the_checkout(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.shared_mirror() == (REPO.parent / "shared" / "data")
    assert len(load("qrm-math", "test")) == COUNTS["qrm-math", "test"]


def test_mirror_only_split_without_a_mirror_says_so(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "shared_mirror", lambda: None)
    with pytest.raises(
        data.DataUnavailableError,
        match="'qrm-math' split 'test' has no Hugging Face hub copy; pass --data-dir",
    ):
        load("qrm-math", "test")
    with pytest.raises(data.DataUnavailableError, match="'asdiv' split 'test' has no Hugging Face hub copy"):
        data.load_rows("asdiv", "test")


def test_offline_hub_without_mirror_fails_fast_with_one_clear_line(tmp_path):
    # A fresh process with an empty HF cache and HF_HUB_OFFLINE=1: the real `load_dataset` must fail
    # at once (no retries, no hang) and come back as our one-line error.
    env = {k: v for k, v in os.environ.items() if k != data.DATA_DIR_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1")
    code = (
        "from common import data\n"
        "try:\n    data.load_rows('gsm8k', 'test')\n"
        "except data.DataUnavailableError as e:\n    print('ERROR', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1, done.stdout + done.stderr
    assert "could not load hf://openai/gsm8k[main]:test from the Hugging Face hub" in lines[0]
    assert f"pass --data-dir DIR or set {data.DATA_DIR_ENV}" in lines[0]
