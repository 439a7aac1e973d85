"""common.train: it learns, accumulation is exact, a SIGKILLed run resumes to the uninterrupted result."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from common.models import add_lora, build_tiny_causal_lm
from common.train import (
    TrainConfig,
    causal_lm_loss,
    complete_checkpoints,
    make_scheduler,
    pad_collate,
    resolve_mixed_precision,
    shifted_cross_entropy,
    step_batches,
    train,
)

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("train_worker.py")
VOCAB = 48


def counting_rows(n: int, length: int = 10, seed: int = 0) -> list[dict[str, list[int]]]:
    """Equal-length sequences counting up (mod 40) from a random start: a pattern tiny-student learns."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, 40, (n,), generator=gen).tolist()
    return [{"input_ids": [(s + i) % 40 + 1 for i in range(length)]} for s in starts]


def config(out: Path, **overrides) -> TrainConfig:
    fields = dict(output_dir=str(out), max_steps=4, batch_size=4, lr=3e-3, progress=False)
    return TrainConfig(**{**fields, **overrides})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}  # cpu: runs on CUDA too


def logged_scalars(out: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


class CountingLoss:
    """causal_lm_loss that counts its calls (micro-batches computed in this process)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model, batch):
        self.calls += 1
        return causal_lm_loss(model, batch)


def test_loss_falls_every_parameter_moves_and_outputs_exist(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = build_tiny_causal_lm("tiny-student", VOCAB, seed=0)
    before = weights(model)
    cfg = config(tmp_path, max_steps=30, batch_size=8, save_every=10, log_every=5, warmup_steps=3)
    result = train(model, counting_rows(32), causal_lm_loss, cfg, collate_fn=pad_collate(0))

    assert result.steps == 30 and len(result.losses) == 30 and result.final_loss == result.losses[-1]
    assert sum(result.losses[-5:]) / 5 < 0.6 * sum(result.losses[:5]) / 5, result.losses
    unmoved = [name for name, p in weights(model).items() if torch.equal(p, before[name])]
    assert not unmoved
    assert not model.training
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    trained = weights(model)
    for name, p in reloaded.named_parameters():
        assert torch.equal(p, trained[name]), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["losses"] == result.losses and metrics["steps"] == 30
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_20", "step_30"]  # keeps the last 2

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [5, 10, 15, 20, 25, 30]
    assert [e.value for e in logged] == pytest.approx([result.losses[s - 1] for s in range(5, 31, 5)])
    assert {"train/lr", "train/grad_norm", "train/n_tokens"} <= set(events.Tags()["scalars"])
    assert events.Scalars("train/n_tokens")[0].value == 8 * 9  # 8 sequences x 9 predicted tokens


def test_grad_accumulation_2x4_equals_one_batch_of_8(tmp_path):
    rows = counting_rows(8)
    assert sorted(sum(step_batches(8, 4, 2, seed=0, step=0), [])) == sorted(step_batches(8, 8, 1, 0, 0)[0])
    after, norms = {}, {}
    for batch_size, accum in [(8, 1), (4, 2), (4, 1)]:
        model, out = build_tiny_causal_lm("tiny-student", VOCAB, seed=0), tmp_path / f"{batch_size}x{accum}"
        # mixed_precision="no": exact fp32 sums, also on CUDA where "auto" means bf16
        cfg = config(out, max_steps=1, batch_size=batch_size, grad_accum=accum, lr=1e-3, mixed_precision="no")
        train(model, rows, causal_lm_loss, cfg, collate_fn=pad_collate(0))
        after[batch_size, accum] = torch.cat([p.flatten() for p in weights(model).values()])
        norms[batch_size, accum] = logged_scalars(out, "train/grad_norm")[0]
    # Adam's first update is ~lr * sign(gradient): 1e-3 per weight when the gradients differ; summation
    # order moves near-zero gradients' updates by ~1e-6 (seen on CUDA). Adam and clipping hide the
    # gradient's scale, so the pre-clipping norm checks the 1 / grad_accum scaling.
    assert (after[8, 1] - after[4, 2]).abs().max() < 1e-5
    assert norms[4, 2] == pytest.approx(norms[8, 1], rel=1e-5)
    assert (after[8, 1] - after[4, 1]).abs().max() > 1e-4  # half the batch: a visibly different step
    assert norms[4, 1] != pytest.approx(norms[8, 1], rel=1e-3)


def test_step_batches_is_a_seeded_function_of_seed_and_epoch():
    first = [step_batches(20, 2, 3, seed=7, step=s) for s in range(6)]  # 3 steps per epoch, 2 dropped
    assert first == [step_batches(20, 2, 3, seed=7, step=s) for s in range(6)]
    epoch0, epoch1 = (sum(sum(first[s], []), []) for s in (slice(0, 3), slice(3, 6)))
    assert len(set(epoch0)) == 18 and len(set(epoch1)) == 18 and set(epoch0) <= set(range(20))
    assert epoch0 != epoch1
    assert step_batches(20, 2, 3, seed=8, step=0) != first[0]
    # two processes: disjoint micro-batches whose union is the one-process step of the same global batch
    shards = [step_batches(16, 2, 2, 0, 1, num_processes=2, process_index=p) for p in (0, 1)]
    flat = [i for shard in shards for mb in shard for i in mb]
    assert len(set(flat)) == 8 and set(flat) == set(step_batches(16, 8, 1, 0, 1)[0])
    with pytest.raises(ValueError, match="dataset has 5 examples"):
        step_batches(5, 3, 2, 0, 0)


def run_worker(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(WORKER), str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    straight = run_worker(tmp_path / "straight")
    killed = run_worker(tmp_path / "killed", "--hang-at-step", "6")
    marker = tmp_path / "killed" / "checkpoints" / "step_6" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), (
        killed.communicate(timeout=10)[1][-3000:] if killed.poll() is not None else "timeout"
    )
    time.sleep(0.5)  # the worker is now blocked inside step 7: kill it there
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in complete_checkpoints(tmp_path / "killed")] == ["step_3", "step_6"]
    assert not (tmp_path / "killed" / "final").exists()

    resumed = finish(run_worker(tmp_path / "killed"))
    expected = finish(straight)
    assert expected["loss_calls"] == 10 * 2 and resumed["loss_calls"] == 4 * 2  # it resumed at step 6
    assert resumed["steps"] == 10 and len(resumed["losses"]) == 10
    assert resumed["losses"] == pytest.approx(expected["losses"], rel=0, abs=1e-6)
    assert resumed["final_loss"] == pytest.approx(expected["final_loss"], rel=0, abs=1e-6)
    got, want = (load_file(tmp_path / run / "final" / "model.safetensors") for run in ("killed", "straight"))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


def test_half_written_checkpoint_is_ignored(tmp_path):
    rows = counting_rows(24, length=8)
    cfg = config(tmp_path, max_steps=6, save_every=2, grad_accum=2, batch_size=2, warmup_steps=1)

    def run() -> tuple[list[float], dict[str, torch.Tensor], int]:
        model, loss_fn = (
            build_tiny_causal_lm("tiny-student", VOCAB, seed=0, attention_dropout=0.1),
            CountingLoss(),
        )
        result = train(model, rows, loss_fn, cfg, collate_fn=pad_collate(0))
        return result.losses, weights(model), loss_fn.calls

    want_losses, want_weights, _ = run()
    ckpts = tmp_path / "checkpoints"
    # as if killed while writing step_6 in place: no trainer_state.json, a truncated weights file
    (ckpts / "step_6" / "trainer_state.json").unlink()
    weights_file = ckpts / "step_6" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    (ckpts / "step_8.tmp").mkdir()
    (ckpts / "step_8.tmp" / "model.safetensors").write_bytes(b"junk")
    shutil.rmtree(tmp_path / "final")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_4"]

    losses, got_weights, calls = run()
    assert calls == 2 * 2  # resumed from step_4, not from the broken step_6, not from scratch
    assert losses == want_losses
    for name, tensor in want_weights.items():
        assert torch.equal(got_weights[name], tensor), name
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_4", "step_6"]
    assert not (ckpts / "step_8.tmp").exists()


def test_resume_refuses_other_settings_and_resume_false_starts_over(tmp_path):
    rows = [{**row, "labels": row["input_ids"]} for row in counting_rows(16)]  # default collate: stacked
    train(build_tiny_causal_lm("tiny-student", VOCAB), rows, causal_lm_loss, config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match=r"step_2: written with batch_size=4, the config says 2"):
        train(
            build_tiny_causal_lm("tiny-student", VOCAB),
            rows,
            causal_lm_loss,
            config(tmp_path, max_steps=2, batch_size=2),
        )
    loss_fn = CountingLoss()
    cfg = config(tmp_path, max_steps=2, batch_size=2, resume=False)
    result = train(build_tiny_causal_lm("tiny-student", VOCAB), rows, loss_fn, cfg)
    assert loss_fn.calls == 2 and result.steps == 2


def test_precision_switch_in_one_process_and_lora_trains_only_adapters(tmp_path):
    rows = counting_rows(8)
    bf16_config = config(tmp_path / "bf16", max_steps=1, mixed_precision="bf16")
    bf16 = train(
        build_tiny_causal_lm("tiny-student", VOCAB), rows, causal_lm_loss, bf16_config, pad_collate(0)
    )
    assert math.isfinite(bf16.final_loss)
    model = add_lora(build_tiny_causal_lm("tiny-student", VOCAB), r=4)
    before = weights(model)
    train(
        model,
        rows,
        causal_lm_loss,
        config(tmp_path / "lora", max_steps=2, mixed_precision="no"),
        pad_collate(0),
    )
    moved = {name for name, p in weights(model).items() if not torch.equal(p, before[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert moved == {name for name in trainable if "lora_B" in name or "lora_A" in name} and moved
    assert (tmp_path / "lora" / "final" / "adapter_config.json").exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("output_dir", ""),
        ("max_steps", 0),
        ("max_steps", 2.5),
        ("batch_size", 0),
        ("batch_size", True),
        ("grad_accum", 0),
        ("lr", 0.0),
        ("weight_decay", -0.1),
        ("warmup_steps", -1),
        ("warmup_steps", 9),
        ("lr_schedule", "exponential"),
        ("max_grad_norm", 0.0),
        ("seed", -1),
        ("save_every", -1),
        ("log_every", 0),
        ("mixed_precision", "fp8"),
        ("keep_checkpoints", 0),
        ("extra", "lr=1"),
        ("report_to", "mlflow"),
    ],
)
def test_bad_config_names_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"^TrainConfig\.{field}: "):
        TrainConfig(**{"output_dir": str(tmp_path), "max_steps": 8, field: value})


def test_train_rejects_bad_inputs(tmp_path):
    model = build_tiny_causal_lm("tiny-student", VOCAB)
    with pytest.raises(ValueError, match="dataset has 3 examples, fewer than one optimizer step needs"):
        train(model, counting_rows(3), causal_lm_loss, config(tmp_path, grad_accum=2))
    with pytest.raises(ValueError, match="pad_collate"):  # ragged rows without a padding collate
        train(model, counting_rows(2, 5) + counting_rows(2, 7), causal_lm_loss, config(tmp_path))
    with pytest.raises(TypeError, match="TrainConfig"):
        train(model, counting_rows(8), causal_lm_loss, {"max_steps": 1})
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, counting_rows(8), causal_lm_loss, config(tmp_path))


def test_causal_lm_loss_matches_hf_and_counts_tokens():
    model = build_tiny_causal_lm("tiny-student", VOCAB, seed=1)
    batch = pad_collate(0)(
        [{"input_ids": [3, 4, 5, 6, 7], "labels": [-100, -100, 5, 6, 7]}, {"input_ids": [9, 8, 7]}]
    )
    loss, metrics = causal_lm_loss(model, batch)
    reference = model(**batch).loss  # HF shifts labels the same way and averages over non-ignored tokens
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    assert metrics == {"loss": pytest.approx(loss.item()), "n_tokens": 3.0 + 2.0}

    logits = torch.randn(1, 4, 6, requires_grad=True)
    none, n_tokens = shifted_cross_entropy(logits, torch.full((1, 4), -100))
    none.backward()
    assert none.item() == 0.0 and n_tokens == 0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="causal_lm_loss: batch has no 'labels'"):
        causal_lm_loss(model, {"input_ids": batch["input_ids"]})


def test_pad_collate_pads_right_and_masks_labels():
    class Tokenizer:
        pad_token_id = 2

    rows = [
        {"input_ids": [5, 6, 7], "id": 0, "source": "a"},
        {"input_ids": [8, 9], "attention_mask": [0, 1], "id": 1, "source": "b"},
    ]
    batch = pad_collate(Tokenizer())(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [-100, 9, -100]]
    assert batch["id"].tolist() == [0, 1] and batch["source"] == ["a", "b"]

    class NoPad:
        pad_token_id = None

    with pytest.raises(ValueError, match="tokenizer has no pad_token_id"):
        pad_collate(NoPad())
    with pytest.raises(ValueError, match="pad id must be >= 0"):
        pad_collate(-1)
    collate = pad_collate(0)
    with pytest.raises(ValueError, match="example 1 has no 'input_ids'"):
        collate([{"input_ids": [1]}, {"labels": [1]}])
    with pytest.raises(ValueError, match="example 0 has 2 labels for 3 input_ids"):
        collate([{"input_ids": [1, 2, 3], "labels": [1, 2]}])
    with pytest.raises(ValueError, match="example 0 has empty 'input_ids'"):
        collate([{"input_ids": []}])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


@pytest.mark.parametrize(
    "schedule,expected",  # lr at steps 0..10 with warmup 2, max_steps 10, peak 1.0
    [
        ("constant", [0, 0.5] + [1.0] * 9),
        ("linear", [0, 0.5] + [(10 - s) / 8 for s in range(2, 11)]),
        ("cosine", [0, 0.5] + [0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]),
    ],
)
def test_lr_schedules_warm_up_then_follow_their_shape(tmp_path, schedule, expected):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(
        optimizer, config(tmp_path, max_steps=10, warmup_steps=2, lr=1.0, lr_schedule=schedule)
    )
    lrs = []
    for _ in range(11):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_auto_precision_is_bf16_on_cuda_only():
    assert resolve_mixed_precision("auto", cuda_bf16=True) == "bf16"
    assert resolve_mixed_precision("auto", cuda_bf16=False) == "no"
    assert resolve_mixed_precision("fp16", cuda_bf16=False) == "fp16"
