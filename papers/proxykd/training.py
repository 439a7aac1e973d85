"""Proxy-KD's training plumbing shared by the proxy and student stages: encoding, model files, one fit.

examples = encode_rows(task, rows, "D_w")                  # {input_ids, labels}; an empty answer: one line
fit_model(model, examples, nll_fn, lr, batch, epochs, seed, folder, pad_collate(task.pad_id))   # common.train
save_model(model, folder, info); model = load_model(task, "proxy", folder)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.stages import atomic_write_json, temp_path
from common.train import TrainConfig, train
from papers.proxykd.data import IGNORE, Task
from papers.proxykd.proxykd import nll_loss


class EmptyAnswer(ValueError):
    """An answer that encodes to no target token; the message names the row."""


class BadSetting(ValueError):
    """A config value the models cannot satisfy (e.g. top-k larger than the vocabulary)."""


def encode_rows(task: Task, rows: list[dict], who: str) -> list[dict]:
    out = []
    for r in rows:
        ex = task.encode(r["prompt"], r["answer"])
        if not any(label != IGNORE for label in ex["labels"][1:]):
            raise EmptyAnswer(f"{who}: row {r['id']}: the answer {r['answer'][:40]!r} has no target token")
        out.append(ex)
    return out


def save_model(model: torch.nn.Module, folder: Path, info: dict) -> None:
    """The trainable weights (all of a toy model, the adapters of a LoRA one) + info.json; the weights
    file is renamed into place last: its presence marks the stage as done."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "info.json", info)
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    tmp = temp_path(folder / "model.safetensors")
    save_file(state, str(tmp))
    tmp.replace(folder / "model.safetensors")


def load_model(task: Task, role: str, folder: Path) -> torch.nn.Module:
    model = task.new_model(role, 0)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    return model.eval()


def fit_model(
    model, examples, loss_fn, lr: float, batch: int, epochs: float, seed: int, out: Path, collate
) -> dict:
    """`epochs` passes of Adam (constant lr, no clipping, no decay) over `examples` via common.train."""
    steps = max(1, int(epochs * (len(examples) // batch)))
    cfg = TrainConfig(
        output_dir=str(out / "train"),
        max_steps=steps,
        batch_size=min(batch, len(examples)),
        lr=lr,
        lr_schedule="constant",
        max_grad_norm=None,
        seed=seed,
        progress=False,
        report_to="none",
        save_every=0 if steps < 500 else steps // 10,  # a killed long fit resumes from its checkpoint
    )
    result = train(model, examples, loss_fn, cfg, collate_fn=collate)
    shutil.rmtree(out / "train", ignore_errors=True)
    return {"steps": result.steps, "final_loss": result.final_loss}


def nll_fn(model, batch):
    loss = nll_loss(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
    )
    return loss, {"nll": loss.item()}
