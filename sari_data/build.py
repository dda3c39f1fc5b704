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

from corpus.provenance import RunFailed, recorded_run
from corpus.records import Clip, Contamination, Item, Quarantine
from corpus.store import Workspace
from sari_data import splits
from sari_data.audio import CheckSettings
from sari_data.decontam import decontaminate
from sari_data.quality import dedup, normalise_text, option_sanity
from sari_data.recipe import (AvqaSource, BalancePositions, BenchmarkSource, CaptionsSource, ClothoAqaSource, Decontaminate,
                              Dedup, External, NormaliseText, OptionSanity, Recipe, Split, SplitCounts, TableSource)
from sari_data.sources import avqa, benchmark, captions, clotho_aqa, table
from sari_data.sources.common import SourceError, attach_audio
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
        return attach_audio(FILE_SOURCES[type(source)].rows(source), ws.root, settings, a.pool())
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
            steps.append((decontaminate(config, ws.root, recipe.audio.pool()), (Item, Clip)))
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


def build(recipe: Recipe, workspace: Path, *, progress: bool = True, allow_empty: bool = False) -> dict[str, Any]:
    """Build (or refresh) a workspace from a recipe; returns counts of what was written. Raises
    RunFailed (after writing what was read) when a source yields nothing usable, unless `allow_empty`."""
    check_source_paths(recipe)  # before the workspace exists: a typo in `path:` leaves nothing behind
    with Workspace(workspace, create=True) as ws, \
            recorded_run(ws, "build", recipe=recipe.model_dump(mode="json"), seed=recipe.seed) as results:
        counts: Counter[str] = Counter()
        first_seen: dict[str, tuple[str, str]] = {}  # item/clip id -> (locator, content), over all sources
        problems = []
        for source in recipe.sources:
            records: Iterable[Record] = tqdm(source_records(source, recipe, ws), total=getattr(source, "n_items", None),
                                             disable=not progress, desc=f"build {source.name}", unit="record")
            records = unique_ids(records, first_seen)
            for step in item_steps(recipe, ws):
                records = apply(step, records)
            tally: Counter[str] = Counter()
            counts.update(_write_all(ws, tallied(records, tally)))
            problems += [] if allow_empty else source_problems(source.name, tally, recipe.max_quarantined_fraction)
        notes = run_corpus_steps(recipe, ws)
        results.update(counts=dict(counts), **notes, items_in_store=ws.count("items"),
                       clips_in_store=ws.count("clips"), quarantine_in_store=ws.count("quarantine"))
        if problems:
            raise RunFailed("; ".join(problems) + f". What was read is stored: `sari-data stats {ws.root}` lists the "
                            "quarantine reasons; fix the source (path:, audio_root:, columns:) or pass --allow-empty")
        shown = {k: v for k, v in counts.items() if v or k in ("items", "quarantined")}
        return shown | {k: v for k, v in notes.items() if v}


def check_source_paths(recipe: Recipe) -> None:
    """Raise SourceError, naming the source and its path, when a file source's table is missing."""
    for source in recipe.sources:
        if type(source) in FILE_SOURCES and not source.path.exists():
            raise SourceError(f"source {source.name}: {source.path} not found; check `path:` in the recipe")


def unique_ids(records: Iterable[Record], first_seen: dict[str, tuple[str, str]]) -> Iterator[Record]:
    """Quarantine (`duplicate_id`) every record whose id an earlier record already has, so a repeated
    id never replaces the first record; the message says where the first one was read."""
    for record in records:
        if isinstance(record, (Item, Clip)):
            locator = str(record.meta.get("locator", record.id))
            content = record.model_copy(update={"meta": {k: v for k, v in record.meta.items() if k != "locator"}})
            content = content.model_dump_json()
            if record.id in first_seen:
                where, before = first_seen[record.id]
                what = "an exact repeat of" if content == before else "a different record with the same id as"
                yield Quarantine(source=record.source, locator=locator, reason="duplicate_id",
                                 message=f"id {record.source_id!r} ({record.id}): {what} {where}; the first is kept")
                continue
            first_seen[record.id] = (locator, content)
        yield record


def tallied(records: Iterable[Record], tally: Counter[str]) -> Iterator[Record]:
    """Pass records through, counting items, clips and quarantine reasons."""
    for record in records:
        tally[record.reason if isinstance(record, Quarantine) else NAMES[type(record)]] += 1
        yield record


def source_problems(name: str, tally: Counter[str], max_quarantined: float) -> list[str]:
    """Why a source's outcome is unusable: nothing kept, or too much of it quarantined."""
    kept = tally["items"] + tally["clips"]
    reasons = {k: v for k, v in tally.items() if k not in NAMES.values()}
    quarantined = sum(reasons.values())
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
    if kept == 0:
        return [f"source {name} yielded no items ({quarantined} rows quarantined{': ' + why if why else ''})"]
    if quarantined > max_quarantined * (kept + quarantined):
        return [f"source {name}: {quarantined} of {kept + quarantined} rows quarantined ({why}), more than "
                f"max_quarantined_fraction {max_quarantined}"]
    return []


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
