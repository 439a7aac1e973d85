"""One small training loop on `accelerate`, shared by every paper's SFT / distillation / reward-model stage.

`train(model, dataset, loss_fn, config)` runs `config.max_steps` AdamW optimizer steps; each step sums the
gradients of `grad_accum` micro-batches of `batch_size` examples (per process). bf16 autocast on CUDA,
fp32 on CPU (`mixed_precision="auto"`), gradient clipping, warmup + constant / linear / cosine schedule.

Resumable by construction:
- The data order is a pure function of (seed, epoch) (`step_batches`), so a resumed run feeds exactly the
  batches the uninterrupted run would have fed, without any sampler state.
- Every `save_every` steps and at the end, `accelerator.save_state` (model, optimizer, scheduler, RNG
  states) goes to `checkpoints/step_<n>.tmp`; `trainer_state.json` (step, loss history, config) is written
  last and the folder renamed to `step_<n>`, so a folder without it is never resumed from. The last
  `keep_checkpoints` (2) are kept. `resume=True` continues from the latest complete one; `resume=False` deletes them.

Output layout under `config.output_dir`:
    checkpoints/step_<n>/   accelerate state + trainer_state.json
    tensorboard/            scalars train/loss, train/lr, train/grad_norm and every loss_fn metric; hparams
                            (`report_to`: tensorboard by default, wandb, or none; `common.tracking`)
    final/                  the trained model (`save_pretrained`, or model.safetensors for a bare module)
    metrics.json            final_loss, steps, losses (one per optimizer step), config
    train_config.json       the config, written at start

Departures from the textbook loop: weight decay applies to matrices only (ndim >= 2; norms and biases
are not decayed, as in nanoGPT); each epoch drops its last incomplete optimizer step; the step loss is
the mean of the micro-batch losses, which equals the big-batch loss when micro-batches hold equally many
supervised tokens.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import send_to_device, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from common.checkpoints import complete_checkpoints, load_checkpoint, save_checkpoint, save_final
from common.stages import atomic_write_json, check_world
from common.tracking import REPORT_TO, hparams, log_with

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]
IGNORE_INDEX = -100
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
_INT_MINIMA = {
    "max_steps": 1,
    "batch_size": 1,
    "grad_accum": 1,
    "warmup_steps": 0,
    "seed": 0,
    "save_every": 0,
    "log_every": 1,
    "keep_checkpoints": 1,
}
# A checkpoint written under other values of these fields would not continue the same trajectory.
TRAJECTORY_FIELDS = (
    "max_steps",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "warmup_steps",
    "lr_schedule",
    "max_grad_norm",
    "seed",
    "mixed_precision",
)


@dataclass
class TrainConfig:
    """Hyperparameters of one `train` call; `batch_size` is per process and per micro-batch."""

    output_dir: str
    max_steps: int  # optimizer steps
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3  # peak learning rate, reached after `warmup_steps`
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warmup from 0
    lr_schedule: str = "cosine"  # constant | linear | cosine (decay to 0 at max_steps)
    max_grad_norm: float | None = 1.0  # None: no clipping
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints; 0: only at the end
    log_every: int = 10  # optimizer steps between TensorBoard scalars
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | no | bf16 | fp16
    progress: bool = True
    resume: bool = True
    keep_checkpoints: int = 2  # newest complete checkpoints kept on disk
    report_to: str = "tensorboard"  # tensorboard (output_dir/tensorboard) | wandb | none (common.tracking)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form stage settings, logged with the config

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"TrainConfig.{name}: {rule}, got {getattr(self, name)!r}")

        if not isinstance(self.output_dir, str) or not self.output_dir:
            fail("output_dir", "must be a non-empty path string")
        for name, low in _INT_MINIMA.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                fail(name, f"must be an integer >= {low}")
        if self.warmup_steps > self.max_steps:
            fail("warmup_steps", f"must be <= max_steps ({self.max_steps})")
        if not self.lr > 0:
            fail("lr", "must be > 0")
        if not self.weight_decay >= 0:
            fail("weight_decay", "must be >= 0")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            fail("max_grad_norm", "must be > 0 or None")
        if self.lr_schedule not in SCHEDULES:
            fail("lr_schedule", f"must be one of {', '.join(SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            fail("mixed_precision", f"must be one of {', '.join(MIXED_PRECISIONS)}")
        if not isinstance(self.extra, dict):
            fail("extra", "must be a dict")
        if self.report_to not in REPORT_TO:
            fail("report_to", f"must be one of {', '.join(REPORT_TO)}")


@dataclass
class TrainResult:
    final_loss: float  # loss of the last optimizer step
    losses: list[float] = field(repr=False)  # one per optimizer step, including steps before a resume
    steps: int
    output_dir: str


# --- losses and collation ---------------------------------------------------------------------------


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy: position t predicts labels[t + 1]; labels == -100 are ignored.

    logits: [batch, seq, vocab]; labels: [batch, seq]. Returns (loss, n_tokens); with no supervised token
    the loss is a graph-connected 0, so the batch adds nothing to the gradient.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    n_tokens = int((labels != IGNORE_INDEX).sum())
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / max(n_tokens, 1), n_tokens


def causal_lm_loss(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """`LossFn` for supervised fine-tuning: `shifted_cross_entropy` of the model's logits on `labels`."""
    missing = [key for key in ("input_ids", "labels") if key not in batch]
    if missing:
        raise ValueError(f"causal_lm_loss: batch has no {', '.join(map(repr, missing))}")
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
    loss, n_tokens = shifted_cross_entropy(out.logits, batch["labels"])
    return loss, {"loss": loss.item(), "n_tokens": float(n_tokens)}


def pad_collate(tokenizer_or_pad_id: Any) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
    """A collate function that right-pads `input_ids` (pad id), `attention_mask` (0) and `labels` (-100).

    An example needs `input_ids`; `attention_mask` defaults to ones and `labels` to `input_ids` where the
    mask is 1. Any other key becomes a tensor when every example holds a number there, else a list.
    """
    if isinstance(tokenizer_or_pad_id, int) and not isinstance(tokenizer_or_pad_id, bool):
        pad_id = tokenizer_or_pad_id
    else:
        pad_id = getattr(tokenizer_or_pad_id, "pad_token_id", None)
        if pad_id is None:
            raise ValueError(
                "pad_collate: the tokenizer has no pad_token_id (set tokenizer.pad_token, or pass an int)"
            )
    if pad_id < 0:
        raise ValueError(f"pad_collate: pad id must be >= 0, got {pad_id}")

    def collate(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("pad_collate: empty batch")
        rows = []
        for i, example in enumerate(examples):
            if "input_ids" not in example:
                raise ValueError(f"pad_collate: example {i} has no 'input_ids'")
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long).flatten()
            if ids.numel() == 0:
                raise ValueError(f"pad_collate: example {i} has empty 'input_ids'")
            mask = torch.as_tensor(
                example.get("attention_mask", torch.ones_like(ids)), dtype=torch.long
            ).flatten()
            labels = example.get("labels")
            labels = ids.masked_fill(mask == 0, IGNORE_INDEX) if labels is None else torch.as_tensor(labels)
            labels = labels.to(torch.long).flatten()
            for name, tensor in (("attention_mask", mask), ("labels", labels)):
                if tensor.numel() != ids.numel():
                    raise ValueError(
                        f"pad_collate: example {i} has {tensor.numel()} {name} for {ids.numel()} input_ids"
                    )
            rows.append((ids, mask, labels))
        width = max(ids.numel() for ids, _, _ in rows)
        batch = {
            "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
        }
        for i, (ids, mask, labels) in enumerate(rows):
            batch["input_ids"][i, : ids.numel()] = ids
            batch["attention_mask"][i, : ids.numel()] = mask
            batch["labels"][i, : ids.numel()] = labels
        for key in examples[0].keys() - batch.keys():
            values = [example.get(key) for example in examples]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            batch[key] = torch.tensor(values) if numeric else values
        return batch

    return collate


def stack_collate(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Default collate: stack each field of equally shaped examples (use `pad_collate` for ragged ones)."""
    try:
        return {key: torch.stack([torch.as_tensor(ex[key]) for ex in examples]) for key in examples[0]}
    except (RuntimeError, KeyError) as err:
        raise ValueError(
            f"train: examples cannot be stacked ({err}); pass collate_fn=pad_collate(...)"
        ) from None


# --- data order, schedule, precision ----------------------------------------------------------------


@lru_cache(maxsize=4)
def epoch_permutation(n_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    return tuple(rng.permutation(n_examples).tolist())


def step_batches(
    n_examples: int,
    batch_size: int,
    grad_accum: int,
    seed: int,
    step: int,
    num_processes: int = 1,
    process_index: int = 0,
) -> list[list[int]]:
    """Example indices of the `grad_accum` micro-batches this process feeds to optimizer step `step` (0-based).

    A step consumes the next batch_size * grad_accum * num_processes examples of the epoch's permutation;
    micro-batch m of process p takes slot m * num_processes + p. The remainder of an epoch is dropped.
    """
    per_step = batch_size * grad_accum * num_processes
    steps_per_epoch = n_examples // per_step
    if steps_per_epoch == 0:
        raise ValueError(
            f"train: dataset has {n_examples} examples, fewer than one optimizer step needs "
            f"(batch_size {batch_size} x grad_accum {grad_accum} x {num_processes} processes)"
        )
    epoch, position = divmod(step, steps_per_epoch)
    chunk = epoch_permutation(n_examples, seed, epoch)[position * per_step : (position + 1) * per_step]
    slots = [chunk[k * batch_size : (k + 1) * batch_size] for k in range(grad_accum * num_processes)]
    return [list(slots[m * num_processes + process_index]) for m in range(grad_accum)]


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps`, then constant, linear decay to 0, or cosine decay to 0 at max_steps."""
    return get_scheduler(
        SCHEDULES[config.lr_schedule],
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps,
    )


def resolve_mixed_precision(requested: str, cuda_bf16: bool) -> str:
    """accelerate's mixed_precision value: "auto" means bf16 where CUDA supports it and fp32 ("no") elsewhere."""
    if requested == "auto":
        return "bf16" if cuda_bf16 else "no"
    return requested


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters")
    if weight_decay == 0:
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _hparams(config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The config as tracker hparams (scalars only: None and nested values become strings)."""
    flat = {k: v for k, v in asdict(config).items() if k != "extra"}
    flat.update({f"extra.{k}": v for k, v in config.extra.items()})
    return hparams(flat)


def _release_accelerate_state(mixed_precision: str) -> None:
    # accelerate keeps one process-wide state and refuses an Accelerator with another precision; a stage
    # that trains in bf16 after one in fp32 (same process) needs it rebuilt.
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()


# --- the loop ---------------------------------------------------------------------------------------


def train(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    loss_fn: LossFn,
    config: TrainConfig,
    collate_fn: Callable[[list[Any]], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train `model` in place for `config.max_steps` optimizer steps (see the module docstring).

    `dataset`: anything with len() and integer indexing (list, torch or HF Dataset); `collate_fn`
    (default `stack_collate`) turns a list of its items into a batch dict. `loss_fn(model, batch)` runs
    under autocast and returns (loss, metrics); metrics are averaged over a step's micro-batches and
    logged as train/<name>. The global RNGs are seeded with `config.seed`. Pass fp32 weights: bf16
    autocast gives the speed, and AdamW on bf16 weights loses small updates. The model ends in eval mode
    on the accelerator's device.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: config must be a TrainConfig, got {type(config).__name__}")
    collate = collate_fn or stack_collate
    n_examples, out = len(dataset), Path(config.output_dir)
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    mixed_precision = resolve_mixed_precision(config.mixed_precision, cuda_bf16)
    _release_accelerate_state(mixed_precision)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=mixed_precision,
        log_with=log_with(config.report_to),
        project_dir=str(out),
    )
    n_procs, rank = accelerator.num_processes, accelerator.process_index
    check_world(n_procs)
    plan = (n_examples, config.batch_size, config.grad_accum, config.seed)
    step_batches(*plan, 0, n_procs, rank)  # raises here on a dataset smaller than one optimizer step

    set_seed(config.seed)
    model.to(accelerator.device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = make_scheduler(optimizer, config)  # stepped by hand: once per optimizer step, any world size
    ds_plugin = accelerator.state.deepspeed_plugin
    if ds_plugin is not None:  # no DataLoader goes through prepare(), so DeepSpeed cannot infer these
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        ds_plugin.deepspeed_config["gradient_accumulation_steps"] = config.grad_accum
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume:  # start over: a stale checkpoint must never be resumed later
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for stale in [*(out / "checkpoints").glob("step_*.tmp"), *out.glob("final.tmp*")]:  # killed saves
            shutil.rmtree(stale)
        atomic_write_json(out / "train_config.json", asdict(config))
    accelerator.wait_for_everyone()
    step, losses, done = 0, [], complete_checkpoints(out)
    if done:
        state = load_checkpoint(accelerator, done[-1], config, TRAJECTORY_FIELDS)
        step, losses = state["step"], state["losses"]
    # TensorBoard: events in output_dir/tensorboard; wandb: project named after the stage's folder
    project = "tensorboard" if config.report_to == "tensorboard" else out.name
    wandb_kwargs = {"wandb": {"dir": str(out)}} if config.report_to == "wandb" else {}
    accelerator.init_trackers(project, config=_hparams(config), init_kwargs=wandb_kwargs)
    if config.progress and accelerator.is_main_process:
        resumed = f" (resuming at step {step} from {done[-1]})" if done else ""
        logger.info("train: %s%s", json.dumps(asdict(config), default=str), resumed)

    model.train()
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc="train",
        disable=not (config.progress and accelerator.is_local_main_process),
    )
    while step < config.max_steps:
        lr = scheduler.get_last_lr()[0]
        loss_sum, metric_sums = torch.zeros((), device=accelerator.device), {}
        for indices in step_batches(*plan, step, n_procs, rank):
            batch = send_to_device(collate([dataset[i] for i in indices]), accelerator.device)
            # accumulate(): gradients are all-reduced on the step's last micro-batch only.
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, metrics = loss_fn(model, batch)
                accelerator.backward(loss)  # scaled by 1 / grad_accum: the step's gradient is the mean
            loss_sum += loss.detach().float()
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value) / config.grad_accum
        grad_norm = None
        if config.max_grad_norm is not None:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(accelerator.reduce(loss_sum / config.grad_accum, "mean").item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
        if step % config.log_every == 0 or step == config.max_steps:
            scalars = {f"train/{name}": value for name, value in metric_sums.items()}
            scalars.update({"train/loss": losses[-1], "train/lr": lr})
            if grad_norm is not None:
                scalars["train/grad_norm"] = grad_norm
            accelerator.log(scalars, step=step)
        if step == config.max_steps or (config.save_every and step % config.save_every == 0):
            save_checkpoint(accelerator, out, step, losses, config)
    bar.close()

    save_final(accelerator, model, out)
    if accelerator.is_main_process:
        summary = {"final_loss": losses[-1], "steps": step, "losses": losses, "config": asdict(config)}
        atomic_write_json(out / "metrics.json", summary)
    # end_training() would also destroy the default process group, which a later stage of the same
    # process still needs (a second train() under `accelerate launch`, an in-process vLLM engine).
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.unwrap_model(model, keep_fp32_wrapper=False).eval()  # also drops the autocast forward wrapper
    accelerator.free_memory()
    return TrainResult(final_loss=losses[-1], losses=list(losses), steps=step, output_dir=str(out))
