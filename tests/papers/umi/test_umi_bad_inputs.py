"""Every bad input stops with one line naming the file, the record and the problem (non-zero exit)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from common.data import DataError
from common.stages import repo_root
from papers.umi.data import load_trajectories, role_datasets, static_steps
from papers.umi.formats import FormatError, role_prompt
from papers.umi.pipeline import reproduce
from papers.umi.preprocess import TrajectoryError, role_samples, stage2_conversation

GOOD = {"tools": [{"Name": "t", "input": {}}], "conversations": [
    {"from": "user", "value": "q"}, {"from": "assistant", "value": "x\n Next: give up."}]}  # fmt: skip


def _write(tmp_path, records, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records) if not isinstance(records, str) else records)
    return path


def test_no_assistant_turn_names_file_and_index(tmp_path):
    bad = {**GOOD, "conversations": [{"from": "user", "value": "q"}]}
    path = _write(tmp_path, [GOOD, bad])
    trajs = load_trajectories(path)
    with pytest.raises(DataError, match=r"bad\.json record 1: no assistant turn"):
        static_steps(trajs, str(path))
    with pytest.raises(DataError, match=r"bad\.json record 1: no assistant turn"):
        role_datasets(trajs, str(path))


def test_unknown_role_is_named(tmp_path):
    bad = {**GOOD, "conversations": [*GOOD["conversations"], {"from": "robot", "value": "?"}]}
    path = _write(tmp_path, [bad])
    with pytest.raises(DataError, match=r"bad\.json record 0 turn 2: unknown role 'robot'"):
        role_datasets(load_trajectories(path), str(path))
    with pytest.raises(FormatError, match="unknown role 'judge'"):
        role_samples(GOOD["tools"], GOOD["conversations"], "judge")
    with pytest.raises(FormatError, match="unknown role 'judge'"):
        role_prompt("judge", [], "")
    with pytest.raises(TrajectoryError, match="message 2: unknown role 'tool'"):
        stage2_conversation({"instruction": "q", "chains": [{}, {}, {"role": "tool", "content": ""}]})


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ("[{not json", r"bad\.json: not JSON"),
        ([{**GOOD, "tools": [{"function": "no name"}]}], r"bad\.json record 0 tool 0: malformed tool JSON"),
        ([{**GOOD, "tools": "x"}], r"bad\.json record 0: missing or non-list 'tools'"),
        ({"a": 1}, r"bad\.json: expected a JSON list"),
    ],
)
def test_malformed_files_are_named(tmp_path, records, match):
    with pytest.raises(DataError, match=match):
        load_trajectories(_write(tmp_path, records))


def test_pipeline_exits_with_one_line(tmp_path, tiny_cfg, runs):
    mirror = tmp_path / "mirror" / "umi" / "toolbench" / "test"
    mirror.mkdir(parents=True)
    (mirror / "out_of_domain.json").write_text(json.dumps([GOOD, {**GOOD, "conversations": []}]))
    cfg = replace(tiny_cfg, toy=False, real=replace(tiny_cfg.real, enabled=True))
    with pytest.raises(SystemExit) as err:
        reproduce(cfg, data_dir=str(tmp_path / "mirror"), results_root=tmp_path)
    msg = str(err.value)
    assert msg.count("\n") == 0 and "out_of_domain.json record 1: no assistant turn" in msg


def test_cli_exits_non_zero_on_a_bad_set():
    proc = subprocess.run(
        [sys.executable, "-m", "common.reproduce", "umi", "--set", "train.nope=1"],
        cwd=repo_root(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown key 'nope'" in proc.stderr.strip().splitlines()[-1]
