"""common.stages: the one stage convention (hash, atomic writes, torn JSONL, dirs, pool)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import stages


def test_stage_hash_is_stable_and_key_order_free():
    a = stages.stage_hash({"b": 1, "a": [1, 2], "p": stages.repo_root()})
    b = stages.stage_hash({"a": [1, 2], "p": stages.repo_root(), "b": 1})
    assert a == b and len(a) == 12 and int(a, 16) >= 0
    assert stages.stage_hash({"a": 1}) != stages.stage_hash({"a": 2})


def test_runs_and_cache_dirs_honour_env(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "r"))
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "c"))
    assert stages.runs_dir() == tmp_path / "r"
    assert stages.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("REPRO_RUNS")
    assert stages.runs_dir() == stages.repo_root() / "runs"
    assert (stages.repo_root() / "common" / "stages.py").exists()


def test_cached_json_computes_once_and_force_recomputes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    path = tmp_path / "s" / "m.json"
    assert stages.cached_json(path, False, compute) == {"n": 1}
    assert stages.cached_json(path, False, compute) == {"n": 1}
    assert stages.cached_json(path, True, compute) == {"n": 2}
    assert json.loads(path.read_text()) == {"n": 2}
    assert stages.cached_json(tmp_path / "x.json", False, compute, write=False) == {"n": 3}
    assert not (tmp_path / "x.json").exists()
    assert not list(tmp_path.rglob("*.tmp*"))


def test_corrupt_cached_json_names_the_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(stages.StageError, match="m.json: corrupt JSON"):
        stages.cached_json(path, False, dict)


def test_atomic_write_keeps_old_file_when_killed(tmp_path):
    """A writer killed mid-write leaves the previous content under the final name."""
    path = tmp_path / "out.json"
    stages.atomic_write_json(path, {"v": "old"})
    code = (
        "import os, common.stages as s\n"
        "from pathlib import Path\n"
        "def boom(self, *a, **k):\n"
        '    Path.write_bytes(self, b\'{"v": "ha\')\n'
        "    os._exit(9)\n"
        "Path.write_text = boom\n"
        f"s.atomic_write_json({str(path)!r}, {{'v': 'new'}})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(stages.repo_root())}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 9
    assert json.loads(path.read_text()) == {"v": "old"}


def test_jsonl_torn_last_line_is_dropped_and_appends_continue(tmp_path):
    path = tmp_path / "cache.jsonl"
    stages.append_jsonl(path, [{"k": 1}, {"k": 2}])
    with open(path, "a") as f:
        f.write('{"k": 3, "tor')  # a kill mid-line
    assert stages.read_jsonl(path) == [{"k": 1}, {"k": 2}]
    stages.append_jsonl(path, [{"k": 3}])
    assert stages.read_jsonl(path) == [{"k": 1}, {"k": 2}, {"k": 3}]
    assert stages.read_jsonl(tmp_path / "missing.jsonl") == []


def test_jsonl_bad_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"k": 1}\nnot json\n{"k": 2}\n')
    with pytest.raises(stages.StageError, match=r"cache.jsonl: line 2 is not JSON"):
        stages.read_jsonl(path)


def test_atomic_dir_renames_on_success_and_cleans_on_error(tmp_path):
    with stages.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "w.bin").write_text("x")
        assert not (tmp_path / "model").exists()
    assert (tmp_path / "model" / "w.bin").read_text() == "x"
    with pytest.raises(RuntimeError), stages.atomic_dir(tmp_path / "other") as tmp:
        (tmp / "w.bin").write_text("x")
        raise RuntimeError("fail")
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_main_process_without_launcher(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert stages.is_main_process() is True
    assert stages.world() == (1, 0)
    stages.barrier()  # no-op


def test_a_launch_whose_processes_did_not_join_is_refused(monkeypatch):
    """torchrun's launch on a CPU-only machine without ACCELERATE_USE_CPU: WORLD_SIZE 2, a group of 1."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    stages.check_world(2)
    with pytest.raises(RuntimeError, match="2 processes were launched .* joined 1; .*ACCELERATE_USE_CPU=1"):
        stages.check_world(1)


def _square(x):
    import torch

    return x * x, torch.get_num_threads()


def test_worker_pool_inline_and_spawned_agree():
    with stages.worker_pool(1) as pool:
        inline = [pool.submit(_square, i).result() for i in range(3)]
        failed = pool.submit(_square, None)
    with pytest.raises(TypeError):
        failed.result()
    with stages.worker_pool(2, threads=1) as pool:
        spawned = [f.result() for f in [pool.submit(_square, i) for i in range(3)]]
    assert [v for v, _ in inline] == [v for v, _ in spawned] == [0, 1, 4]
    assert all(t == 1 for _, t in spawned)


DRIVER = """
import os, sys, time
from pathlib import Path
from common import stages


def report_pid_and_hang(folder):
    Path(folder, f"{os.getpid()}.pid").write_text("")
    time.sleep(120)


if __name__ == "__main__":
    with stages.worker_pool(2, threads=1) as pool:
        jobs = [pool.submit(report_pid_and_hang, sys.argv[1]) for _ in range(2)]
        time.sleep(300)
"""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_pool_workers_exit_when_the_driver_is_killed(tmp_path):
    """kill -9 of the driver used to leave its spawned workers computing, re-parented to init."""
    repo = Path(__file__).resolve().parents[2]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=repo, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert time.monotonic() < deadline and driver.poll() is None, "the workers did not start"
            time.sleep(0.2)
        pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert all(_alive(p) for p in pids)
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 10 * stages.ORPHAN_POLL_S + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "a worker outlived its killed driver"
