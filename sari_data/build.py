"""`sari-data build`: run a recipe's sources through its steps into a workspace.

Re-running is idempotent (stable ids, content-addressed audio, upserts by id) and a killed run
re-runs to the same corpus: every batch is written in one transaction, and the steps are
deterministic given the seed and the order of the items.

Item steps stream over each source's records; corpus steps (`split_counts`, and the stages other
commands run: captions, questions, cot, blind, difficulty) run on the store afterwards, in recipe
order. The build stops before the first stage whose command has not run on the workspace yet and
says which command to run; building again afterwards applies the rest.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corpus.provenance import recorded_run
from corpus.records import Clip, Contamination, Item, Quarantine
from corpus.store import Workspace
from sari_data import splits
from sari_data.audio import CheckSettings
from sari_data.decontam import decontaminate
from sari_data.quality import dedup, normalise_text, option_sanity
from sari_data.recipe import (AvqaSource, BalancePositions, BenchmarkSource, CaptionsSource, ClothoAqaSource, Decontaminate,
                              Dedup, External, NormaliseText, OptionSanity, Recipe, Split, SplitCounts, TableSource)
from sari_data.sources import avqa, benchmark, captions, clotho_aqa, table
from sari_data.sources.common import attach_audio
from sari_data.steps import build_steps

BATCH = 256
FILE_SOURCES = {AvqaSource: avqa, BenchmarkSource: benchmark, ClothoAqaSource: clotho_aqa,
                CaptionsSource: captions, TableSource: table}
Record = Item | Clip | Quarantine | Contamination
Step = tuple[Callable[[Iterable[Any]], Iterator[Any]], tuple[type, ...]]  # (step, record kinds it takes)


def source_records(source: Any, recipe: Recipe, ws: Workspace) -> Iterator[Item | Clip | Quarantine]:
    """Items, clips and quarantine records from one source; the one place that knows every source kind."""
    if type(source) in FILE_SOURCES:
        a = recipe.audio
        settings = CheckSettings(a.min_seconds, a.max_seconds, a.silence_dbfs, a.max_clipped_fraction)
        # every file source yields rows waiting for audio; one shared step checks and stores it
        return attach_audio(FILE_SOURCES[type(source)].rows(source), ws.root, settings, a.workers)
    from sari_data.sources import synthetic

    return synthetic.prepare(source, recipe.seed, ws.audio_dir)


def item_steps(recipe: Recipe, ws: Workspace) -> list[Step]:
    """The recipe's streaming steps, each with the record kinds it takes (the rest pass by)."""
    steps: list[Step] = []
    for config in recipe.steps:
        if isinstance(config, (BalancePositions, Split)):
            steps.append((build_steps([config], recipe.seed)[0], (Item,)))
        elif isinstance(config, NormaliseText):
            steps.append((normalise_text, (Item,)))
        elif isinstance(config, OptionSanity):
            steps.append((option_sanity(config.similarity), (Item,)))
        elif isinstance(config, Dedup):
            steps.append((dedup(ws.root, config.near_text, config.audio_fingerprint), (Item,)))
        elif isinstance(config, Decontaminate):
            steps.append((decontaminate(config, ws.root, recipe.audio.workers), (Item, Clip)))
    return steps


def apply(step: Step, records: Iterable[Record]) -> Iterator[Record]:
    """Feed the records a step takes into it; pass the others by, in (nearly) the same order."""
    function, takes = step
    aside: deque[Record] = deque()

    def feed() -> Iterator[Record]:
        for record in records:
            if isinstance(record, takes):
                yield record
            else:
                aside.append(record)

    for out in function(feed()):
        while aside:
            yield aside.popleft()
        yield out
    yield from aside


def build(recipe: Recipe, workspace: Path, *, progress: bool = True) -> dict[str, Any]:
    """Build (or refresh) a workspace from a recipe; returns counts of what was written."""
    with Workspace(workspace, create=True) as ws, \
            recorded_run(ws, "build", recipe=recipe.model_dump(mode="json"), seed=recipe.seed) as results:
        counts: Counter[str] = Counter()
        for source in recipe.sources:
            records: Iterable[Record] = tqdm(source_records(source, recipe, ws), total=getattr(source, "n_items", None),
                                             disable=not progress, desc=f"build {source.name}", unit="record")
            for step in item_steps(recipe, ws):
                records = apply(step, records)
            counts.update(_write_all(ws, records))
        notes = run_corpus_steps(recipe, ws)
        results.update(counts=dict(counts), **notes, items_in_store=ws.count("items"),
                       clips_in_store=ws.count("clips"), quarantine_in_store=ws.count("quarantine"))
        shown = {k: v for k, v in counts.items() if v or k in ("items", "quarantined")}
        return shown | {k: v for k, v in notes.items() if v}


def _write_all(ws: Workspace, records: Iterable[Record]) -> Counter[str]:
    """Write records in batches, one transaction each; items a step rejected leave the store."""
    written: Counter[str] = Counter()
    batch: dict[type, list[Record]] = {kind: [] for kind in (Item, Clip, Quarantine, Contamination)}
    for record in records:
        batch[type(record)].append(record)
        if len(batch[type(record)]) >= BATCH:
            written.update(_write(ws, batch))
    written.update(_write(ws, batch))
    return written


NAMES = {Item: "items", Clip: "clips", Quarantine: "quarantined", Contamination: "contamination"}


def keep_captions(ws: Workspace, records: list[Record], table: str) -> list[Record]:
    """A rebuild re-reads the sources; captions `sari-data captions` wrote since are kept, not
    replaced by the source's empty caption (so a later `cot` still sees them)."""
    bare = [r.id for r in records if r.caption is None]
    if not bare:
        return records
    found = ws.query(f"SELECT id, caption, caption_source FROM {table} WHERE caption IS NOT NULL "
                     "AND id IN (SELECT unnest(?::VARCHAR[]))", [bare])
    kept = {row.id: {"caption": row.caption, "caption_source": row.caption_source} for row in found.itertuples()}
    return [r.model_copy(update=kept[r.id]) if r.id in kept else r for r in records]


def _write(ws: Workspace, batch: dict[type, list[Record]]) -> Counter[str]:
    rejected = [q.item_id for q in batch[Quarantine] if q.item_id]
    batch[Item] = keep_captions(ws, batch[Item], "items")
    batch[Clip] = keep_captions(ws, batch[Clip], "clips")
    with ws.transaction():
        if rejected:
            ws.drop_items(rejected)
        written = Counter({NAMES[kind]: ws.upsert(records) for kind, records in batch.items()})
    for records in batch.values():
        records.clear()
    return written


def run_corpus_steps(recipe: Recipe, ws: Workspace) -> dict[str, Any]:
    """Steps over the whole store, in order, up to the first stage another command must run."""
    notes: dict[str, Any] = {"splits": [], "pending": []}
    corpus_steps = [s for s in recipe.steps if isinstance(s, (SplitCounts, External))]
    for index, config in enumerate(corpus_steps):
        if isinstance(config, External):
            if not ws.has_run(config.kind):
                later = [s.kind for s in corpus_steps[index + 1:]]
                notes["pending"].append({"step": config.kind, "needs": f"sari-data {config.kind}", "then": later})
                break
        else:
            pool = ws.split_pool(["train", config.rest, *config.counts], config.stratify)
            assigned, note = splits.assign(pool, config.counts, config.rest, config.stratify, recipe.seed)
            with ws.transaction():
                ws.set_splits(assigned)
            notes["splits"].append(note | {"result": assigned["split"].value_counts().to_dict()})
    return notes


def summary_lines(counts: dict[str, Any], ws: Workspace) -> list[str]:
    """What the build did beyond the tables: contamination per benchmark, splits, pending stages."""
    from sari_data.decontam import report

    lines = []
    found = report(ws.frame("contamination"))
    if len(found):
        lines.append("== contamination (corpus items overlapping benchmark items) ==\n" + found.to_string(index=False))
    for note in counts.get("splits", []):
        lines.append(f"split_counts (seed {note['seed']}, strata {note['strata']}): {note['result']}"
                     + (" -- fewer items than asked; counts scaled down" if note["scaled_down"] else ""))
    for note in counts.get("pending", []):
        then = f"; then build again to run {', '.join(note['then'])}" if note["then"] else ""
        lines.append(f"pending: step `{note['step']}` needs `{note['needs']} --workspace {ws.root}`{then}")
    return lines
