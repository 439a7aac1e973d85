"""common.provenance: the dirty check counts only paths that can change a run's numbers."""

import subprocess
import sys

from common import provenance


def test_dirty_paths_ignore_docs_and_every_papers_results():
    status = "\n".join(
        [
            " M common/rl.py",
            " M papers/qrm/README.md",
            " M papers/qrm/results/toy/curves.json",
            "R  old.py -> papers/qrm/new.py",
            "M  papers/mcckd/results/toy/reproduced.csv",  # another paper's earlier run: not an input
            " M papers/mcckd/results_notes.py",
            " M papers/qrm/configs/x.yaml",
        ]
    )
    got = provenance.dirty_paths(status)
    assert got == [
        "common/rl.py",
        "papers/qrm/new.py",
        "papers/mcckd/results_notes.py",
        "papers/qrm/configs/x.yaml",
    ]
    assert (
        provenance.dirty_paths(status, ignore=("papers/qrm/configs/",))[-1] == "papers/mcckd/results_notes.py"
    )
    assert provenance.dirty_paths("", ignore=("x/",)) == []
    assert provenance.dirty_paths("M common/rl.py\n M common/x.py") == [
        "common/rl.py",
        "common/x.py",
    ]  # stripped
    assert (
        provenance.dirty_paths(" M README.md\n M papers/qrm/results/toy/a.png\n M papers/lco/NOTES.md") == []
    )


def test_collect_provenance_records_the_commit_versions_and_fields():
    prov = provenance.collect_provenance(paper="qrm", seeds=[0, 1])
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=provenance.repo_root()
    )
    assert prov["commit"] == head.stdout.strip() and isinstance(prov["dirty"], bool)
    assert all(not p.startswith("papers/") or "/results/" not in p for p in prov["dirty_paths"])
    assert prov["versions"]["torch"] and "rouge-score" not in prov["versions"]
    assert (prov["paper"], prov["seeds"]) == ("qrm", [0, 1]) and prov["hardware"]["cpu_count"]


def test_a_run_records_the_code_it_started_from_and_says_when_it_moved(monkeypatch):
    """A commit or edit during a long run must not relabel its results with the later code."""
    state = {
        "rev-parse": "a" * 40,
        "status": " M common/rl.py\n M papers/lco/README.md\n",
        "diff": "-x\n+y\n",
    }
    monkeypatch.setattr(provenance, "_git", lambda cmd, *a: state[cmd])
    monkeypatch.setattr(provenance, "_RUN_START", None)
    monkeypatch.setattr(provenance, "_CPU_START", None)
    before = provenance.collect_provenance()
    assert before["commit"] == "a" * 40 and before["dirty_paths"] == ["common/rl.py"]
    assert "code_changed_during_run" not in before  # no run was marked
    provenance.mark_run_start()
    assert provenance.collect_provenance()["code_changed_during_run"] is False
    state.update({"rev-parse": "b" * 40, "status": ""})  # the edit was committed meanwhile
    prov = provenance.collect_provenance()
    assert prov["commit"] == "a" * 40 and prov["dirty"] is True and prov["dirty_paths"] == ["common/rl.py"]
    assert prov["code_changed_during_run"] is True


def test_a_marked_run_records_its_cpu_seconds_children_included(monkeypatch):
    monkeypatch.setattr(provenance, "_RUN_START", None)
    monkeypatch.setattr(provenance, "_CPU_START", None)
    assert "cpu_s" not in provenance.collect_provenance()
    provenance.mark_run_start()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # a waited-for child's CPU counts
    prov = provenance.collect_provenance()
    assert 0.5 <= prov["cpu_s"] < 0.5 + 30


def test_a_run_that_found_cached_stages_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "_RUN_START", None)
    monkeypatch.setattr(provenance, "_CPU_START", None)
    stages = tmp_path / "runs" / "qrm" / "toy"
    provenance.mark_run_start(stages)  # not there yet: a run from scratch
    prov = provenance.collect_provenance()
    assert prov["started_with_cache"] is False and prov["code_changed_during_run"] is False
    (stages / "sft-0123").mkdir(parents=True)
    provenance.mark_run_start(stages)
    assert provenance.collect_provenance()["started_with_cache"] is True
    provenance.mark_run_start(stages, force=True)  # --force reruns every stage
    assert provenance.collect_provenance()["started_with_cache"] is False


def test_the_hardware_names_torchs_cpu_kernels():
    import torch

    hardware = provenance.collect_provenance()["hardware"]
    assert hardware["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(hardware["torch_cpu_capability"], str) and hardware["torch_cpu_capability"]
