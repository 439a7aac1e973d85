"""One small training loop on `accelerate`, shared by every paper's SFT / distillation / RM stage.

    result = train(model, dataset, causal_lm_loss, TrainConfig(output_dir="runs/x", max_steps=200),
                   collate_fn=pad_collate(tokenizer))

What it does: AdamW with a warm-up + constant/linear/cosine schedule, gradient accumulation, gradient
clipping, bf16 autocast on CUDA and fp32 on CPU, a tqdm bar (loss, lr), TensorBoard scalars, and a
checkpoint every `save_every` optimizer steps (model, optimizer, scheduler, RNG states, loss history)
written atomically. With `resume=True` (the default) a rerun picks up the newest complete checkpoint
and replays exactly the batches it had not seen, so a killed-and-resumed run ends where an uninterrupted
one would (tests/common/test_train.py kills one and checks).

The data order is a pure function of (seed, epoch): epoch e shuffles with `seed + e`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]]
SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    output_dir: str
    max_steps: int
    """Optimizer steps (each = `grad_accum` micro-batches)."""
    batch_size: int = 8
    """Micro-batch size; the effective batch is batch_size * grad_accum."""
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_every: int = 0
    """Checkpoint every N optimizer steps (0: only at the end)."""
    log_every: int = 10
    mixed_precision: str = "auto"
    """auto = bf16 on CUDA, fp32 on CPU."""
    progress: bool = True
    resume: bool = True
    keep_checkpoints: int = 2
    extra: dict = field(default_factory=dict)
    """Free-form fields logged with the config (e.g. the stage's own hyper-parameters)."""

    def __post_init__(self) -> None:
        checks = {
            "max_steps": self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": self.lr > 0,
            "warmup_steps": 0 <= self.warmup_steps,
            "save_every": self.save_every >= 0,
            "log_every": self.log_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "lr_schedule": self.lr_schedule in SCHEDULES,
            "mixed_precision": self.mixed_precision in PRECISIONS,
            "max_grad_norm": self.max_grad_norm is None or self.max_grad_norm > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            allowed = {"lr_schedule": SCHEDULES, "mixed_precision": PRECISIONS}.get(name)
            hint = f" (valid: {', '.join(allowed)})" if allowed else ""
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid{hint}")


@dataclass
class TrainResult:
    final_loss: float
    losses: list[float]
    """Mean loss of each optimizer step."""
    steps: int
    output_dir: str


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """Mean next-token cross-entropy over the label positions != -100 (labels unshifted, as in HF)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = batch["labels"][:, 1:]
    n_tokens = int((shift_labels != -100).sum())
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100
    )
    return loss, {"loss": float(loss.detach()), "n_tokens": float(n_tokens)}


def pad_collate(tokenizer_or_pad_id) -> Callable[[Sequence[dict]], dict]:
    """Right-pad examples holding `input_ids` (and optionally `labels`, `attention_mask`) into tensors.

    Missing labels default to the input ids; other keys with equal-length sequences are stacked.
    """
    pad_id = tokenizer_or_pad_id if isinstance(tokenizer_or_pad_id, int) else tokenizer_or_pad_id.pad_token_id
    if pad_id is None:
        raise ValueError("pad_collate: the tokenizer has no pad token; set tokenizer.pad_token first")

    def collate(examples: Sequence[dict]) -> dict:
        longest = max(len(ex["input_ids"]) for ex in examples)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for ex in examples:
            ids = list(ex["input_ids"])
            labels = list(ex.get("labels", ids))
            mask = list(ex.get("attention_mask", [1] * len(ids)))
            if not (len(ids) == len(labels) == len(mask)):
                raise ValueError("pad_collate: input_ids, labels and attention_mask differ in length")
            pad = longest - len(ids)
            batch["input_ids"].append(ids + [pad_id] * pad)
            batch["attention_mask"].append(mask + [0] * pad)
            batch["labels"].append(labels + [-100] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

    return collate


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=gen).tolist()


class _ResumableOrder(torch.utils.data.Sampler):
    """Indices of one epoch in the seeded order, starting after `skip` already-consumed examples."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int = 0):
        self.order = _epoch_order(n, seed, epoch)[skip:]

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder without its `state.json` is incomplete)."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if (p / "state.json").exists() and not p.name.endswith(".tmp")]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def _save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, keep: int) -> None:
    root = output_dir / "checkpoints"
    final = root / f"step_{state['step']}"
    tmp = root / f"step_{state['step']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp))
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _precision(config: TrainConfig) -> str:
    if config.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return config.mixed_precision


def train(
    model: torch.nn.Module,
    dataset: Sequence,
    loss_fn: LossFn,
    config: TrainConfig,
    collate_fn: Callable | None = None,
) -> TrainResult:
    """Train `model` in place for `config.max_steps` optimizer steps; see the module docstring."""
    if len(dataset) == 0:
        raise ValueError("train: the dataset is empty")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=_precision(config),
        log_with="tensorboard",
        project_dir=str(out),
    )
    accelerator.init_trackers("tb", config={k: v for k, v in asdict(config).items() if k != "extra"})
    (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    scheduler = get_scheduler(
        "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    step, epoch, consumed, losses = 0, 0, 0, []
    done = _checkpoints(out) if config.resume else []
    if done:
        accelerator.load_state(str(done[-1]))
        saved = json.loads((done[-1] / "state.json").read_text())
        step, epoch, consumed, losses = saved["step"], saved["epoch"], saved["consumed"], saved["losses"]

    bar = tqdm(total=config.max_steps, initial=step, disable=not config.progress, desc="train", leave=False)
    micro, window = 0, []
    while step < config.max_steps:
        sampler = _ResumableOrder(len(dataset), config.seed, epoch, skip=consumed)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_fn)
        for batch in loader:
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with accelerator.accumulate(model), accelerator.autocast():
                loss, metrics = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            consumed += len(next(iter(batch.values())))
            window.append(float(loss.detach()))
            micro += 1
            if micro % config.grad_accum:
                continue
            step += 1
            losses.append(sum(window) / len(window))
            window = []
            lr = scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if step % config.log_every == 0 or step == config.max_steps:
                accelerator.log({"train/loss": losses[-1], "train/lr": lr, **_prefixed(metrics)}, step=step)
            last_in_epoch = consumed >= len(dataset)
            if step == config.max_steps or (config.save_every and step % config.save_every == 0):
                state = {"step": step, "epoch": epoch + last_in_epoch, "consumed": 0 if last_in_epoch else consumed}
                _save_checkpoint(accelerator, out, {**state, "losses": losses}, config.keep_checkpoints)
            if step == config.max_steps:
                break
        else:
            epoch, consumed = epoch + 1, 0
            continue
        break
    bar.close()

    unwrapped = accelerator.unwrap_model(model)
    if hasattr(unwrapped, "save_pretrained"):
        unwrapped.save_pretrained(out / "final", safe_serialization=True)
    else:
        (out / "final").mkdir(exist_ok=True)
        torch.save(unwrapped.state_dict(), out / "final" / "state_dict.pt")
    final_loss = losses[-1] if losses else math.nan
    (out / "metrics.json").write_text(json.dumps({"final_loss": final_loss, "steps": step, "losses": losses}))
    accelerator.end_training()
    return TrainResult(final_loss=final_loss, losses=losses, steps=step, output_dir=str(out))


def _prefixed(metrics: dict) -> dict:
    return {f"train/{k}": float(v) for k, v in metrics.items() if k != "loss"}
