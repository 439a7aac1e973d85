"""Checkpoints of common.train, written so that a killed run never leaves one that looks complete.

A checkpoint is `output_dir/checkpoints/step_<n>/`: accelerate's state (model, optimizer, scheduler,
RNG states of every process) plus `trainer_state.json` (step, loss history, config), written last into
`step_<n>.tmp` before the rename (one name for every process of a launch, so not `atomic_dir`, whose
temporary name is per process). The final model goes to `final/` through `common.stages.atomic_dir`.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from common.stages import StageError, atomic_dir, atomic_write_json, read_json

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"

_STEP_DIR = re.compile(r"step_(\d+)")


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under `output_dir/checkpoints`, oldest first.

    Complete = a `step_<n>` folder holding `trainer_state.json`, which `_save_checkpoint` writes last,
    before the rename; any other folder (a killed save, a `.tmp`) is ignored.
    """
    root = Path(output_dir) / "checkpoints"
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        match = _STEP_DIR.fullmatch(path.name)
        if not (match and path.is_dir()):
            continue
        if (path / STATE_FILE).is_file():
            found.append((int(match[1]), path))
        else:
            logger.warning("%s has no %s (half-written checkpoint): ignored", path, STATE_FILE)
    return [path for _, path in sorted(found)]


def save_checkpoint(accelerator: Accelerator, out: Path, step: int, losses: list[float], config: Any) -> None:
    """accelerate state into `step_<n>.tmp`, then trainer_state.json, then the rename; keeps the newest few."""
    final, tmp = out / "checkpoints" / f"step_{step}", out / "checkpoints" / f"step_{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, registered scheduler, RNG states of every process
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, {"step": step, "losses": losses, "config": asdict(config)})
        shutil.rmtree(final, ignore_errors=True)  # a half-written folder of the same name
        tmp.rename(final)
        for old in complete_checkpoints(out)[: -config.keep_checkpoints]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def check_resumable(checkpoint: Path, saved: dict[str, Any], config: Any, fields: Sequence[str]) -> None:
    """Refuse to continue a trajectory under other values of the fields that shape it."""
    for name in fields:
        if saved.get(name) != getattr(config, name):
            raise ValueError(
                f"{checkpoint}: written with {name}={saved.get(name)!r}, the config says "
                f"{getattr(config, name)!r}; use the same settings, resume=False or a new output_dir"
            )


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, config: Any, fields: Sequence[str]) -> dict:
    """Resume from a complete checkpoint: its trainer_state.json (checked against `fields`), then the
    accelerate state. A corrupt file raises `StageError` naming the checkpoint, in one line."""
    state = read_json(checkpoint / STATE_FILE)
    check_resumable(checkpoint, state["config"], config, fields)
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # a truncated or edited weights / optimizer / RNG file, whatever its reader
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StageError(
            f"{checkpoint}: unreadable checkpoint ({type(err).__name__}: {first[:200]}); "
            "delete it or train with resume=False"
        ) from None
    return state


def save_final(accelerator: Accelerator, model: torch.nn.Module, out: Path) -> None:
    """The trained model into `out/final` (built under a temporary name, then renamed: `atomic_dir`)."""
    state_dict = accelerator.get_state_dict(model)  # every process: gathers sharded (FSDP / ZeRO-3) weights
    if accelerator.is_main_process:
        with atomic_dir(out / "final") as tmp:
            unwrapped = accelerator.unwrap_model(model)
            if hasattr(unwrapped, "save_pretrained"):
                unwrapped.save_pretrained(tmp, state_dict=state_dict)
            else:
                accelerator.save(state_dict, tmp / "model.safetensors", safe_serialization=True)
    accelerator.wait_for_everyone()
