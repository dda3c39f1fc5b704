"""Training logs: one JSON line per step (and per eval), the trackers of `report_to` (TensorBoard,
wandb, trackio: `sari_train/trackers.py`), sample completions, and a PNG of the curves. Only the
main process writes; a resumed run drops lines logged after its checkpoint (a killed run may have
logged steps it never saved)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from sari_train.trackers import finite, open_trackers

CURVES = ("loss", "reward", "rewards/accuracy/mean", "eval/accuracy", "kl", "entropy",
          "completions/mean_length", "frac_reward_zero_std", "learning_rate", "grad_norm")


class MetricsLog:
    def __init__(self, folder: Path, enabled: bool = True, resume_step: int | None = None,
                 report_to: Sequence[str] = ("tensorboard",), run_name: str | None = None,
                 config: dict[str, Any] | None = None):
        self.folder, self.enabled = Path(folder), enabled
        self.path = self.folder / "metrics.jsonl"
        self.samples_path = self.folder / "samples.jsonl"
        self.trackers: list = []  # accelerate's GeneralTracker
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in (self.path, self.samples_path):
            kept = [r for r in read_jsonl(path) if resume_step is not None and r["step"] <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.trackers = open_trackers(list(report_to), self.folder, run_name, config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for tracker in self.trackers:
            tracker.log(finite(metrics), step=step)

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        if self.enabled:
            with self.samples_path.open("a") as f:
                f.writelines(json.dumps({"step": step, **r}, ensure_ascii=False) + "\n" for r in rows)

    def close(self) -> Path | None:
        if not self.enabled:
            return None
        for tracker in self.trackers:
            tracker.finish()
        return plot_curves(read_jsonl(self.path), self.folder / "curves.png")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


TITLES = {"loss": "loss (log scale)", "reward": "reward (mean)", "rewards/accuracy/mean": "accuracy reward (mean)",
          "eval/accuracy": "held-out accuracy", "kl": "KL to the reference", "entropy": "entropy (nats/token)",
          "completions/mean_length": "completion length (tokens)", "frac_reward_zero_std": "groups with equal rewards",
          "learning_rate": "learning rate", "grad_norm": "gradient norm (before clipping)"}


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = curves_figure(rows)
    if fig is None:
        return None
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def curves_figure(rows: list[dict[str, Any]]) -> Any:
    """One panel per logged curve against the optimizer step: whole-number step ticks, plain tick
    labels (no offset such as "1e-5 +"), the loss on a log axis (symmetric log if it goes negative,
    as a GRPO loss can)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    keys = [k for k in CURVES if any(r.get(k) is not None for r in rows)]
    if not keys:
        return None
    cols = min(3, len(keys))
    n_rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 2.8 * n_rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        title = TITLES.get(key, key)
        if key == "loss":
            positive = all(v > 0 for _, v in points)
            ax.set_yscale("log" if positive else "symlog", **({} if positive else {"linthresh": 1e-3}))
            title = title if positive else "loss (symmetric log scale)"
        else:  # each tick says its own value: no shared offset or "1e-5" multiplier above the axis
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.6g}"))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
