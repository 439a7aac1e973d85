"""common.provenance: the dirty check counts only paths that can change a run's numbers."""

import subprocess

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
