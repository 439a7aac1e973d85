"""The evaluator on the real EP data: acceptance values, saved outputs, resume, regrade and the CLI."""

import json
import statistics
from pathlib import Path

import pytest

from common.chat import ChatReply as Reply
from common.stages import StageError
from papers.socialbench import evaluate as cli
from papers.socialbench import stages
from papers.socialbench.chat_models import PolicyModel
from papers.socialbench.data import load_items
from papers.socialbench.pipeline import ALWAYS_A_EXPECTED, acceptance, chance_level
from papers.socialbench.stages import policy_summary

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def items():
    return load_items(["EP Situ.", "EP Emo."], SHARED)


def test_acceptance_values_on_the_real_ep_file(items):
    oracle, always_a = policy_summary("oracle", items), policy_summary("always-A", items)
    assert all(s["official"] == 100.0 for s in oracle["categories"].values())
    assert all(s["official"] == 100.0 for s in oracle["columns"].values())
    for category, want in ALWAYS_A_EXPECTED.items():
        assert always_a["categories"][category]["official"] == pytest.approx(want, abs=0.01)
    chance = chance_level(items)
    assert chance == pytest.approx(
        {
            "Individual-EP-DialogueEmotionDetect": 12.50,
            "Individual-EP-HumorSarcasmDetect": 25.16,
            "Individual-EP-SituationUnderstanding": 24.87,
        },
        abs=0.005,
    )
    runs = [policy_summary("random-letter", items, seed) for seed in range(20)]
    for category, want in chance.items():
        got = statistics.fmean(r["categories"][category]["official"] for r in runs)
        assert abs(got - want) <= 1.5
    pooled = statistics.fmean(r["columns"]["EP Emo."]["official"] for r in runs)
    assert abs(pooled - 17.63) <= 1.5
    assert acceptance(items, {"oracle": oracle, "always-A": always_a}, runs) == []
    # the acceptance test has teeth: a grader that were off by one item would fail it
    always_a["categories"]["Individual-EP-HumorSarcasmDetect"]["official"] += 100 / 412
    assert (
        "always-A Individual-EP-HumorSarcasmDetect"
        in acceptance(items, {"oracle": oracle, "always-A": always_a}, runs)[0]
    )
    # a category the always-A check expects but the scored items lack fails too (it passed silently)
    del always_a["categories"]["Individual-EP-SituationUnderstanding"]
    assert (
        "always-A Individual-EP-SituationUnderstanding: category missing from the scored items (expected 26.23)"
        in acceptance(items, {"oracle": oracle, "always-A": always_a}, runs)
    )


class CountingPolicy(PolicyModel):
    """always-A, counting the items it is asked about; optionally dies after some calls (a kill)."""

    def __init__(self, die_after_calls=None, fail_ids=()):
        super().__init__("always-A")
        self.asked, self.calls, self.die_after_calls, self.fail_ids = [], 0, die_after_calls, set(fail_ids)

    def answer(self, items):
        if self.die_after_calls is not None and self.calls >= self.die_after_calls:
            raise KeyboardInterrupt
        self.calls += 1
        self.asked += [it["id"] for it in items]
        return [Reply("", error="boom") if it["id"] in self.fail_ids else Reply("A") for it in items]


def test_outputs_saved_killed_run_resumes_without_requerying(items, tmp_path):
    subset = items[:50] + items[-50:]
    full = stages.evaluate(CountingPolicy(), subset, tmp_path / "full", chunk_size=16, progress=False)
    killed = CountingPolicy(die_after_calls=3)
    with pytest.raises(KeyboardInterrupt):
        stages.evaluate(killed, subset, tmp_path / "run", chunk_size=16, progress=False)
    saved = stages.read_outputs(tmp_path / "run" / "outputs.jsonl")
    assert len(saved) == 48
    resumed = CountingPolicy()
    again = stages.evaluate(resumed, subset, tmp_path / "run", chunk_size=16, progress=False)
    assert set(resumed.asked) == {it["id"] for it in subset} - set(saved)  # only the missing items
    assert again == full
    lines = (tmp_path / "run" / "outputs.jsonl").read_text().splitlines()
    assert len(lines) == 100
    record = json.loads(lines[0])
    assert set(record) >= {"id", "category", "column", "lang", "label", "output", "error"}
    assert json.loads((tmp_path / "run" / "scores.json").read_text()) == full
    assert stages.regrade(tmp_path / "run") == full  # regrading from the JSONL alone gives the same numbers


def test_failed_items_are_recorded_never_scored_and_retried(items, tmp_path):
    subset = items[:20]
    failing = {it["id"] for it in subset[:5]}
    first = stages.evaluate(CountingPolicy(fail_ids=failing), subset, tmp_path, progress=False)
    assert first["n_failed"] == 5
    cols = first["columns"].values()
    # not counted as wrong, in no denominator
    assert sum(c["n"] for c in cols) == 15 and sum(c["n_failed"] for c in cols) == 5
    retry = CountingPolicy()
    second = stages.evaluate(retry, subset, tmp_path, progress=False)
    assert set(retry.asked) == failing and second["n_failed"] == 0


def test_torn_last_line_is_dropped_and_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "outputs.jsonl"
    good = json.dumps({"id": "x:0", "output": "A"})
    path.write_text(good + "\n" + '{"id": "x:1", "outp')
    assert list(stages.read_outputs(path)) == ["x:0"]
    assert path.read_text() == good + "\n"
    path.write_text(good + "\nnot json\n" + good + "\n")
    with pytest.raises(StageError, match="outputs.jsonl: line 2 is not JSON"):
        stages.read_outputs(path)
    path.write_text(good + "\n" + json.dumps({"id": "x:1"}) + "\n")
    with pytest.raises(stages.RunError, match="outputs.jsonl record 2: bad record"):
        stages.read_outputs(path)


def test_resuming_with_other_settings_is_refused(items, tmp_path):
    stages.evaluate(PolicyModel("always-A"), items[:5], tmp_path, progress=False)
    with pytest.raises(stages.RunError, match="other model settings"):
        stages.evaluate(PolicyModel("oracle"), items[:5], tmp_path, progress=False)
    forced = stages.evaluate(PolicyModel("oracle"), items[:5], tmp_path, progress=False, force=True)
    assert forced["avg"]["official"] == 100.0


def test_parse_categories():
    assert cli.parse_categories("ep") == ["EP Situ.", "EP Emo."]
    assert cli.parse_categories("sp-neg,sa") == ["SA Style", "SA Know", "SP Neg."]
    assert cli.parse_categories("all") is None
    with pytest.raises(ValueError, match="unknown category 'ep-x'"):
        cli.parse_categories("ep-x")


def test_cli_runs_a_policy_prints_the_table_and_regrades(tmp_path, capsys):
    args = ["--model", "policy:always-A", "--categories", "ep", "--data-dir", str(SHARED)]
    rc = cli.main([*args, "--out", str(tmp_path), "--limit", "40", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EP Situ." in out and "Avg(2/9)" in out
    assert len((tmp_path / "outputs.jsonl").read_text().splitlines()) == 80
    assert cli.main(["--regrade", str(tmp_path)]) == 0
    assert capsys.readouterr().out == out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "policy:nope"], "unknown policy 'policy:nope'"),
        (["--model", "policy:oracle", "--categories", "xx"], "unknown category 'xx'"),
        (["--model", "policy:oracle", "--categories", "sa"], "self_awareness.json is in neither"),
        (["--regrade", "/nonexistent/run"], "no outputs to grade"),
        ([], "--model is required"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_default_run_directory_is_under_repro_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path))
    args = ["--model", "policy:oracle", "--categories", "ep-situ", "--data-dir", str(SHARED), "--limit", "3"]
    assert cli.main([*args, "--no-progress"]) == 0
    outputs = tmp_path / "socialbench" / "policy_oracle" / "outputs.jsonl"
    assert len(outputs.read_text().splitlines()) == 3
