"""Parquet shards laid out the Hub way: data/<config>/<split>-XXXXX-of-YYYYY.parquet.

One config per view (`all`, `eval`, `sft`, `rl`). Audio is embedded as WAV bytes in a
struct{bytes, path} column and the `datasets` features (with `Audio`) are stored in the schema's
`huggingface` metadata, so `load_dataset` and the Hub viewer see an audio column. We encode with
pyarrow, not `datasets`, whose Audio encoder needs torchcodec (docs/design-notes.md, "Audio in Parquet").

The export is written to a temporary folder and swapped in whole, so a killed export or a failed
upload never leaves a half folder; the bytes are deterministic, so a re-export changes only the
shards whose rows changed and a push sends only those.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Audio, Features, List, Value
from tqdm import tqdm

from corpus.publishing import view_frame
from corpus.store import Workspace, WorkspaceError

ROW_GROUP = 100  # small row groups keep the Hub viewer responsive on audio rows
SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # what the Hub accepts as a split name

ITEM_FEATURES = {
    "id": Value("string"), "source": Value("string"), "source_id": Value("string"),
    "audio": Audio(), "audio_sha256": Value("string"), "duration_s": Value("float64"),
    "sample_rate": Value("int32"), "question": Value("string"), "choices": List(Value("string")),
    "answer": Value("string"), "answer_index": Value("int32"), "task": Value("string"),
    "category": Value("string"), "sub_category": Value("string"), "caption": Value("string"),
    "caption_source": Value("string"), "license": Value("string"), "meta": Value("string"),
}
EXTRA_FEATURES = {
    "sft": {"cot_structured": Value("string"), "cot_free": Value("string"), "cot_generator": Value("string")},
    "rl": {"difficulty_model": Value("string"), "k": Value("int32"), "n_correct": Value("int32"),
           "pass_rate": Value("float64"), "bucket": Value("int32")},
}


@dataclass
class ExportOptions:
    """What to export; every field is recorded in the run's provenance."""

    configs: tuple[str, ...] = ("all", "eval", "sft", "rl")
    eval_splits: tuple[str, ...] = ("test",)
    difficulty_model: str | None = None  # which model's pass rates the `rl` config carries (required if several)
    min_correct: int = 1  # SARI drops items the base model never answered correctly (0/k)
    shard_mb: float = 500.0  # target shard size, as `push_to_hub` does


@dataclass
class ConfigExport:
    name: str
    splits: dict[str, int] = field(default_factory=dict)  # split -> rows
    files: list[str] = field(default_factory=list)  # relative to the export folder


def features_for(config: str) -> Features:
    """The stable column order of a config: the item columns, then the view's own."""
    return Features({**ITEM_FEATURES, **EXTRA_FEATURES.get(config, {})})


def config_rows(ws: Workspace, config: str, options: ExportOptions) -> pd.DataFrame:
    if config == "eval":
        return view_frame(ws, "all", splits=options.eval_splits)
    return view_frame(ws, config, difficulty_model=options.difficulty_model, min_correct=options.min_correct)


def export(ws: Workspace, out: Path, options: ExportOptions, *, progress: bool = True) -> list[ConfigExport]:
    """Write every non-empty config's shards under `out`/data (the card is written by the caller).

    Builds in a sibling temp folder; call `swap_in` to replace `out` with it.
    """
    results = []
    for config in options.configs:
        frame = config_rows(ws, config, options)
        if frame.empty:
            continue
        results.append(write_config(ws, config, frame, out, options.shard_mb, progress))
    return results


def write_config(ws: Workspace, config: str, frame: pd.DataFrame, out: Path, shard_mb: float,
                 progress: bool) -> ConfigExport:
    schema = features_for(config).arrow_schema
    result = ConfigExport(config)
    folder = out / "data" / config
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in frame.groupby("split", sort=True):
        if not SPLIT_NAME.match(split):
            raise WorkspaceError(f"split name {split!r} is not valid on the Hub (letters, digits, _ and . only); "
                                 f"rename it in the recipe's split step and rebuild")
        shards = plan_shards([row_bytes(ws.root, row) for row in rows.itertuples()], shard_mb * 2**20)
        result.splits[split] = len(rows)
        bar = tqdm(total=len(rows), disable=not progress, desc=f"export {config}/{split}", unit="item")
        for index, (start, stop) in enumerate(shards):
            name = f"{split}-{index:05d}-of-{len(shards):05d}.parquet"
            records = [hub_row(ws.root, row, schema.names) for row in rows.iloc[start:stop].to_dict("records")]
            pq.write_table(pa.Table.from_pylist(records, schema=schema), folder / name, row_group_size=ROW_GROUP)
            result.files.append(f"data/{config}/{name}")
            bar.update(stop - start)
        bar.close()
    return result


def plan_shards(sizes: list[int], target: float) -> list[tuple[int, int]]:
    """Consecutive (start, stop) row ranges whose summed sizes stay under `target` (at least one row each)."""
    shards, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > target:
            shards.append((start, i))
            start, total = i, 0
        total += size
    if sizes:
        shards.append((start, len(sizes)))
    return shards


def clip_file(root: Path, item_id: str, path: str) -> Path:
    clip = root / path
    if not clip.exists():
        raise WorkspaceError(f"item {item_id}: audio file {clip} is missing; rebuild the workspace "
                             f"(sari-data build) or restore the audio/ folder")
    return clip


def row_bytes(root: Path, row: Any) -> int:
    """A row's size estimate: its audio file plus its text."""
    audio = clip_file(root, row.id, row.audio_path).stat().st_size if isinstance(row.audio_path, str) else 0
    text = sum(len(v) for v in (row.question, row.caption, getattr(row, "cot_structured", None),
                                getattr(row, "cot_free", None)) if isinstance(v, str))
    return audio + text + 64 * len(row.choices)


def hub_row(root: Path, row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A store row as a Hub row: the clip's WAV bytes embedded, NaN as None, choices as a list."""
    row = {k: (None if _missing(v) else v) for k, v in row.items()}
    path = row["audio_path"]
    if path is not None:
        row["audio"] = {"bytes": clip_file(root, row["id"], path).read_bytes(), "path": Path(path).name}
    else:
        row["audio"] = None
    row.update(duration_s=row["audio_duration_s"], sample_rate=row["audio_sample_rate"],
               choices=list(row["choices"]), meta=row["meta"] or "{}")
    return {name: row.get(name) for name in names}


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are never "missing"
        return False


def staging_folder(out: Path) -> Path:
    """A fresh temp folder next to `out` (same filesystem, so the swap is a rename)."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def check_replaceable(out: Path) -> None:
    """Only a missing or empty folder, or a previous export, may be replaced (never a user's folder)."""
    if out.exists() and any(out.iterdir()) and not ((out / "README.md").exists() and (out / "data").is_dir()):
        raise WorkspaceError(f"refusing to replace {out}: it is not a previous export (no README.md and data/); "
                             f"pass an empty or new folder with --out")


def swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` with `tmp` by renames, so readers see the old export or the new one, never a mix."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def manifest(out: Path) -> dict[str, Any]:
    """Files of an export folder with their sizes (what a push would send)."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {p.relative_to(out).as_posix(): p.stat().st_size for p in files}
