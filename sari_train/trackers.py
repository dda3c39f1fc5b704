"""Experiment trackers a run reports to (`report_to: [tensorboard, wandb, trackio]`), besides the
metrics.jsonl it always writes.

Keys are TRL's as its trainers send them to trackers (transformers' `rewrite_logs`): `train/<name>`
for training metrics (`train/reward`, `train/rewards/accuracy/mean`, `train/kl`, ...) and
`eval/<name>` for held-out ones, so our runs sit next to TRL runs in one dashboard.
wandb follows its own environment (`WANDB_MODE=offline`, `WANDB_PROJECT`, `WANDB_API_KEY`, which
we never read or log); trackio stores locally (`TRACKIO_DIR`) unless `TRACKIO_SPACE_ID` names a
Space. The project defaults to `sari` (`WANDB_PROJECT` / `TRACKIO_PROJECT` override). wandb and
trackio are optional extras: `pip install 'sari-toolkit[trackers]'`.
A resumed run continues the same tracker run (its id is derived from the run folder).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Protocol

from sari_train.config import ConfigError


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def tracker_key(name: str) -> str:
    """TRL's tracker key of a metrics.jsonl name."""
    return name if name.startswith("eval/") else f"train/{name}"


def finite(metrics: dict[str, float | None]) -> dict[str, float]:
    return {tracker_key(k): float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def run_id(folder: Path) -> str:
    """A stable tracker run id for a run folder, so `--resume` appends to the same run."""
    return f"{folder.name[:40]}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]}"


class TensorBoard:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in finite(metrics).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class Wandb:
    def __init__(self, folder: Path, name: str, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sari"), name=name, config=config,
                              dir=str(folder), id=run_id(folder), resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(finite(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class Trackio:
    def __init__(self, folder: Path, name: str, config: dict[str, Any]):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", "sari"), name=run_id(folder),
                                config={**config, "run_name": name}, resume="allow",
                                space_id=os.environ.get("TRACKIO_SPACE_ID"), auto_log_cpu=False, auto_log_gpu=False)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(finite(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoard, "wandb": Wandb, "trackio": Trackio}


def open_trackers(names: list[str], folder: Path, name: str | None = None,
                  config: dict[str, Any] | None = None) -> list[Tracker]:
    """One tracker per name; a missing optional package is a one-line error saying what to install."""
    trackers: list[Tracker] = []
    for tracker in names:
        try:
            if tracker == "tensorboard":
                trackers.append(TensorBoard(folder))
            else:
                trackers.append(TRACKERS[tracker](folder, name or folder.name, config or {}))
        except ImportError as err:
            raise ConfigError(f"report_to: {tracker} is not installed ({err.name}); "
                              f"pip install 'sari-toolkit[trackers]' or drop it from report_to") from None
    return trackers
