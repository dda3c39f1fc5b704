"""MMAU / MMAR-style benchmark files (JSON list or JSONL) as eval items, keeping the benchmark's
own id and metadata: MMAU's `dataset`, `difficulty`, `category`, `sub-category`; MMAR's
`modality`, `category`, `sub-category`. Records are read by `corpus.benchmarks`, the reader
evaluation uses too, which drops MMAR's answer explanations (`thinking`, `cue`, `rubric`): they
never enter the question, options, caption or meta, so no prompt can see them.

Some MMAU items repeat an option (`['four', 'nine', 'fourteen', 'fourteen']`) and four MMAR items
have an empty one. Dropping those items would change the denominator of every published score, so
the item shows each option once and no empty one (`corpus.benchmarks.shown_choices`, the list
`sari-train eval --benchmark` shows too; the official word-set rule scores the same) and the
original list is kept in meta. The whole record as the benchmark wrote it (minus MMAR's
explanations) is kept in meta as `benchmark_record`: `sari-train eval` writes it back, plus the
prediction, so the official scripts read our prediction files unedited.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from corpus.benchmarks import BenchmarkError, BenchmarkItem, benchmark_item, shown_choices
from corpus.records import Item, Quarantine, make_item_id
from sari_data.recipe import BenchmarkSource
from sari_data.sources.common import AudioRoot, Pending, audio_source, convert_rows, pending

KEPT = ("dataset", "difficulty", "category", "sub-category", "modality", "language", "source", "split")
TASKS = ("sound", "music", "speech")


def task_of(value: str) -> str | None:
    """MMAU's `task`, or MMAR's `modality` (a mix such as 'sound-music' is 'mixed')."""
    value = value.lower()
    if value in TASKS:
        return value
    return "mixed" if any(t in value for t in TASKS) else None


def fields(bench: BenchmarkItem, source: BenchmarkSource) -> dict[str, Any]:
    meta: dict[str, Any] = {"benchmark": source.name, "benchmark_id": bench.id}
    meta.update({k: bench.record[k] for k in KEPT if k in bench.record})
    choices = shown_choices(bench.choices)
    if choices != bench.choices:
        meta["original_choices"] = bench.choices
    meta["benchmark_record"] = bench.record
    return dict(
        id=make_item_id(source.name, bench.id), source=source.name, source_id=bench.id,
        question=bench.question, choices=choices, answer=bench.answer,
        answer_index=choices.index(bench.answer) if bench.answer in choices else -1,
        task=task_of(bench.task) or bench.task, category=bench.category, sub_category=bench.sub_category,
        license=source.license, split=source.split, meta=meta,
    )


def rows(source: BenchmarkSource) -> Iterator[Pending | Quarantine]:
    """The source's rows as records waiting for audio (text already checked) or quarantine."""
    return convert_rows(source, record)


def record(source: BenchmarkSource, root: AudioRoot, locator: str, row: dict[str, Any]) -> Pending | Quarantine:
    try:
        bench = benchmark_item(row)
    except (KeyError, TypeError, BenchmarkError) as err:
        message = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        return Quarantine(source=source.name, locator=locator, reason="invalid_benchmark_record", message=message)
    return pending(Item, locator, fields(bench, source), audio_source(root, bench.audio))
