"""The stage convention, written once: cache keys, atomic writes, resumable JSONL, run/cache dirs, the
main process, and one worker pool. Every paper's stages use these and nothing else.

    key = stage_hash({"stage": "rm", "cfg": asdict(cfg.rm), "v": 1})          # 12 hex chars
    out = runs_dir() / "qrm" / "toy" / f"rm-{key}"                              # honours REPRO_RUNS
    metrics = cached_json(out / "metrics.json", force, lambda: train(...))      # skipped when present
    for rec in read_jsonl(path): ...                                            # a torn last line is dropped
    append_jsonl(path, [rec, ...])                                              # fsync'd: a kill keeps it
    with worker_pool(workers=2, threads=1) as pool: futs = [pool.submit(f, x) for x in xs]

A stage is skipped when its output exists (its path carries the hash of its settings); `force` reruns it.
Outputs are written to a temporary name in the same folder and renamed, so a kill never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

RUNS_ENV = "REPRO_RUNS"
CACHE_ENV = "REPRO_CACHE"
HOLD_ENV = "REPRO_HOLD_AFTER"


def repo_root() -> Path:
    """The checkout's root (the folder holding `common/` and `papers/`)."""
    return Path(__file__).resolve().parents[1]


def runs_dir() -> Path:
    """Where stages cache their outputs: `$REPRO_RUNS`, default `<repo>/runs` (git-ignored)."""
    return Path(os.environ.get(RUNS_ENV) or repo_root() / "runs")


def cache_dir() -> Path:
    """Derived artefacts shared across runs (converted models, downloads): `$REPRO_CACHE`, default
    `~/.cache/repro`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "repro")


def stage_hash(settings: Any, length: int = 12) -> str:
    """A short, stable hash of a stage's settings (JSON with sorted keys; non-JSON values via str)."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def temp_path(path: Path) -> Path:
    """The temporary name a file or folder is written under before its rename (per process: two
    processes may race to write the same stage output)."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def hold_after_write(path: str | Path) -> None:
    """The kill tests' hook (tests/common/test_resume_kill.py): with `$REPRO_HOLD_AFTER` set to a part of
    `path`, block once `path` is written, so the test SIGKILLs the run at a known point inside a stage.
    Unset (every real run) it does nothing."""
    pattern = os.environ.get(HOLD_ENV)
    if pattern and pattern in str(path):
        time.sleep(3600)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    hold_after_write(path)
    return path


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")


@contextmanager
def atomic_dir(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to `path` on success.

    `replace=False` (caches that several processes may build at once: same settings, same content):
    a `path` that exists by the end, because another process finished first, is kept and this copy
    dropped, so a reader of theirs is never cut off. On an error the temporary folder is removed and
    `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(path)
    try:
        tmp.rename(path)
    except OSError:  # another process renamed its copy in between
        shutil.rmtree(tmp, ignore_errors=True)
    hold_after_write(path)


def read_json(path: str | Path) -> Any:
    """A JSON file; a corrupt one raises `StageError` naming the file (rerun with --force)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageError(
            f"{path}: corrupt JSON ({e.msg} at line {e.lineno}); delete it or rerun with --force"
        ) from None


class StageError(RuntimeError):
    """A cached stage output that cannot be read; the message names the file."""


def cached_json(path: str | Path, force: bool, compute: Callable[[], Any], write: bool = True) -> Any:
    """`path`'s JSON unless `force`; else `compute()`, written atomically (not when `write` is False, as
    on the non-main processes of a multi-process run), and returned."""
    path = Path(path)
    if path.exists() and not force:
        return read_json(path)
    result = compute()
    if write:
        atomic_write_json(path, result)
    return result


def read_jsonl(path: str | Path) -> list[dict]:
    """The complete records of a JSONL file that a killed run may have left with a torn last line.

    A line that does not parse is dropped only when it is the last one (and the file is truncated back
    to the last complete record, so an append continues cleanly); anywhere else it raises `StageError`
    naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, offset = [], 0
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        end = offset + len(line) + 1
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if any(rest.strip() for rest in lines[i + 1 :]):
                    raise StageError(
                        f"{path}: line {i + 1} is not JSON; delete the file or rerun with --force"
                    ) from None
                with open(path, "r+b") as f:  # torn last line: cut it off
                    f.truncate(offset)
                break
        offset = end
    return records


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append records, one JSON line each, flushed and fsync'd (a kill afterwards keeps them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    hold_after_write(path)


def _state():
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # accelerate reads ACCELERATE_USE_CPU in AcceleratorState only: a bare PartialState() of a CPU launch
    # (no GPU) would see no process group and call every process the main one
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    """True on the main process of an `accelerate launch` (and in a plain single process)."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return True  # no launcher: do not create a process group for nothing
    return _state().is_main_process


def world() -> tuple[int, int]:
    """(number of processes, this process's index) of an `accelerate launch`; (1, 0) in a plain process."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return 1, 0
    state = _state()
    check_world(state.num_processes)
    return state.num_processes, state.process_index


def check_world(num_processes: int) -> None:
    """Refuse a launch whose processes did not join one group: each would run, and write, the whole run.

    On a machine without a GPU, torchrun's launch (`accelerate launch --multi_gpu` or `--use_fsdp`) leaves
    every process alone unless ACCELERATE_USE_CPU=1, and accelerate never shards (FSDP) on CPU."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != num_processes:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE) but accelerate joined {num_processes}; on CPU "
            "launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N (DDP over gloo)"
        )


def barrier() -> None:
    """Wait for every process of the launch (a no-op in a single process)."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        _state().wait_for_everyone()


class InlinePool(Executor):
    """`workers <= 1`: each submitted job runs at once in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        job: Future = Future()
        try:
            job.set_result(fn(*args, **kwargs))
        except BaseException as e:  # same contract as a process pool: the error comes out of result()
            job.set_exception(e)
        return job


def set_torch_threads(n: int) -> None:
    """A worker's initializer (module level, so it pickles under spawn)."""
    import torch

    torch.set_num_threads(n)


ORPHAN_POLL_S = 0.5  # how often a pool worker checks that the process that started it is alive


def _exit_when_orphaned(parent: int, poll: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll)
    os._exit(1)  # the driver died (kill -9, Ctrl-C): stop computing; cached stages are atomic


def init_worker(threads: int, parent: int, poll: float = ORPHAN_POLL_S) -> None:
    """A pool worker's initializer: torch threads, and a daemon thread that ends the worker once its
    parent is gone (a killed driver otherwise leaves spawned workers running, re-parented to init, that
    burn the cores a rerun needs and race its stages)."""
    set_torch_threads(threads)
    threading.Thread(target=_exit_when_orphaned, args=(parent, poll), daemon=True).start()


def worker_pool(workers: int, threads: int = 1) -> Executor:
    """`workers` spawned processes with `threads` torch threads each, or an `InlinePool` for one.

    Stages that go to the pool are cached and seeded by their own settings, so the results do not
    depend on which process runs which job (or on `workers`). A worker exits within `ORPHAN_POLL_S`
    of its driver's death."""
    if workers <= 1:
        return InlinePool()
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(threads, os.getpid())
    )
