"""The difficulty report: bucket counts, pass rates by task and family, how the measured pass rate
tracks a synthetic item's constructed difficulty knob, and a histogram PNG.

Input is the frame of `Workspace.difficulty_view` (one row per item: pass_rate, bucket, task,
family, knob); everything here is a pure function of it, apart from writing the PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TERCILES = ("easy (<1/3)", "medium", "hard (>=2/3)")


def in_scope(frame: pd.DataFrame, split: str | None) -> pd.DataFrame:
    return frame if split is None else frame[frame.split == split]


def bucket_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Items per bucket with their pass-rate range; items without a bucket (0/k under SARI's rule) last."""
    labels = frame.bucket.map(lambda b: "dropped (0/k)" if pd.isna(b) else str(int(b)))
    table = frame.groupby(labels, sort=False).pass_rate.agg(items="size", min_pass_rate="min",
                                                            max_pass_rate="max", mean_pass_rate="mean")
    order = sorted(table.index, key=lambda label: (not label.isdigit(), int(label) if label.isdigit() else 0))
    return table.loc[order].rename_axis("bucket").reset_index()


def group_table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean pass rate per group, the share of items solved at least once, and the silence probe's mean."""
    table = frame.groupby(by).agg(items=("pass_rate", "size"), mean_pass_rate=("pass_rate", "mean"),
                                  solved_at_least_once=("n_correct", lambda n: float((n > 0).mean())))
    if "silence_pass_rate" in frame:
        table["mean_silence_pass_rate"] = frame.groupby(by).silence_pass_rate.mean()
    return table.reset_index()


def knob_tercile(knob: float) -> str:
    return TERCILES[0] if knob < 1 / 3 else TERCILES[1] if knob < 2 / 3 else TERCILES[2]


def spearman(knob: pd.Series, pass_rate: pd.Series) -> float:
    """Rank correlation of knob and pass rate; NaN when either is constant (nothing to rank)."""
    varies = knob.nunique() > 1 and pass_rate.nunique() > 1
    return float(knob.corr(pass_rate, method="spearman")) if varies else float("nan")


def knob_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For items with a constructed difficulty knob: mean pass rate per knob tercile, and the
    Spearman correlation of knob and pass rate over all of them and per family (negative when
    harder-by-construction is harder; NaN when either is constant, e.g. a family the model never
    gets right, or one it answers by chance, where the knob cannot show)."""
    known = frame[frame.knob.notna()]
    if known.empty:
        return {}
    terciles = known.knob.map(knob_tercile)
    by_tercile = known.groupby(terciles).pass_rate.agg(items="size", mean_pass_rate="mean")
    by_tercile = by_tercile.reindex([t for t in TERCILES if t in by_tercile.index])
    rows = [{"items": "all", "n": len(known), "spearman": spearman(known.knob, known.pass_rate)}]
    if known.family.nunique() > 1:
        rows += [{"items": f"family {name}", "n": len(g), "spearman": spearman(g.knob, g.pass_rate)}
                 for name, g in known.groupby("family")]
    return {"pass rate by difficulty knob": by_tercile.rename_axis("knob_tercile").reset_index(),
            "knob vs pass rate": pd.DataFrame(rows)}


def report_tables(frame: pd.DataFrame, split: str | None, silence: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    frame = in_scope(frame, split)
    if silence is not None:
        frame = frame.merge(silence[["item_id", "pass_rate"]].rename(columns={"pass_rate": "silence_pass_rate"}),
                            on="item_id", how="left")
    if frame.empty:
        return {}
    return {"buckets": bucket_table(frame), "by task": group_table(frame, "task"),
            "by family": group_table(frame, "family"), **knob_tables(frame)}


def format_tables(tables: dict[str, pd.DataFrame]) -> str:
    return "\n\n".join(f"== {name} ==\n{table.to_string(index=False, float_format=lambda x: f'{x:.3f}')}"
                       for name, table in tables.items())


def write_histogram(frame: pd.DataFrame, split: str | None, path: Path) -> Path | None:
    """Pass-rate histograms: all items, then one panel per task and per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = histogram_figure(in_scope(frame, split))
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def histogram_figure(frame: pd.DataFrame) -> Any:
    """The figure `write_histogram` saves (None without items): one bar per possible n_correct."""
    import matplotlib.pyplot as plt

    if frame.empty:
        return None

    k = int(frame.k.max())
    edges = np.linspace(-0.5 / k, 1 + 0.5 / k, k + 2)  # one bar per possible n_correct
    panels = [("all items", frame)] + [(f"task: {t}", g) for t, g in frame.groupby("task")] \
        + [(f"family: {f}", g) for f, g in frame.groupby("family")]
    known = frame[frame.knob.notna()]
    used = len(panels) + (not known.empty)  # the histograms, then the knob panel when there is a knob
    cols = min(4, used)
    rows = -(-used // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (title, group) in zip(axes.flat, panels):
        ax.hist(group.pass_rate, bins=edges, color="tab:blue")
        ax.set_title(f"{title} (n={len(group)})", fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.tick_params(labelsize=7)
    if not known.empty:  # does the pass rate fall as the constructed knob rises?
        knob_panel(axes.flat[len(panels)], known)
    for ax in axes.flat[used:]:
        ax.axis("off")
    fig.supxlabel(f"pass rate (correct / {k})", fontsize=9)
    fig.tight_layout()
    return fig


def knob_panel(ax, known: pd.DataFrame) -> None:
    """Mean pass rate per tenth of the constructed knob, one line per family, with its Spearman ρ."""
    tenths = (known.knob.clip(0, 0.999) * 10).astype(int)
    for family, group in known.groupby("family"):
        means = group.groupby(tenths[group.index]).pass_rate.mean()
        rho = spearman(group.knob, group.pass_rate)
        ax.plot((means.index + 0.5) / 10, means.values, marker=".", label=f"{family} (ρ {rho:+.2f})")
    ax.set_title(f"pass rate vs knob (ρ {spearman(known.knob, known.pass_rate):+.2f})", fontsize=8)
    ax.set_xlabel("constructed difficulty", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1.05)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
