"""Kill -9 inside a stage, rerun: the reproduction's reproduced.csv equals an uninterrupted run's.

One short `python -m common.reproduce` per stage type, SIGKILLed (the whole process group) at a known
point: `$REPRO_HOLD_AFTER` (common.stages.hold_after_write) makes the run block once it has written a
file of that stage, the test waits for that file, checks the stage is unfinished and kills. Stage types:
SFT, RM and an RL chunk (ipvrm, one run killed three times), a cached teacher answer JSONL (proxykd) and
evaluator outputs (socialbench's outputs.jsonl). benchmarks/resume_check.py kills at random times instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.stages import read_jsonl

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
IPVRM = [
    "workers=1",
    "sft.steps=20",
    "sft.val_prompts=20",
    "rm.kinds=[IPVRM]",
    "rm.seeds=[0]",
    "rm.train_rows=64",
    "rm.steps=3",
    "rm.eval_rows=40",
    "rm.val_rows=40",
    "rl.methods=[DistRL w/ IPVRM]",
    "rl.seeds=[0]",
    "rl.chunks=2",
    "rl.prompts_per_chunk=4",
    "rl.train_prompts=40",
    "rl.eval_prompts=20",
    "processbench.enabled=false",
]
PROXYKD = [
    "seeds=[0]",
    "split.n_warmup=40",
    "split.n_proxy=80",
    "split.n_student=40",
    "teacher.chunk=40",
    "proxy.warmup_epochs=1",
    "proxy.nll_epochs=1",
    "proxy.iterations=1",
    "student.epochs=1",
    "student.eval_every=1",
    "eval.n_test=50",
    "run.arms=[sft, proxykd]",
]
SOCIALBENCH = [
    "zero_shot.backend=hf",
    "zero_shot.sample=0.001",  # one item of each of the two EP columns
    "zero_shot.chunk_size=1",
    "zero_shot.max_tokens=4",
    "synthetic.run=false",
]


def start(slug: str, sets: list[str], where: Path, hold: str | None = None) -> subprocess.Popen:
    """`common.reproduce <slug> --scale toy` into `where`/runs and `where`/results, in its own session."""
    env = os.environ | {
        "REPRO_RUNS": str(where / "runs"),
        "REPRO_RESULTS": str(where / "results"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("REPRO_HOLD_AFTER", None)
    if hold:
        env["REPRO_HOLD_AFTER"] = hold
    cmd = [sys.executable, "-m", "common.reproduce", slug, "--scale", "toy"]
    cmd += [a for s in sets for a in ("--set", s)]
    if slug == "socialbench":
        cmd += ["--data-dir", str(SHARED)]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def kill_when_held(proc: subprocess.Popen, runs: Path, pattern: str, timeout: float = 300) -> Path:
    """Wait until a file matching `pattern` (a glob under `runs`) exists, i.e. the run is blocked in
    `hold_after_write` right after writing it, then SIGKILL the process group; return that file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = sorted(runs.glob(pattern))
        if hits:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            return hits[0]
        if proc.poll() is not None:
            pytest.fail(
                f"ran to the end ({proc.returncode}) without writing {pattern}: {proc.stdout.read()[-2000:]}"
            )
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no {pattern} after {timeout} s")


def csv(where: Path, slug: str) -> bytes:
    return (where / "results" / slug / "toy" / "reproduced.csv").read_bytes()


@pytest.mark.slow
def test_ipvrm_killed_inside_sft_rm_and_an_rl_chunk_resumes_to_the_uninterrupted_result(tmp_path):
    straight = start("ipvrm", IPVRM, tmp_path / "straight")  # on the other core meanwhile
    where, runs = tmp_path / "killed", tmp_path / "killed" / "runs" / "ipvrm" / "toy"
    # SFT: its model is saved, its evaluation (result.json) not yet written
    model = kill_when_held(start("ipvrm", IPVRM, where, hold="toy/sft-"), runs, "sft-*/model")
    assert not (model.parent / "result.json").exists()
    # RM: the SFT is redone (its result.json was missing), then the RM's model is saved, its Part A is not
    model = kill_when_held(start("ipvrm", IPVRM, where, hold="toy/rm-IPVRM"), runs, "rm-IPVRM-*/model")
    assert not (model.parent / "result.json").exists() and list(runs.glob("sft-*/result.json"))
    # RL: chunk 1 of 2 is saved; the rerun continues from it
    state = kill_when_held(start("ipvrm", IPVRM, where, hold="rl_state.pt"), runs, "rl-*/rl_state.pt")
    assert not (state.parent / "result.json").exists() and list(runs.glob("rm-IPVRM-*/result.json"))
    finish(start("ipvrm", IPVRM, where))
    finish(straight)
    assert csv(where, "ipvrm") == csv(tmp_path / "straight", "ipvrm")


@pytest.mark.slow
def test_proxykd_killed_while_caching_teacher_answers_resumes_to_the_uninterrupted_result(tmp_path):
    straight = start("proxykd", PROXYKD, tmp_path / "straight")
    where, runs = tmp_path / "killed", tmp_path / "killed" / "runs" / "proxykd" / "toy"
    answers = kill_when_held(start("proxykd", PROXYKD, where, hold="/teacher/"), runs, "teacher/*.jsonl")
    assert len(read_jsonl(answers)) == 40  # the first chunk of answers is cached, the rest is not
    finish(straight)
    finish(start("proxykd", PROXYKD, where))
    total = len(
        read_jsonl(next((tmp_path / "straight" / "runs" / "proxykd" / "toy").glob("teacher/*.jsonl")))
    )
    assert len(read_jsonl(answers)) == total > 40
    assert csv(where, "proxykd") == csv(tmp_path / "straight", "proxykd")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "socialbench").is_dir(), reason="needs ../shared/data/socialbench")
def test_socialbench_killed_while_writing_evaluator_outputs_resumes_to_the_uninterrupted_result(tmp_path):
    straight = start("socialbench", SOCIALBENCH, tmp_path / "straight")
    where, runs = tmp_path / "killed", tmp_path / "killed" / "runs" / "socialbench" / "toy"
    outputs = kill_when_held(
        start("socialbench", SOCIALBENCH, where, hold="outputs.jsonl"), runs, "*/outputs.jsonl"
    )
    assert len(read_jsonl(outputs)) == 1  # the first chunk of answers only
    finish(straight)
    total = len(
        read_jsonl(next((tmp_path / "straight" / "runs" / "socialbench" / "toy").glob("*/outputs.jsonl")))
    )
    assert total > 1
    finish(start("socialbench", SOCIALBENCH, where))
    assert len(read_jsonl(outputs)) == total
    assert csv(where, "socialbench") == csv(tmp_path / "straight", "socialbench")
