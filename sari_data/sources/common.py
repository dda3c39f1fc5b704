"""What every file source shares: reading rows from JSONL/JSON/CSV/Parquet/`datasets` folders
with a locator per row, and attaching checked audio to the records the rows become.

A row that cannot be read (malformed JSON line, bytes that are not UTF-8) becomes a quarantine
record with its file:line; the rest of the file is still read.
"""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from corpus.records import Clip, Item, Quarantine, reason_code
from sari_data.audio import AudioSource, CheckSettings, Failure, check_many, resolve_in_root

Row = tuple[str, dict[str, Any]]  # (locator, fields)


class SourceError(Exception):
    """A source the user must fix as a whole (missing file, unknown format); the message says how."""


def read_rows(path: Path, source: str) -> Iterator[Row | Quarantine]:
    """Rows of a table file or a local `datasets` folder, each with a locator."""
    if not path.exists():
        raise SourceError(f"source {source}: {path} not found; check `path:` in the recipe")
    if path.is_dir():
        return _dataset_rows(path)
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    if path.suffix not in readers:
        raise SourceError(f"source {source}: cannot read {path}; use .jsonl, .json, .csv, .parquet or a datasets folder")
    return readers[path.suffix](path, source)


def _jsonl_rows(path: Path, source: str) -> Iterator[Row | Quarantine]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            locator = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                yield Quarantine(source=source, locator=locator, reason="not_utf8", message=str(err))
                continue
            except json.JSONDecodeError as err:
                yield Quarantine(source=source, locator=locator, reason="malformed_json", message=str(err))
                continue
            if not isinstance(row, dict):
                yield Quarantine(source=source, locator=locator, reason="malformed_json",
                                 message=f"expected a JSON object, got {type(row).__name__}")
                continue
            yield locator, row


def _json_rows(path: Path, source: str) -> Iterator[Row | Quarantine]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON Lines under a .json name (MusicBench ships these)
            yield from _jsonl_rows(path, source)
            return
        raise SourceError(f"source {source}: {path} is not valid JSON ({err}); "
                          f"fix the file or convert it to JSONL so bad lines can be skipped") from err
    except UnicodeDecodeError as err:
        raise SourceError(f"source {source}: {path} is not valid UTF-8 JSON ({err}); "
                          f"fix the file or convert it to JSONL so bad lines can be skipped") from err
    if isinstance(data, dict):  # {id: record} as some releases ship
        data = [{"id": key, **value} if isinstance(value, dict) else value for key, value in data.items()]
    for index, row in enumerate(data):
        locator = f"{path}#{index}"
        if isinstance(row, dict):
            yield locator, row
        else:
            yield Quarantine(source=source, locator=locator, reason="malformed_json",
                             message=f"expected a JSON object, got {type(row).__name__}")


def _csv_rows(path: Path, source: str) -> Iterator[Row | Quarantine]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            locator = f"{path}:{reader.line_num}"
            bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield Quarantine(source=source, locator=locator, reason="not_utf8",
                                 message=f"column(s) {bad} hold bytes that are not UTF-8")
                continue
            yield locator, row


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _parquet_rows(path: Path, source: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=512):
        for row in batch.to_pylist():
            yield f"{path}#{index}", row
            index += 1


def _dataset_rows(folder: Path) -> Iterator[Row]:
    """A `datasets` folder (save_to_disk, or Parquet files); audio columns come as {bytes, path}
    (Audio(decode=False)): we decode audio ourselves, since `datasets` needs torchcodec to."""
    import datasets

    if (folder / "dataset_info.json").exists() or (folder / "state.json").exists():
        data = datasets.load_from_disk(str(folder))
    else:
        data = datasets.load_dataset("parquet", data_dir=str(folder), split="train")
    if isinstance(data, datasets.DatasetDict):
        data = data[next(iter(data))]
    for name, feature in data.features.items():
        if isinstance(feature, datasets.Audio):
            data = data.cast_column(name, datasets.Audio(decode=False))
    for index, row in enumerate(data):
        yield f"{folder}#{index}", row


@dataclass(frozen=True)
class AudioRoot:
    """Where a source's audio paths resolve: its `audio_root`, after the recipe's prefix rewrite."""

    folder: Path
    prefix: tuple[str, str] | None = None  # (from, to)

    @classmethod
    def of(cls, source: Any) -> AudioRoot:
        rewrite = source.audio_path_prefix
        return cls(source.root(), (rewrite.from_, rewrite.to) if rewrite else None)

    def resolve(self, written: str) -> Path | Failure:
        return resolve_in_root(self.folder, self.rewritten(written))

    def rewritten(self, written: str) -> str:
        """`written` with the prefix replaced; `to` is relative to where the command runs, like
        every path in a recipe, so the result is made absolute and judged against the root."""
        if self.prefix is None:
            return written
        old, new = self.prefix[0].rstrip("/"), self.prefix[1]
        if written != old and not written.startswith(old + "/"):
            return written
        return os.path.join(os.path.abspath(new), written[len(old):].lstrip("/"))


def convert_rows(source: Any, convert: Callable[[Any, AudioRoot, str, dict[str, Any]], Pending | Quarantine]
                 ) -> Iterator[Pending | Quarantine]:
    """A file source's rows, each turned into one record by `convert(source, audio_root, locator,
    row)`; rows that could not be read pass through as the quarantine records `read_rows` made."""
    root = AudioRoot.of(source)
    for row in read_rows(source.path, source.name):
        yield row if isinstance(row, Quarantine) else convert(source, root, *row)


def audio_source(root: AudioRoot, value: Any) -> AudioSource | Failure:
    """An audio cell: a path under `root`, or a {bytes, path} struct from a `datasets` Audio column."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if not isinstance(value, str) or not value.strip():
        return "missing_audio", f"no audio path in the row (got {value!r})"
    return root.resolve(value)


@dataclass
class Pending:
    """A validated record (audio still None) waiting for its clip."""

    locator: str
    fields: dict[str, Any]
    kind: type[Item] | type[Clip]
    audio: AudioSource | Failure


def validate(kind: type[BaseModel], locator: str, fields: dict[str, Any]) -> BaseModel | Quarantine:
    """A record, or a quarantine record saying which field was wrong; never an exception."""
    try:
        return kind(**fields)
    except ValidationError as err:
        reason, message = reason_code(err)
        return Quarantine(source=str(fields.get("source", "?")), locator=locator, reason=reason, message=message)
    except TypeError as err:  # e.g. a non-string key in meta
        return Quarantine(source=str(fields.get("source", "?")), locator=locator, reason="invalid_item", message=str(err))


def pending(kind: type[Item] | type[Clip], locator: str, fields: dict[str, Any],
            audio: AudioSource | Failure) -> Pending | Quarantine:
    """Check the text fields now (so a bad row is never decoded), the audio later."""
    if kind is Clip:  # a clip's audio is required; validate against a placeholder
        probe = validate(kind, locator, {**fields, "audio": _PLACEHOLDER})
    else:
        probe = validate(kind, locator, fields)
    return probe if isinstance(probe, Quarantine) else Pending(locator, fields, kind, audio)


_PLACEHOLDER = {"sha256": "0" * 64, "path": "-", "duration_s": 1.0, "sample_rate": 16000}


def attach_audio(rows: Iterable[Pending | Quarantine], workspace: Path, settings: CheckSettings,
                 workers: int | str) -> Iterator[Item | Clip | Quarantine]:
    """Check every pending row's audio in parallel, in order; rows that failed pass straight through."""
    rows = iter(rows)
    passed: deque[Pending | Quarantine] = deque()  # at most the pool's window

    def sources() -> Iterator[AudioSource | Failure]:
        for row in rows:
            passed.append(row)
            yield row.audio if isinstance(row, Pending) else ("skip", "")

    for result in check_many(sources(), workspace, settings, workers):
        row = passed.popleft()
        if isinstance(row, Quarantine):
            yield row
        elif isinstance(result, tuple):
            yield Quarantine(source=row.fields["source"], locator=row.locator, reason=result[0], message=result[1])
        else:  # the locator goes along, so a later step's rejection can point at the row
            meta = {**row.fields.get("meta", {}), "locator": row.locator}
            yield row.kind(**{**row.fields, "audio": result, "meta": meta})
