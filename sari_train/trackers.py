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

The trackers are accelerate's (`accelerate.tracking`), opened by `MetricsLog` on the main process.
Not through `Accelerator(log_with=...)`: its `init_trackers` gives every tracker the one project
name (WANDB_PROJECT and TRACKIO_PROJECT could not both hold) and puts TensorBoard in
`<logging_dir>/<project>`, and `end_training` destroys the process group `Run.finish` still uses.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

from sari_train.config import ConfigError


def tracker_key(name: str) -> str:
    """TRL's tracker key of a metrics.jsonl name."""
    return name if name.startswith("eval/") else f"train/{name}"


def finite(metrics: dict[str, float | None]) -> dict[str, float]:
    return {tracker_key(k): float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def run_id(folder: Path) -> str:
    """A stable tracker run id for a run folder, so `--resume` appends to the same run."""
    return f"{folder.name[:40]}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]}"


def open_trackers(names: list[str], folder: Path, name: str | None = None,
                  config: dict[str, Any] | None = None) -> list:
    """accelerate's tracker for each name, started (TensorBoard in `folder/tensorboard`); a missing
    optional package is a one-line error saying what to install."""
    from accelerate.tracking import TensorBoardTracker, TrackioTracker, WandBTracker

    name, config, run = name or folder.name, config or {}, run_id(folder)
    make = {"tensorboard": lambda: TensorBoardTracker("tensorboard", folder),
            "wandb": lambda: WandBTracker(os.environ.get("WANDB_PROJECT", "sari"), name=name, config=config,
                                          dir=str(folder), id=run, resume="allow"),
            "trackio": lambda: TrackioTracker(os.environ.get("TRACKIO_PROJECT", "sari"), name=run,
                                              config={**config, "run_name": name}, resume="allow",
                                              space_id=os.environ.get("TRACKIO_SPACE_ID"), auto_log_cpu=False,
                                              auto_log_gpu=False)}
    trackers = []
    for tracker in names:
        try:
            trackers.append(make[tracker]())
            trackers[-1].start()
        except ImportError as err:
            raise ConfigError(f"report_to: {tracker} is not installed ({err.name}); "
                              f"pip install 'sari-toolkit[trackers]' or drop it from report_to") from None
    return trackers
