"""Benchmark files (MMAU, MMAR): JSON or JSONL records as the official repositories ship them.

One reader for both sides: corpus building uses it for eval workspaces and decontamination,
evaluation reads benchmark files directly with it. MMAR's `thinking`, `cue` and `rubric` fields
are answer explanations: they are dropped here so no prompt can ever see them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEAKY_FIELDS = ("thinking", "cue", "rubric")


class BenchmarkError(ValueError):
    """A benchmark file or record we cannot read; the message says where."""


@dataclass(frozen=True)
class BenchmarkItem:
    id: str
    audio: str  # the path as written in the file (relative to the benchmark's audio root)
    question: str
    choices: list[str]
    answer: str
    task: str  # MMAU `task` (sound/music/speech) or MMAR `modality`
    difficulty: str = ""
    category: str = ""
    sub_category: str = ""
    record: dict[str, Any] = field(default_factory=dict, compare=False)  # the original fields, minus leaks


def shown_choices(choices: list[str]) -> list[str]:
    """The options a model is shown: each once, in order, empty ones left out (some MMAU items repeat
    an option, four MMAR items have an empty one). The official word-set rule scores a prediction the
    same against either list: an empty or repeated option adds no word of its own."""
    return list(dict.fromkeys(c for c in choices if c.strip()))


def benchmark_kind(record: dict[str, Any]) -> str:
    """`mmar` for MMAR's records (they carry `modality`), else `mmau`: the two official scripts read
    different fields (see PREDICTION_FIELD) and group by different ones."""
    return "mmar" if "modality" in record else "mmau"


PREDICTION_FIELD = {"mmau": "model_output", "mmar": "answer_prediction"}  # what each evaluation.py reads


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """(locator, record) pairs from a JSON list or JSONL file; a bad line yields (locator, error text)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise BenchmarkError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
        for index, record in enumerate(records):
            yield f"{path}#{index}", record
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as err:
                yield f"{path}:{number}", f"not valid JSON ({err.msg})"


def benchmark_item(record: dict[str, Any]) -> BenchmarkItem:
    """An MMAU- or MMAR-style record as a BenchmarkItem; KeyError/TypeError name what is missing."""
    clean = {k: v for k, v in record.items() if k not in LEAKY_FIELDS}
    audio = clean.get("audio_id") or clean.get("audio_path")
    if not audio:
        raise BenchmarkError("record has neither `audio_id` (MMAU) nor `audio_path` (MMAR)")
    choices = clean["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise BenchmarkError(f"`choices` must be a list of strings, got {choices!r}")
    return BenchmarkItem(
        id=str(clean["id"]), audio=str(audio), question=str(clean["question"]), choices=choices,
        answer=str(clean["answer"]), task=str(clean.get("task") or clean.get("modality") or ""),
        difficulty=str(clean.get("difficulty") or ""), category=str(clean.get("category") or ""),
        sub_category=str(clean.get("sub-category") or clean.get("sub_category") or ""), record=clean,
    )


def read_benchmark(path: Path) -> tuple[list[BenchmarkItem], list[tuple[str, str]]]:
    """All readable items of a benchmark file, and (locator, reason) for every record that is not."""
    items, problems = [], []
    for locator, record in read_records(path):
        if isinstance(record, str):
            problems.append((locator, record))
            continue
        try:
            items.append(benchmark_item(record))
        except (KeyError, TypeError, BenchmarkError) as err:
            problems.append((locator, f"missing field {err}" if isinstance(err, KeyError) else str(err)))
    return items, problems
