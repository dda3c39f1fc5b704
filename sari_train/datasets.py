"""Training and evaluation examples from a dataset (a Hub id or a local folder) instead of a workspace.

    sari-train sft  --dataset workspaces/demo/exports/hub:sft --model models/tiny
    sari-train grpo --dataset me/sari-demo:rl --eval-dataset me/sari-demo:eval --model runs/sft/final
    sari-train eval --dataset me/sari-demo:eval --split test --model runs/grpo/final
    sari-train eval --dataset someone/audio-mcq --split test --set columns.choices=options --set columns.audio=wav

`--dataset ID_OR_DIR[:config]` is read with `datasets.load_dataset` (one split at a time; add
`--streaming` for a dataset too big to download first). Our published configs (`sari-data
publish`) work as they are: `sft` carries the chains of thought (`cot_structured`, `cot_free`),
`rl` the pass rates and buckets the curriculum sampler reads, `eval` the held-out items. Any other
audio multiple-choice dataset works through `columns` (our name → its column): `question`,
`choices` (a list), `answer` (the option text, its 0-based index or its letter), `audio`, and
optionally `id`, `thinking`, `bucket`, `pass_rate`, `task`, `sub_category`, `difficulty`.

Audio is read as stored (`Audio(decode=False)`: WAV/FLAC bytes or a path) and decoded with
soundfile when an example is used, so torchcodec is never needed; without streaming the bytes stay
in the memory-mapped Arrow cache until then.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import BaseModel, Field, field_validator

from corpus.clips import read_audio
from sari_train.config import ConfigError
from sari_train.data import Example

COLUMNS = ("id", "question", "choices", "answer", "audio", "thinking", "bucket", "pass_rate", "task",
           "category", "sub_category", "difficulty", "meta", "source", "difficulty_model")


class DatasetOptions(BaseModel):
    """The dataset fields `sft`, `grpo` and `eval` share (each also takes --workspace instead)."""

    dataset: str | None = Field(None, description="Hub id or local folder, optionally :config "
                                                  "(e.g. DIR:sft, me/corpus:rl); instead of --workspace")
    columns: dict[str, str] = Field({}, description="our column name -> the dataset's (question, choices, answer, "
                                                    "audio, id, thinking, bucket, pass_rate, task, ...)")
    streaming: bool = Field(False, description="stream the dataset instead of downloading it first")

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown column name(s) {', '.join(unknown)}; ours are {', '.join(COLUMNS)}")
        return columns


@dataclass(frozen=True)
class EncodedAudio:
    """A clip as a dataset stores it ({bytes, path} or a path), fetched and decoded when used."""

    fetch: Any  # () -> the audio cell
    base: Path | None = None  # a local dataset's folder, for relative paths

    def load(self) -> np.ndarray:
        return decode_audio(self.fetch(), self.base)


def decode_audio(cell: Any, base: Path | None = None) -> np.ndarray:
    """16 kHz mono float32 from an `Audio(decode=False)` cell or a path (soundfile; no torchcodec)."""
    if isinstance(cell, dict) and cell.get("bytes"):
        return read_audio(io.BytesIO(cell["bytes"]))
    path = cell.get("path") if isinstance(cell, dict) else cell
    if not isinstance(path, str) or not path:
        raise ConfigError(f"audio cell {str(cell)[:80]!r} holds neither bytes nor a path")
    file = Path(path) if Path(path).is_absolute() or base is None else base / path
    if not file.exists():
        raise ConfigError(f"audio file {file} not found")
    return read_audio(file)


@dataclass(frozen=True)
class Rating:
    """What the curriculum sampler reads of an item's difficulty."""

    bucket: int | None
    pass_rate: float | None


def split_spec(spec: str) -> tuple[str, str | None]:
    """`ID_OR_DIR[:config]` -> (path or id, config)."""
    path, sep, config = spec.rpartition(":")
    return (path, config or None) if sep and path else (spec, None)


class MissingSplit(ConfigError):
    """The dataset has no such split; the command adds the flags that choose one (`hint`)."""

    def __init__(self, spec: str, split: str, splits: list[str], configs: list[str]):
        self.spec, self.split, self.splits, self.configs = spec, split, splits, configs
        super().__init__(f"dataset {spec} has no split {split!r} (its splits: {', '.join(splits)})")

    def hint(self, split_flag: str, dataset_flag: str) -> str:
        """The message plus how to fix it, e.g. `--split train`, or the published `eval` config's held-out items."""
        path, config = split_spec(self.spec)
        held_out = (f", or take the held-out items from its eval config: {dataset_flag} {path}:eval"
                    if "eval" in self.configs and config != "eval" else "")
        return f"{self}; choose one with {split_flag}{held_out}"


@dataclass
class DatasetSource:
    """One dataset (and config) read split by split; rows become `Example`s."""

    spec: str
    columns: dict[str, str] = field(default_factory=dict)
    streaming: bool = False

    @cached_property
    def _location(self) -> tuple[str, str | None, Path | None]:
        path, config = split_spec(self.spec)
        local = Path(path).expanduser()
        return path, config, (local if local.exists() else None)

    def column(self, ours: str) -> str:
        return self.columns.get(ours, ours)

    def load(self, split: str) -> Any:
        """The split as a `datasets` Dataset (or IterableDataset when streaming), audio left undecoded."""
        from datasets import Audio, load_dataset

        path, config, local = self._location
        try:
            ds = load_dataset(str(local) if local else path, config, split=split, streaming=self.streaming)
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
            splits = self.names("split")
            if splits and split not in splits:
                raise MissingSplit(self.spec, split, splits, self.names("config")) from None
            reason = " ".join(str(err).split())[:300]
            raise ConfigError(f"dataset {self.spec} (split {split!r}): cannot load it ({type(err).__name__}: "
                              f"{reason}); check the id or folder, the :config and the split") from None
        names = list(ds.features) if ds.features is not None else None  # unknown until read when streaming
        if names is not None:
            self.check_columns(names, split)
        audio = self.column("audio")
        if names is not None and isinstance(ds.features[audio], Audio):
            ds = ds.cast_column(audio, Audio(decode=False))
        return ds

    def names(self, kind: str) -> list[str]:
        """The dataset's split names (of its config) or config names; [] when they cannot be read."""
        from datasets import get_dataset_config_names, get_dataset_split_names

        path, config, local = self._location
        try:
            if kind == "split":
                return list(get_dataset_split_names(str(local) if local else path, config))
            return list(get_dataset_config_names(str(local) if local else path))
        except Exception:  # noqa: BLE001 - only to word an error better
            return []

    def check_columns(self, names: list[str], split: str) -> None:
        missing = [c for c in (self.column(o) for o in ("question", "choices", "answer", "audio")) if c not in names]
        if missing:
            raise ConfigError(f"dataset {self.spec} (split {split!r}) has no column {', '.join(missing)} "
                              f"(columns: {', '.join(names)}); map yours with --set columns.NAME=COLUMN")

    def rows(self, split: str) -> Iterator[tuple[dict[str, Any], EncodedAudio | None]]:
        """Each row (audio column excluded) with its lazily read audio, or None where it has none."""
        ds = self.load(split)
        column, base = self.column("audio"), self._location[2]
        if self.streaming:
            for index, row in enumerate(ds):
                if index == 0:
                    self.check_columns(list(row), split)
                cell = row.pop(column)
                yield row, (EncodedAudio(_constant(cell), base) if _has_audio(cell) else None)
            return
        present = audio_present(ds.data.column(column))
        audio = ds.select_columns([column])
        for index, row in enumerate(ds.remove_columns([column])):
            yield row, (EncodedAudio(_Cell(audio, index, column), base) if present[index] else None)

    def examples(self, split: str, cot_style: str | None = None,
                 limit: int | None = None) -> tuple[list[Example], dict[str, int]]:
        """Rows of `split` that make valid examples (with audio and, with `cot_style`, a chain of
        thought); the others are counted by reason, as a workspace's are."""
        pairs, left_out = self.records(split, cot_style, limit)
        return [example for example, _ in pairs], left_out

    def records(self, split: str, cot_style: str | None = None,
                limit: int | None = None) -> tuple[list[tuple[Example, dict[str, Any]]], dict[str, int]]:
        """`examples`, each with its row (the dataset's column names, audio excluded)."""
        pairs: list[tuple[Example, dict[str, Any]]] = []
        left_out: Counter[str] = Counter({"no audio": 0, "no valid chain of thought": 0})
        thinking = self.columns.get("thinking", f"cot_{cot_style}")
        for index, (row, audio) in enumerate(self.rows(split)):
            if limit is not None and len(pairs) >= limit:
                break
            example, reason = self.to_example(row, audio, split, index, thinking if cot_style else None)
            if reason:
                left_out[reason] += 1
            else:
                pairs.append((example, row))
        if not pairs:
            need = f" with a {cot_style!r} chain of thought" if cot_style else " with audio"
            raise ConfigError(f"dataset {self.spec}: no usable rows in split {split!r}{need} "
                              f"(left out: {dict(left_out)})")
        return pairs, dict(left_out)

    def to_example(self, row: dict[str, Any], audio: EncodedAudio | None, split: str, index: int,
                   thinking_column: str | None = None) -> tuple[Example | None, str | None]:
        """An Example, or None and the reason the row is left out."""
        get = lambda ours: row.get(self.column(ours))  # noqa: E731
        choices = as_choices(get("choices"))
        if choices is None or not isinstance(get("question"), str):
            return None, "no question or choices"
        answer = gold_answer(get("answer"), choices)
        if answer is None:
            return None, "answer not among the choices"
        if audio is None:
            return None, "no audio"
        thinking = row.get(thinking_column) if thinking_column else None
        if thinking_column and not thinking:
            return None, "no valid chain of thought"
        return Example(self.row_id(row, split, index), get("question"), choices, answer, audio, thinking), None

    def row_id(self, row: dict[str, Any], split: str, index: int) -> str:
        value = row.get(self.column("id"))
        return str(value) if value is not None else f"{split}-{index:06d}"

    def difficulty(self, split: str, model: str | None = None) -> dict[str, Rating]:
        """Bucket and pass rate by item id, from the `bucket` / `pass_rate` columns (our `rl` config)."""
        rows = [(self.row_id(row, split, i), {c: row.get(self.column(c)) for c in ("bucket", "pass_rate",
                                                                                  "difficulty_model")})
                for i, (row, _) in enumerate(self.rows(split))]
        models = sorted({r["difficulty_model"] for _, r in rows if r["difficulty_model"]})
        if model is not None:
            rows = [(i, r) for i, r in rows if r["difficulty_model"] in (None, model)]
        elif len(models) > 1:
            raise ConfigError(f"dataset {self.spec} has difficulty from several models ({', '.join(models)}); "
                              f"choose one with difficulty_model")
        return {i: Rating(_int(r["bucket"]), r["pass_rate"]) for i, r in rows
                if r["bucket"] is not None or r["pass_rate"] is not None}


@dataclass(frozen=True)
class _Cell:
    """One audio cell of a memory-mapped dataset, read on use (no bytes held meanwhile)."""

    rows: Any
    index: int
    column: str

    def __call__(self) -> Any:
        return self.rows[self.index][self.column]


def _constant(value: Any):
    return lambda: value


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _has_audio(cell: Any) -> bool:
    return bool(cell.get("bytes") or cell.get("path")) if isinstance(cell, dict) else bool(cell)


def audio_present(column: Any) -> list[bool]:
    """Which rows of an Arrow audio column (struct{bytes, path} or a path string) hold audio,
    read without touching the bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        present = pc.is_valid(column)
        parts = [pc.is_valid(column.field(n)) for n in ("bytes", "path") if n in names]
        if parts:
            present = pc.and_(present, parts[0] if len(parts) == 1 else pc.or_(*parts))
        return [bool(v) for v in present.fill_null(False).to_pylist()]
    return [bool(v) for v in column.to_pylist()]


def gold_answer(answer: Any, choices: list[str]) -> str | None:
    """The gold option text from its text, 0-based index or letter; None when it is none of them."""
    if isinstance(answer, str) and answer in choices:
        return answer
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return choices[int(answer)]
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha():
        index = ord(answer.strip().upper()) - ord("A")
        return choices[index] if 0 <= index < len(choices) else None
    return None


def as_choices(value: Any) -> list[str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return [str(c) for c in value] if isinstance(value, (list, tuple)) and len(value) >= 2 else None
