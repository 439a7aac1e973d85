"""The distributed path for real: two CPU processes under `accelerate launch` (DDP over gloo, loopback,
a free port, a timeout) run one SFT stage and one PPO chunk (tests/common/ddp_worker.py) and give the
one-process run's losses and final parameters on the same global batch, with only the main process
writing the run.

The launch: `accelerate launch --num_processes 2 --cpu` starts ONE process on a machine without mpirun
(accelerate's simple launcher runs the script once and leaves the world size at 1); two processes come
from the torchrun launcher (`--multi_gpu`, which needs no GPU) with ACCELERATE_USE_CPU=1, under which
accelerate builds a gloo process group on CPU (`common.stages.world` reads the same flag).

Tolerance (fp32 throughout): the two runs sum the same gradients in another order (the all-reduce), so
they agree to rounding: step losses within 1e-6 relative (measured: 8e-8), parameters within 1e-4
absolute, i.e. 1/30 of one step's lr of 3e-3 (measured: 1.4e-5; Adam's g / sqrt(v) turns a rounding-size
gradient difference on a near-zero gradient into part of a step). The processes' own parameters are
equal bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.common import ddp_worker

pytestmark = pytest.mark.slow  # ~60-80 s on 2 busy cores, nearly all of it three imports of torch
REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
LAUNCH_TIMEOUT_S = 300
RNG_STATE = re.compile(r"sft/checkpoints/step_\d+\.tmp/random_states_1\.pkl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-process summary, [rank 0, rank 1] summaries, run dirs): the launch runs while this process
    computes the one-process reference."""
    base = tmp_path_factory.mktemp("ddp")
    env = os.environ | {
        "ACCELERATE_USE_CPU": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port())]
    launch += [str(WORKER), str(base / "two"), str(base / "report_two")]
    proc = subprocess.Popen(
        launch,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        one = ddp_worker.run(base / "one", base / "report_one", audit=False)
        log, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.returncode == 0, log[-3000:]
    two = [json.loads((base / "report_two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    return one, two, base


def test_two_processes_give_the_one_process_losses_and_parameters(runs):
    one, two, base = runs
    assert [s["n_procs"] for s in two] == [2, 2] and [s["rank"] for s in two] == [0, 1]
    for summary in two:
        assert summary["sft_losses"] == pytest.approx(one["sft_losses"], rel=1e-6)
        rl_one, rl_two = one["rl_curve"][-1], summary["rl_curve"][-1]
        assert rl_two["step"] == rl_one["step"] == 6  # 3 minibatches x 2 inner epochs
        assert rl_two["token_reward"] == rl_one["token_reward"] > 0  # the same greedy rollouts
        assert rl_two["loss"] == pytest.approx(rl_one["loss"], rel=1e-6)
    ref = torch.load(base / "report_one" / "rank0.pt")
    rank0, rank1 = (torch.load(base / "report_two" / f"rank{r}.pt") for r in (0, 1))
    assert ref.keys() == rank0.keys() and any(k.startswith("critic.") for k in ref)
    for name, value in ref.items():
        torch.testing.assert_close(rank0[name], value, rtol=0, atol=1e-4, msg=name)
        assert torch.equal(rank1[name], rank0[name]), name  # the replicas stay in step


def test_each_process_samples_its_own_share_of_the_prompts(runs):
    one, (rank0, rank1), _ = runs
    assert rank0["sampled"] and rank1["sampled"]
    assert not set(rank0["sampled"]) & set(rank1["sampled"])
    assert rank0["sampled"] + rank1["sampled"] == one["sampled"]  # contiguous shares of the chunk


def _tree(root: Path) -> set[str]:
    """Files under root, TensorBoard's timestamped and pid-named paths reduced to their kind."""
    names = set()
    for path in root.rglob("*"):
        if path.is_file():
            rel = re.sub(r"tensorboard/[\d.]+/", "tensorboard/RUN/", str(path.relative_to(root)))
            names.add(re.sub(r"events\.out\.tfevents\..*", "EVENTS", rel))
    return names


def test_only_the_main_process_writes(runs):
    _, (rank0, rank1), base = runs
    # rank 1 only creates the checkpoint folder the main process also creates, and saves its RNG state
    # there (accelerate's save_state: every process's RNG, needed to resume); nothing of the RL run
    for event, path in rank1["writes"]:
        if event == "os.mkdir":
            assert re.fullmatch(r"sft/checkpoints(/step_\d+\.tmp)?", path), (event, path)
        else:
            assert event == "torch.save" and RNG_STATE.fullmatch(path), (event, path)
    assert any(event == "torch.save" for event, _ in rank1["writes"])  # the hook saw rank 1's saves
    assert any(path.startswith("rl/") for _, path in rank0["writes"])
    # the run's files: the one-process run's (one tracker, one state, ...) plus rank 1's RNG states
    extra = {p.replace(".tmp/", "/") for _, p in rank1["writes"] if RNG_STATE.fullmatch(p)}
    assert _tree(base / "two") == _tree(base / "one") | extra
