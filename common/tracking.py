"""Experiment trackers through accelerate, for the loops that have no `Accelerator` of their own.

    tracker = start_tracker("tensorboard", out / "tensorboard", run_name="rl", config=asdict(cfg))
    tracker.log({"rl/loss": 0.3}, step=12)       # every call is a no-op with report_to="none"
    tracker.finish()

`report_to` is one of `REPORT_TO`: "tensorboard" (the default everywhere: event files under the stage's
output folder, read with `tensorboard --logdir runs/`), "wandb" (the `wandb` package, its own login and
project; the run is named after the stage) or "none". `common.train` passes the same value to
`Accelerator(log_with=...)`; `common.rl_loop.run_rl` uses `start_tracker`. Only the main process of a
launch writes (accelerate's trackers check it themselves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_TO = ("tensorboard", "wandb", "none")


def check_report_to(value: str, owner: str) -> None:
    """Raise a one-line ValueError naming `owner` unless `value` is one of `REPORT_TO`."""
    if value not in REPORT_TO:
        raise ValueError(f"{owner}.report_to: {value!r}; valid: {', '.join(REPORT_TO)}")


def log_with(report_to: str) -> str | None:
    """accelerate's `log_with` for a `report_to` value (None: no tracker)."""
    check_report_to(report_to, "log_with")
    return None if report_to == "none" else report_to


def hparams(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A flat config as tracker hyperparameters: scalars kept, None and nested values as JSON strings
    (TensorBoard's hparams plugin takes scalars and strings only)."""
    return {
        k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
        for k, v in config.items()
    }


class Tracker:
    """One run's scalars, sent to an accelerate tracker (or dropped when there is none)."""

    def __init__(self, tracker=None):
        self._tracker = tracker

    @property
    def active(self) -> bool:
        return self._tracker is not None

    def log(self, values: dict[str, float], step: int) -> None:
        if self._tracker is not None:
            self._tracker.log(values, step=step)

    def finish(self) -> None:
        if self._tracker is not None:
            self._tracker.finish()
            self._tracker = None


def start_tracker(
    report_to: str, logging_dir: str | Path, run_name: str, config: dict[str, Any] | None = None
) -> Tracker:
    """A started tracker writing under `logging_dir` (TensorBoard: event files in that folder; wandb:
    project `run_name`, local files under `logging_dir`), with `config` stored as hyperparameters."""
    check_report_to(report_to, "start_tracker")
    if report_to == "none":
        return Tracker()
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    logging_dir = Path(logging_dir)
    if report_to == "tensorboard":
        tracker = TensorBoardTracker("", logging_dir)  # run name "" : events directly in logging_dir
    else:
        logging_dir.mkdir(parents=True, exist_ok=True)
        tracker = WandBTracker(run_name, dir=str(logging_dir))
    tracker.start()
    if config:
        tracker.store_init_configuration(hparams(config))
    return Tracker(tracker)
