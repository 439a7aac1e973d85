"""common.train: it learns, accumulation is exact, resume after SIGKILL equals an uninterrupted run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.train import TrainConfig, _checkpoints, causal_lm_loss, pad_collate, train

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("train_worker.py")


def counting_data(n=32, vocab=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        start = int(torch.randint(0, vocab, (1,), generator=gen))
        rows.append({"input_ids": [(start + i) % vocab + 1 for i in range(10)]})
    return rows


def test_loss_falls_and_every_parameter_moves(tmp_path):
    model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=40, batch_size=8, lr=3e-3, progress=False)
    result = train(model, counting_data(), causal_lm_loss, cfg, collate_fn=pad_collate(0))
    assert result.steps == 40 and len(result.losses) == 40
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:5]) / 5
    unmoved = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unmoved, unmoved
    assert (tmp_path / "final" / "config.json").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 40
    assert list(tmp_path.glob("tb/**/events.out.tfevents.*")), "no TensorBoard event file"


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    data = counting_data(n=8)
    weights, first_losses = [], []
    for i, (bs, accum) in enumerate([(8, 1), (4, 2), (2, 4)]):
        model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
        cfg = TrainConfig(output_dir=str(tmp_path / str(i)), max_steps=1, batch_size=bs, grad_accum=accum,
                          lr=1e-2, lr_schedule="constant", max_grad_norm=None, progress=False)
        result = train(model, data, causal_lm_loss, cfg, collate_fn=pad_collate(0))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        first_losses.append(result.losses[0])
    # Equal-length sequences: the mean of micro-batch means is the big batch's mean. One wrong update
    # (a step per micro-batch) would move weights by ~lr = 1e-2; float summation order gives ~1e-5
    # after Adam normalises near-zero gradients.
    assert (weights[0] - weights[1]).abs().max() < 1e-4
    assert (weights[0] - weights[2]).abs().max() < 1e-4
    assert first_losses[1] == pytest.approx(first_losses[0], abs=1e-6)
    assert first_losses[2] == pytest.approx(first_losses[0], abs=1e-6)


def run_worker(out, kill_at=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    args = [sys.executable, str(WORKER), str(out)] + ([str(kill_at)] if kill_at else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    straight = run_worker(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = json.loads(straight.stdout.strip().splitlines()[-1])

    killed = run_worker(tmp_path / "killed", kill_at=19)  # micro-step 19: after the step-8 checkpoint
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    assert [p.name for p in _checkpoints(tmp_path / "killed")] == ["step_4", "step_8"]
    assert not (tmp_path / "killed" / "final").exists()

    resumed = run_worker(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert got["losses"] == pytest.approx(expected["losses"], abs=1e-6)
    assert got["final_loss"] == pytest.approx(expected["final_loss"], abs=1e-6)
    assert got["checksum"] == pytest.approx(expected["checksum"], abs=1e-5)


def test_half_written_checkpoint_is_ignored(tmp_path):
    data = counting_data(n=16)
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, batch_size=4, save_every=2, progress=False)
    train(build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0), data, causal_lm_loss, cfg,
          collate_fn=pad_collate(0))
    assert [p.name for p in _checkpoints(tmp_path)] == ["step_2", "step_4"]
    # a crash inside save_state leaves a folder without state.json (or a .tmp): never resumed from
    (tmp_path / "checkpoints" / "step_6").mkdir()
    (tmp_path / "checkpoints" / "step_8.tmp").mkdir()
    assert [p.name for p in _checkpoints(tmp_path)] == ["step_2", "step_4"]
    cfg.max_steps = 6
    result = train(build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0), data, causal_lm_loss, cfg,
                   collate_fn=pad_collate(0))
    assert result.steps == 6 and len(result.losses) == 6


@pytest.mark.parametrize(
    "field,value",
    [("max_steps", 0), ("grad_accum", 0), ("lr_schedule", "exp"), ("batch_size", -1), ("mixed_precision", "fp8")],
)
def test_bad_config_names_the_field(tmp_path, field, value):
    kwargs = {"output_dir": str(tmp_path), "max_steps": 3, field: value}
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**kwargs)


def test_empty_dataset_and_missing_pad_token(tmp_path):
    model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
    with pytest.raises(ValueError, match="empty"):
        train(model, [], causal_lm_loss, TrainConfig(output_dir=str(tmp_path), max_steps=1, progress=False))

    class NoPad:
        pad_token_id = None

    with pytest.raises(ValueError, match="pad token"):
        pad_collate(NoPad())


def test_pad_collate_masks_padding():
    batch = pad_collate(0)([{"input_ids": [5, 6, 7]}, {"input_ids": [8], "labels": [-100]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [-100, -100, -100]]
