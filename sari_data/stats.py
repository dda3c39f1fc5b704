"""`sari-data stats`: what is in a workspace, as terminal tables and an optional PNG chart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from corpus.store import Workspace

ITEM_DIMENSIONS = ("task", "family", "answer position", "source")


def summary_tables(ws: Workspace) -> dict[str, pd.DataFrame]:
    """One table per dimension: rows are its values, columns the splits, plus a total column."""
    tables = {}
    for dimension in ITEM_DIMENSIONS:
        counts = ws.counts_by(dimension)
        key = dimension.replace(" ", "_")
        table = counts.pivot_table(index=key, columns="split", values="n", aggfunc="sum", fill_value=0)
        table["total"] = table.sum(axis=1)
        tables[dimension] = table
    quarantine = ws.counts_by("reason", table="quarantine")
    if len(quarantine):
        tables["quarantine reason"] = quarantine.pivot_table(index="reason", columns="source", values="n",
                                                            aggfunc="sum", fill_value=0)
    return tables


def format_tables(tables: dict[str, pd.DataFrame]) -> str:
    blocks = []
    for name, table in tables.items():
        table = table.copy()
        table.columns.name = None
        blocks.append(f"== by {name} ==\n{table.to_string() if len(table) else '(none)'}")
    return "\n\n".join(blocks)


def write_chart(tables: dict[str, pd.DataFrame], path: Path) -> Path:
    """A grid of bar charts, one per table, stacked by split."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    names = list(tables)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 3.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        table = tables[name].drop(columns="total", errors="ignore")
        table.plot.bar(ax=ax, stacked=True, rot=30)
        ax.set_title(f"items by {name}")
        ax.set_xlabel("")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
