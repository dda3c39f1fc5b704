"""The workspace store: one DuckDB file, one table per record kind, keyed by item id.

All writes go through here (the read-only queries of publishing and the viewer live in
corpus/publishing.py and corpus/browsing.py). Upserts are idempotent (a re-run replaces rows, never
duplicates them) and Parquet exports are atomic (temp file + rename), so any step can be re-run,
resumed after a kill, and joined with any other by item id.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
from pydantic import BaseModel

from corpus.records import AudioRef, ChainOfThought, Clip, Contamination, Difficulty, Item, Quarantine, Rollout

DB_NAME = "corpus.duckdb"
# Bump when TABLES changes; opening an older workspace for writing migrates it (missing columns are
# added), a newer one is refused. Version 0: workspaces written before versions were recorded.
SCHEMA_VERSION = 1

# table -> (record class, primary key, DDL columns). Nested `audio` is flattened to audio_* columns
# and free-form dicts are JSON text, so the tables read well in plain SQL.
TABLES: dict[str, tuple[type[BaseModel], tuple[str, ...], str]] = {
    "items": (
        Item,
        ("id",),
        """id VARCHAR, source VARCHAR, source_id VARCHAR,
           audio_sha256 VARCHAR, audio_path VARCHAR, audio_duration_s DOUBLE,
           audio_sample_rate INTEGER, audio_channels INTEGER,
           question VARCHAR, choices VARCHAR[], answer VARCHAR, answer_index INTEGER,
           task VARCHAR, category VARCHAR, sub_category VARCHAR, caption VARCHAR,
           caption_source VARCHAR, license VARCHAR, split VARCHAR, meta JSON""",
    ),
    "cots": (
        ChainOfThought,
        ("item_id", "style"),
        "item_id VARCHAR, style VARCHAR, text VARCHAR, generator VARCHAR, valid BOOLEAN, reason VARCHAR",
    ),
    "rollouts": (
        Rollout,
        ("item_id", "model", "settings", "sample_index"),
        """item_id VARCHAR, model VARCHAR, settings VARCHAR, sample_index INTEGER,
           completion VARCHAR, correct BOOLEAN""",
    ),
    "difficulty": (
        Difficulty,
        ("item_id", "model"),
        "item_id VARCHAR, model VARCHAR, k INTEGER, n_correct INTEGER, pass_rate DOUBLE, bucket INTEGER",
    ),
    "quarantine": (
        Quarantine,
        ("source", "locator", "reason"),
        "source VARCHAR, locator VARCHAR, reason VARCHAR, message VARCHAR, item_id VARCHAR",
    ),
    "clips": (
        Clip,
        ("id",),
        """id VARCHAR, source VARCHAR, source_id VARCHAR,
           audio_sha256 VARCHAR, audio_path VARCHAR, audio_duration_s DOUBLE,
           audio_sample_rate INTEGER, audio_channels INTEGER, task VARCHAR, caption VARCHAR,
           caption_source VARCHAR, question VARCHAR, answer VARCHAR, license VARCHAR, split VARCHAR, meta JSON""",
    ),
    "contamination": (
        Contamination,
        ("item_id", "benchmark", "benchmark_id", "method"),
        "item_id VARCHAR, benchmark VARCHAR, benchmark_id VARCHAR, method VARCHAR, score DOUBLE",
    ),
    "runs": (
        BaseModel,
        ("run_id",),
        """run_id VARCHAR, command VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
           status VARCHAR, provenance JSON""",
    ),
}
# Named groupings for summaries, so callers never write SQL.
DIMENSIONS = {
    "source": "source",
    "task": "task",
    "family": "coalesce(json_extract_string(meta, '$.family'), nullif(sub_category, ''), category)",
    "answer position": "chr(65 + answer_index)",
    "choices": "len(choices)",
    "reason": "reason",
}
TABLE_OF: dict[type[BaseModel], str] = {spec[0]: name for name, spec in TABLES.items() if spec[0] is not BaseModel}

R = TypeVar("R", bound=BaseModel)


class WorkspaceError(Exception):
    """A workspace problem the user can act on (the message says what to do)."""


LIVE_RUNS: set[str] = set()  # runs this process has started and not finished


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """The workspace's database, with a lock held by another process or a foreign file as one-line errors."""
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as err:
        if "not a valid DuckDB database" in str(err):
            raise WorkspaceError(f"{path} is not a DuckDB workspace database; point at a workspace folder, or move "
                                 f"the file away and build again") from None
        if "lock" in str(err).lower():
            raise WorkspaceError(f"workspace {path.parent} is in use by another process (a build, a stage, or "
                                 f"`sari-data view`); wait for it to finish or stop it, then run again") from None
        raise WorkspaceError(f"cannot open {path}: {str(err).splitlines()[0]}") from None
    except duckdb.Error as err:
        raise WorkspaceError(f"{path} is not a DuckDB workspace database ({str(err).splitlines()[0]}); "
                             f"point at a workspace folder, or move the file away and build again") from None


def declared_columns(ddl: str) -> list[tuple[str, str]]:
    """(name, type) of each column in a TABLES column list."""
    return [tuple(part.split(None, 1)) for part in (p.strip() for p in ddl.split(",")) if part]


TEMP_FILE = re.compile(r"^\..*\.(\d+)\.tmp\.(wav|npy)$|\.parquet\.tmp(\d+)$")


def remove_stale_temp_files(root: Path) -> int:
    """Delete half-written clips, fingerprints and exports whose writing process is gone (killed)."""
    removed = 0
    for pattern in ("audio/*/.*.tmp.wav", "fingerprints/*/.*.tmp.npy", "exports/*.parquet.tmp*"):
        for path in root.glob(pattern):
            found = TEMP_FILE.search(path.name)
            if found and not _alive(int(found.group(1) or found.group(3))):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workspace:
    """A corpus folder: `corpus.duckdb`, `audio/` (content-addressed clips), `exports/`, `runs/`."""

    def __init__(self, root: str | Path, *, create: bool = False, read_only: bool = False):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"workspace {self.root} is a file, not a folder; pass a folder path")
        if not (self.root / DB_NAME).exists():
            if not create:
                raise WorkspaceError(
                    f"no workspace at {self.root} (missing {DB_NAME}); build one first: "
                    f"sari-data build --recipe pipelines/demo.yaml --workspace {self.root}"
                )
            if read_only:
                raise WorkspaceError(f"cannot create a workspace read-only at {self.root}")
        if not read_only:
            try:
                for sub in ("audio", "exports", "runs"):
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise WorkspaceError(f"cannot create the workspace folder {self.root} ({err.strerror}: "
                                     f"{err.filename}); pass a folder path you can write to") from None
        self.con = connect(self.root / DB_NAME, read_only)
        try:
            self._check_schema(read_only)
            if not read_only:
                self._mark_interrupted_runs()
                remove_stale_temp_files(self.root)
        except BaseException:
            self.con.close()
            raise

    def _check_schema(self, read_only: bool) -> None:
        """Create the tables of a new workspace, migrate an older one, refuse a newer one."""
        version = self._schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise WorkspaceError(f"workspace {self.root} has schema version {version}, newer than this toolkit's "
                                 f"({SCHEMA_VERSION}); upgrade the toolkit to open it, or open a copy built by this version")
        missing = self._missing_columns()
        if version == SCHEMA_VERSION and not missing:
            return
        if read_only:
            if missing and version is not None:
                raise WorkspaceError(f"workspace {self.root} has schema version {version} (this toolkit: "
                                     f"{SCHEMA_VERSION}); migrate it once with: sari-data migrate {self.root}")
            return
        with self.transaction():
            for name, (_, key, columns) in TABLES.items():
                self._write(f"CREATE TABLE IF NOT EXISTS {name} ({columns}, PRIMARY KEY ({', '.join(key)}))")
            for table, column, kind in self._missing_columns():
                self._write(f'ALTER TABLE {table} ADD COLUMN "{column}" {kind}')
            self._write("CREATE TABLE IF NOT EXISTS workspace_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
            self._write("INSERT OR REPLACE INTO workspace_info VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

    def _schema_version(self) -> int | None:
        """The recorded version; 0 for a workspace from before versions; None for an empty database."""
        tables = {row[0] for row in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "workspace_info" in tables:
            found = self.con.execute("SELECT value FROM workspace_info WHERE key = 'schema_version'").fetchall()
            return int(found[0][0]) if found else 0
        return 0 if tables & set(TABLES) else None

    def _missing_columns(self) -> list[tuple[str, str, str]]:
        """(table, column, type) of the columns TABLES declares that existing tables lack."""
        have: dict[str, set[str]] = {}
        for table, column in self.con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall():
            have.setdefault(table, set()).add(column)
        return [(table, column, kind) for table, (_, _, columns) in TABLES.items() if table in have
                for column, kind in declared_columns(columns) if column not in have[table]]

    def _mark_interrupted_runs(self) -> None:
        """Runs still `running` belong to a process that died (DuckDB admits one writer at a time)."""
        self._write("UPDATE runs SET status = 'interrupted' WHERE status = 'running' "
                    "AND NOT list_contains(?::VARCHAR[], run_id)", [sorted(LIVE_RUNS)])

    @property
    def audio_dir(self) -> Path:
        return self.root / "audio"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------

    def upsert(self, records: Sequence[BaseModel]) -> int:
        """Insert or replace records of one kind by their primary key; returns how many."""
        if not records:
            return 0
        table = TABLE_OF[type(records[0])]
        frame = pd.DataFrame([to_row(r) for r in records])
        # Within one batch the last record with a key wins, as a re-run would.
        frame = frame.drop_duplicates(list(TABLES[table][1]), keep="last")
        self.con.register("_batch", frame)
        try:
            self._write(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM _batch")
        finally:
            self.con.unregister("_batch")
        return len(frame)

    def quarantine(self, records: Iterable[Quarantine]) -> int:
        return self.upsert(list(records))

    def remove_items(self, ids: Sequence[str]) -> int:
        """Delete items by id (callers quarantine them first, so nothing is lost)."""
        if ids:
            self._write("DELETE FROM items WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
        return len(ids)

    # --- reading -----------------------------------------------------------------------------

    def count(self, table: str, where: str = "", params: Sequence[Any] = ()) -> int:
        _check_table(table)
        return self.con.execute(f"SELECT count(*) FROM {table} {where_clause(where)}", list(params)).fetchall()[0][0]

    def frame(self, table: str, where: str = "", params: Sequence[Any] = (), order_by: str = "") -> pd.DataFrame:
        """A table (optionally filtered) as a DataFrame, in primary-key order unless told otherwise."""
        _check_table(table)
        order = order_by or ", ".join(TABLES[table][1])
        return self.con.execute(f"SELECT * FROM {table} {where_clause(where)} ORDER BY {order}", list(params)).df()

    def records(self, cls: type[R], where: str = "", params: Sequence[Any] = ()) -> Iterator[R]:
        frame = self.frame(TABLE_OF[cls], where, params)
        for row in frame.to_dict("records"):
            yield from_row(cls, row)

    def items(self, split: str | None = None) -> list[Item]:
        if split is None:
            return list(self.records(Item))
        return list(self.records(Item, "split = ?", [split]))

    def item_ids(self, split: str | None = None) -> set[str]:
        where, params = ("WHERE split = ?", [split]) if split is not None else ("", [])
        return {row[0] for row in self.con.execute(f"SELECT id FROM items {where}", params).fetchall()}

    def items_by_id(self, ids: Sequence[str]) -> list[Item]:
        return list(self.records(Item, "id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)]))

    def counts_by(self, dimension: str, table: str = "items") -> pd.DataFrame:
        """Row counts of a table grouped by one of `DIMENSIONS` and split (items) or reason (quarantine)."""
        expr = DIMENSIONS[dimension]
        other = "split" if table == "items" else "source"
        _check_table(table)
        return self.con.execute(
            f"SELECT {expr} AS {dimension.replace(' ', '_')}, {other}, count(*) AS n FROM {table} "
            f"GROUP BY ALL ORDER BY ALL"
        ).df()

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """A read query for reports (counts, group-bys); writes go through `upsert`."""
        return self.con.execute(sql, list(params)).df()

    def set_splits(self, splits: pd.DataFrame) -> int:
        """Set `split` for the items in a frame of (id, split); returns how many were updated."""
        self.con.register("_splits", splits[["id", "split"]])
        try:
            self._write("UPDATE items SET split = _splits.split FROM _splits WHERE items.id = _splits.id")
        finally:
            self.con.unregister("_splits")
        return len(splits)

    def drop_items(self, ids: Sequence[str]) -> int:
        """Remove items (or clips) by id; their quarantine record, written by the caller, says why."""
        self.con.register("_drop", pd.DataFrame({"id": list(ids)}))
        try:
            self._write("DELETE FROM items WHERE id IN (SELECT id FROM _drop)")
            self._write("DELETE FROM clips WHERE id IN (SELECT id FROM _drop)")
        finally:
            self.con.unregister("_drop")
        return len(ids)

    def split_pool(self, splits: Sequence[str], strata: Sequence[str]) -> pd.DataFrame:
        """id, audio group and the strata columns of the items in `splits`, for split assignment."""
        allowed = {name: DIMENSIONS[name] for name in ("source", "task", "family", "choices")}
        allowed |= {name: name for name in ("category", "sub_category", "license")}
        unknown = [name for name in strata if name not in allowed]
        if unknown:
            raise WorkspaceError(f"cannot stratify on {unknown}; use some of {sorted(allowed)}")
        columns = "".join(f', {allowed[name]} AS "{name}"' for name in strata)
        group = "coalesce(json_extract_string(meta, '$.audio_group'), audio_sha256, id)"
        return self.con.execute(f'SELECT id, {group} AS "group"{columns} FROM items '
                                "WHERE list_contains(?, split) ORDER BY id", [list(splits)]).df()

    def has_run(self, command: str) -> bool:
        """Whether `command` has finished successfully on this workspace."""
        return self.count("runs", "command = ? AND status = 'ok'", [command]) > 0
    # --- difficulty: rollout tallies, shard merges, curriculum views --------------------------------

    def rollout_tally(self, model: str, settings: str, k: int) -> pd.DataFrame:
        """Per item: how many of sample indices 0..k-1 are stored for (model, settings), how many correct."""
        return self.query("SELECT item_id, count(*) AS n, count(*) FILTER (WHERE correct) AS n_correct "
                          "FROM rollouts WHERE model = ? AND settings = ? AND sample_index < ? "
                          "GROUP BY item_id ORDER BY item_id", [model, settings, k])

    def difficulty_view(self, model: str) -> pd.DataFrame:
        """A model's difficulty rows with the item's split, task, family and constructed knob (if any)."""
        return self.query(
            f"SELECT d.*, i.split, i.task, {DIMENSIONS['family']} AS family, "
            f"TRY_CAST(json_extract_string(i.meta, '$.difficulty') AS DOUBLE) AS knob "
            f"FROM difficulty d JOIN items i ON i.id = d.item_id WHERE d.model = ? ORDER BY d.item_id", [model])

    def merge_from(self, other_db: Path, tables: Sequence[str] = ("rollouts", "quarantine", "runs")) -> int:
        """Upsert the rows of another DuckDB file's tables (a shard's output) in one transaction."""
        for table in tables:
            _check_table(table)
        self._write("ATTACH ? AS shard (READ_ONLY)", [str(other_db)])
        try:
            with self.transaction():
                for table in tables:
                    self._write(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM shard.{table}")
            return sum(self.con.execute(f"SELECT count(*) FROM shard.{t}").fetchall()[0][0] for t in tables)
        finally:
            self._write("DETACH shard")

    def export_curriculum(self, name: str, model: str, salt: str, by_bucket: bool, split: str | None) -> Path:
        """Items with a bucket, in a seeded pseudo-random order (md5 of salt + id), easy to hard first
        when `by_bucket`; the silence probe's pass rate rides along when it was measured."""
        order = "d.bucket, " if by_bucket else ""
        sql = (f"SELECT row_number() OVER (ORDER BY {order}md5(? || i.id)) - 1 AS position, d.model, d.bucket, "
               f"d.pass_rate, d.n_correct, d.k, s.pass_rate AS silence_pass_rate, i.* "
               f"FROM items i JOIN difficulty d ON d.item_id = i.id AND d.model = ? "
               f"LEFT JOIN difficulty s ON s.item_id = i.id AND s.model = ? || ':silence' "
               f"WHERE d.bucket IS NOT NULL AND (? IS NULL OR i.split = ?) ORDER BY position")
        return self.export_parquet(sql, name, [salt, model, model, split, split])

    # --- exports and provenance ----------------------------------------------------------------

    def export_parquet(self, sql: str, name: str, params: Sequence[Any] = ()) -> Path:
        """Write a query's result to exports/<name>.parquet atomically (temp file + rename)."""
        target = self.exports_dir / f"{name}.parquet"
        tmp = target.with_suffix(f".parquet.tmp{os.getpid()}")
        self._write(f"COPY ({sql}) TO {sql_string(tmp)} (FORMAT parquet)", params)
        os.replace(tmp, target)
        return target

    def record_run(self, run_id: str, command: str, started_at: str, finished_at: str | None,
                   status: str, provenance: dict[str, Any]) -> None:
        if status == "running":
            LIVE_RUNS.add(run_id)
        else:
            LIVE_RUNS.discard(run_id)
        self._write(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, command, started_at, finished_at, status, json.dumps(provenance, default=str)],
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so a kill leaves either all of them or none."""
        self._write("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._write("ROLLBACK")
            raise
        self._write("COMMIT")

    def _write(self, sql: str, params: Sequence[Any] = ()) -> None:
        # DuckDB 2 keeps a statement's result open until it is consumed; consume it here.
        self.con.execute(sql, list(params)).fetchall()


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise WorkspaceError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")


def sql_string(text: str | Path) -> str:
    """A SQL string literal (for statements that take no parameters, e.g. COPY ... TO)."""
    return "'" + str(text).replace("'", "''") + "'"


def where_clause(where: str) -> str:
    return f"WHERE {where}" if where else ""


def to_row(record: BaseModel) -> dict[str, Any]:
    """A record as a flat table row: `audio` becomes audio_* columns, dicts become JSON text."""
    row = record.model_dump(mode="json")
    if isinstance(record, (Item, Clip)):
        audio = row.pop("audio") or {}
        for field in AudioRef.model_fields:
            row[f"audio_{field}"] = audio.get(field)
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()}


def from_row(cls: type[R], row: dict[str, Any]) -> R:
    """The inverse of `to_row`."""
    row = {k: (None if _is_missing(v) else v) for k, v in row.items()}
    if cls in (Item, Clip):
        audio = {field: row.pop(f"audio_{field}") for field in AudioRef.model_fields}
        row["audio"] = audio if audio["sha256"] else None
        row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
    if cls is Item:
        row["choices"] = list(row["choices"])
    return cls.model_validate(row)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are never "missing"
        return False
