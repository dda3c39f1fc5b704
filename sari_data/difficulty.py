"""`sari-data difficulty`: SARI's difficulty measure, resumable and sharded.

    sari-train tiny-model models/tiny --kind qwen2_audio            # or any local audio LM folder
    sari-data difficulty --recipe pipelines/demo.yaml --workspace workspaces/demo --model models/tiny
    sari-data difficulty ... --k 4 --set difficulty.silence_probe=true --set difficulty.buckets.count=4
    sari-data difficulty ... --endpoint http://127.0.0.1:8000/v1 --model Qwen/Qwen2-Audio-7B-Instruct   # vLLM/SGLang serving it
    sari-data difficulty ... --model Qwen/Qwen2.5-Omni-7B --device cuda --dtype bfloat16   # local, on a GPU
    torchrun --nproc-per-node 2 -m sari_data.cli difficulty ...    # one shard per rank, rank 0 merges
    sari-data difficulty ... --shard 0/2 &  sari-data difficulty ... --shard 1/2; wait
    sari-data difficulty ...                                         # merges the shards, then finishes

The base model answers each item k times (per-item seed from (seed, item id), so results do not
depend on batching or sharding); each answer is scored with the corpus scoring rule; pass rate =
correct / k. Rollouts are written per batch of items in one transaction, so a killed run resumes
where it stopped and an item whose k rollouts are stored is never sampled again. A shard writes
its own DuckDB file (DuckDB allows one writer) under <workspace>/shards/; merging is an upsert
query over those files. Then: SARI's filter (0/k items get no bucket), buckets, curriculum views
in exports/, and a report (tables and a histogram PNG). A local model runs on cuda:<LOCAL_RANK> in
bfloat16 when there is a GPU, else on the CPU in float32 (`--device`, `--dtype` override).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from tqdm import tqdm

from corpus.clips import read_audio
from corpus.provenance import recorded_run
from corpus.records import Difficulty, Item, Quarantine, Rollout
from corpus.scoring import exact_match, extract_answer, mmau_match, normalised_match
from corpus.store import DB_NAME, Workspace
from sari_data.curriculum import BucketConfig, assign_buckets, bucket_thresholds, export_views
from sari_train.openai_client import EndpointError, EndpointOptions
from sari_train.prompts import PromptStyle, messages

SAMPLE_RATE = 16000  # what the audio LMs' feature extractors expect
SILENCE = ":silence"  # model-name suffix of the silence probe's rollouts and difficulty rows

MATCHERS: dict[str, Callable[[str, Item], bool]] = {
    "exact": lambda completion, item: exact_match(completion, item.answer),
    "normalised": lambda completion, item: normalised_match(completion, item.answer),
    "mmau": lambda completion, item: mmau_match(extract_answer(completion), item.answer, item.choices),
}


class DifficultyError(Exception):
    """A difficulty run the user must fix or resume; the message says what and where."""


class DifficultyConfig(EndpointOptions):
    """The `difficulty:` section of a recipe (flags and --set override it)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="local model folder (or hub id); the served model name with endpoint")
    name: str | None = Field(None, description="model name stored with rollouts and difficulty (default: model)")
    split: str | None = Field("train", description="score the items of this split (null: all items)")
    k: int = Field(16, ge=1, description="answers sampled per item")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    seed: int = Field(0, description="sampling seed; each item samples from hash(seed, item id)")
    match: Literal["exact", "normalised", "mmau"] = Field("exact", description="how an answer is scored")
    prompt: PromptStyle = PromptStyle()
    drop_unsolved: bool = Field(True, description="SARI's rule: items at 0/k get no bucket (not in the curriculum)")
    buckets: BucketConfig = BucketConfig()
    silence_probe: bool = Field(False, description="also answer each item with its audio replaced by silence")
    curriculum_seed: int = Field(0, description="seed of the shuffle within buckets and of the random view")
    batch_items: int = Field(8, ge=1, description="items per stored batch (one transaction each)")
    device: str = Field("auto", description="auto: cuda:<LOCAL_RANK> when a GPU is there, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on a CPU")
    n_per_request: bool = Field(True, description="endpoint: one request with n=k (false: k requests)")
    vllm: bool = Field(False, description="sample with vLLM in this process (the [vllm] extra) instead of transformers")

    @property
    def model_name(self) -> str:
        return self.name or self.model or ""

    def sampling(self):  # -> SamplingSettings; imported here so loading a recipe never imports torch
        from sari_train.rollout import SamplingSettings

        return SamplingSettings(k=self.k, temperature=self.temperature, top_p=self.top_p,
                                max_new_tokens=self.max_new_tokens, seed=self.seed)

    def settings_key(self) -> str:
        """Names the stored rollouts: sampling settings (not k), prompt and scoring rule, so that
        changing any of them never mixes old answers with new ones."""
        payload = json.dumps({"sampling": self.sampling().key(), "prompt": self.prompt.model_dump(),
                              "match": self.match}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def variants(self) -> list[str]:
        return ["", SILENCE] if self.silence_probe else [""]


@dataclass
class Outcome:
    """What a run did: counts, and (for the finishing run) tables, exports and the report PNG."""

    counts: Counter = field(default_factory=Counter)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    exports: dict[str, Path] = field(default_factory=dict)
    report_png: Path | None = None
    shard: tuple[int, int] | None = None  # set when this process only wrote a shard
    launched: bool = False  # under torchrun/accelerate (rank 0 finishes for everyone)
    warnings: list[str] = field(default_factory=list)


# --- pure helpers ------------------------------------------------------------------------------

def item_seed(seed: int, item_id: str) -> int:
    """The item's own sampling seed: results depend on (seed, item), never on batch or shard."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "big")


def in_shard(item_id: str, index: int, count: int) -> bool:
    """Stable shard of an item (hash of its id), whatever the corpus order or size."""
    return int(hashlib.sha1(item_id.encode()).hexdigest()[:8], 16) % count == index


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise DifficultyError(f"--shard {text!r} must look like i/n with 0 <= i < n, e.g. --shard 0/2")
    return i, n


def launched_shard() -> tuple[int, int] | None:
    """(rank, world size) under torchrun / accelerate launch, None in a single process."""
    from sari_train.device import launched

    return launched()


def shard_dir(root: Path, index: int, count: int) -> Path:
    return Path(root) / "shards" / f"difficulty-{index}-of-{count}"


def chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


# --- sampling and scoring ------------------------------------------------------------------------

def waveform_or_quarantine(root: Path, item: Item) -> np.ndarray | Quarantine:
    """The item's clip at 16 kHz, or a quarantine record saying why it cannot be scored."""
    def bad(reason: str, message: str) -> Quarantine:
        return Quarantine(source="difficulty", locator=item.id, reason=reason, message=message)

    if item.audio is None:
        return bad("missing_audio", f"item {item.id} has no audio reference; it cannot be scored")
    path = root / item.audio.path
    if not path.exists():
        return bad("missing_audio", f"item {item.id}: audio file {path} is missing; rebuild the corpus to restore it")
    try:
        return read_audio(path, SAMPLE_RATE)
    except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        return bad("unreadable_audio", f"item {item.id}: cannot decode {path}: {err}")


def sample_groups(engine: Any, prompts: list, waveforms: list[np.ndarray], settings: Any,
                  seeds: list[int]) -> list[list[str]]:
    """k completions per prompt, each prompt sampled from its own seed. Engines that take per-prompt
    seeds (LocalEngine: each row draws from its own; EndpointEngine: each request carries one) get the
    whole batch at once; others, one call per prompt with the seed in the settings."""
    if "seeds" in inspect.signature(engine.sample).parameters:
        return engine.sample(prompts, waveforms, settings, seeds=seeds).texts
    return [engine.sample([p], [w], settings.model_copy(update={"seed": s})).texts[0]
            for p, w, s in zip(prompts, waveforms, seeds)]


def make_engine(config: DifficultyConfig) -> Any:
    """The rollout engine: an endpoint client, vLLM in this process, or the local model on this rank's device."""
    if not config.model:
        raise DifficultyError("no model to score with: pass --model PATH (a local audio LM folder, e.g. from "
                              "`sari-train tiny-model models/tiny`) or set difficulty.model in the recipe")
    if config.endpoint:
        from sari_train.rollout.endpoint import EndpointEngine

        return EndpointEngine.from_options(config, config.model, n_per_request=config.n_per_request,
                                           sample_rate=SAMPLE_RATE)
    if config.vllm:
        from sari_train.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.from_model(config.model)
    from sari_train.device import pick
    from sari_train.models.adapter import AudioLM
    from sari_train.rollout import LocalEngine

    try:
        device, dtype = pick(config.device, config.dtype)
    except ValueError as err:
        raise DifficultyError(str(err)) from err
    try:
        lm = AudioLM.load(config.model, dtype=dtype, device=device)
    except (OSError, ValueError) as err:
        raise DifficultyError(f"cannot load the model {config.model!r}: {str(err).splitlines()[0]}; pass a local "
                              f"model folder with --model") from err
    return LocalEngine(lm, batch_size=1)  # one prompt (k rows) per forward pass: no padding on CPU


def pending(source: Workspace, stores: Sequence[Workspace], config: DifficultyConfig,
            shard: tuple[int, int] | None) -> dict[str, list[str]]:
    """Item id -> the variants ("" and maybe ":silence") whose k rollouts are not stored yet."""
    scope = source.item_ids(config.split)
    if not scope:
        raise DifficultyError(f"workspace {source.root} has no items in split {config.split!r} "
                              f"({source.count('items')} items in all); build a corpus first or pick a split "
                              f"with --set difficulty.split=NAME")
    if shard is not None:
        scope = {i for i in scope if in_shard(i, *shard)}
    key, k = config.settings_key(), config.k
    todo: dict[str, list[str]] = {}
    for variant in config.variants():
        finished: set[str] = set()
        for store in stores:
            tally = store.rollout_tally(config.model_name + variant, key, k)
            finished |= set(tally.item_id[tally.n == k])
        for item_id in sorted(scope - finished):
            todo.setdefault(item_id, []).append(variant)
    return dict(sorted(todo.items()))


def score_pending(source: Workspace, out: Workspace, config: DifficultyConfig, todo: dict[str, list[str]],
                  engine_factory: Callable[[], Any], progress: bool = True) -> Counter:
    """Sample, score and store the pending items, one transaction per batch of items."""
    counts: Counter = Counter()
    if not todo:
        return counts
    engine, settings, key = None, config.sampling(), config.settings_key()
    match = MATCHERS[config.match]
    bar = tqdm(total=len(todo), disable=not progress, desc="difficulty", unit="item", mininterval=0)
    for batch in chunks(list(todo), config.batch_items):
        jobs, quarantined = [], []
        for item in source.items_by_id(batch):
            wave = waveform_or_quarantine(source.root, item)
            if isinstance(wave, Quarantine):
                quarantined.append(wave)
                continue
            jobs += [(item, v, wave if v == "" else np.zeros_like(wave)) for v in todo[item.id]]
        groups: list[list[str]] = []
        if jobs:
            engine = engine or engine_factory()
            groups = sample_groups(engine, [messages(i.question, i.choices, config.prompt) for i, _, _ in jobs],
                                   [w for _, _, w in jobs], settings, [item_seed(config.seed, i.id) for i, _, _ in jobs])
        rollouts = [Rollout(item_id=item.id, model=config.model_name + variant, settings=key, sample_index=j,
                            completion=text, correct=match(text, item))
                    for (item, variant, _), texts in zip(jobs, groups) for j, text in enumerate(texts)]
        with out.transaction():
            out.upsert(rollouts)
            out.upsert(quarantined)
        counts.update(items_scored=len({i.id for i, _, _ in jobs}), rollouts=len(rollouts),
                      quarantined=len(quarantined))
        bar.update(len(batch))
    bar.close()
    return counts


# --- runs: a shard, the merge, the finishing run ---------------------------------------------------

def run_shard(root: Path, config: DifficultyConfig, index: int, count: int, progress: bool = True,
              engine: Any = None) -> Counter:
    """Score one shard's items into <workspace>/shards/difficulty-<i>-of-<n>/ (the main store is only read)."""
    with Workspace(root, read_only=True) as source, Workspace(shard_dir(root, index, count), create=True) as out, \
            recorded_run(out, f"difficulty shard {index} of {count}", config=config.model_dump(mode="json"),
                         settings_key=config.settings_key()) as results:
        todo = pending(source, [source, out], config, (index, count))
        counts = _scoring(source, out, config, todo, progress, engine)
        results.update(counts=dict(counts), pending_at_start=len(todo))
        return counts


def merge_shards(ws: Workspace) -> int:
    """Upsert every shard's rows into the main store, keep their run records, remove the shard files."""
    rows = 0
    for folder in sorted((ws.root / "shards").glob("difficulty-*-of-*")):
        if (folder / DB_NAME).exists():
            try:
                rows += ws.merge_from(folder / DB_NAME)
            except duckdb.IOException as err:
                raise DifficultyError(f"cannot read shard {folder} ({str(err).splitlines()[0]}); if a shard is "
                                      f"still running, wait for it to finish, then re-run") from err
        for run in (folder / "runs").glob("*.json"):
            os.replace(run, ws.runs_dir / run.name)
        shutil.rmtree(folder)
    return rows


def finalize(ws: Workspace, config: DifficultyConfig) -> list[float]:
    """Difficulty rows from the stored rollouts of the items in scope: pass rate, SARI's filter,
    buckets; the silence probe's rows get model `<name>:silence` and no bucket. Returns the cut points."""
    scope, key, k = ws.item_ids(config.split), config.settings_key(), config.k
    records: list[Difficulty] = []
    thresholds: list[float] = []
    for variant in config.variants():
        tally = ws.rollout_tally(config.model_name + variant, key, k)
        tally = tally[(tally.n == k) & tally.item_id.isin(scope)]
        rates = (tally.n_correct / k).tolist()
        buckets: list[int | None] = [None] * len(tally)
        if variant == "":
            kept = [i for i, p in enumerate(rates) if p > 0 or not config.drop_unsolved]
            thresholds = bucket_thresholds([rates[i] for i in kept], config.buckets)
            for i, b in zip(kept, assign_buckets([rates[i] for i in kept], thresholds)):
                buckets[i] = b
        records += [Difficulty(item_id=item_id, model=config.model_name + variant, k=k, n_correct=int(n),
                               pass_rate=int(n) / k, bucket=b)
                    for item_id, n, b in zip(tally.item_id, tally.n_correct, buckets)]
    with ws.transaction():
        ws.upsert(records)
    return thresholds


def finish(root: Path, config: DifficultyConfig, progress: bool = True, engine: Any = None) -> Outcome:
    """Merge shards, score whatever is still pending, then buckets, curriculum views and the report."""
    from sari_data.difficulty_report import report_tables, write_histogram

    with Workspace(root) as ws, recorded_run(ws, "difficulty", config=config.model_dump(mode="json"),
                                             settings_key=config.settings_key()) as results:
        outcome = Outcome(counts=Counter(shard_rows_merged=merge_shards(ws)))
        todo = pending(ws, [ws], config, None)
        outcome.counts.update(_scoring(ws, ws, config, todo, progress, engine))
        thresholds = finalize(ws, config)
        outcome.exports = export_views(ws, config.model_name, config.curriculum_seed, config.split)
        frame = ws.difficulty_view(config.model_name)
        outcome.warnings = empty_curriculum_warning(frame, config)
        silence = ws.difficulty_view(config.model_name + SILENCE) if config.silence_probe else None
        outcome.tables = report_tables(frame, config.split, silence)
        outcome.report_png = write_histogram(frame, config.split, ws.exports_dir / "difficulty.png")
        results.update(counts=dict(outcome.counts), thresholds=thresholds, seed=config.seed,
                       curriculum_seed=config.curriculum_seed, exports={k: str(v) for k, v in outcome.exports.items()},
                       tables={name: t.to_dict(orient="records") for name, t in outcome.tables.items()},
                       warnings=outcome.warnings)
        return outcome


def empty_curriculum_warning(frame: pd.DataFrame, config: DifficultyConfig) -> list[str]:
    """A warning when scored items exist but none got a bucket (every one was 0/k): GRPO's
    curriculum would be empty, which is worth saying now rather than at `sari-train grpo`."""
    if config.split is not None:
        frame = frame[frame.split == config.split]
    if len(frame) == 0 or frame.bucket.notna().any() or not config.drop_unsolved:
        return []
    return [f"all {len(frame)} scored items of split {config.split!r} were answered correctly 0 of {config.k} "
            f"times by {config.model_name}, so the curriculum is empty (SARI drops 0/k items): check the "
            f"model and its prompt format, raise k, or set difficulty.drop_unsolved: false"]


def _scoring(source: Workspace, out: Workspace, config: DifficultyConfig, todo: dict[str, list[str]],
             progress: bool, engine: Any = None) -> Counter:
    """score_pending, with an engine failure (e.g. an unreachable endpoint) turned into a resumable error.
    The engine is built only when something is pending (a finished re-run never loads the model)."""
    try:
        return score_pending(source, out, config, todo, lambda: engine or make_engine(config), progress)
    except EndpointError as err:
        raise DifficultyError(f"{err} (every batch finished before this one is stored; re-run to resume)") from err


def run_difficulty(root: Path, config: DifficultyConfig, shard: tuple[int, int] | None = None,
                   progress: bool = True, engine: Any = None) -> Outcome:
    """The command: with --shard, write that shard only; under torchrun/accelerate every rank writes
    its shard and rank 0 then finishes; otherwise one process does everything. `engine` (anything
    with LocalEngine's `sample`) replaces the one built from the config."""
    launched = shard is None and launched_shard() is not None
    shard = shard or launched_shard()
    if shard is not None and shard[1] > 1:
        counts = run_shard(Path(root), config, *shard, progress=progress, engine=engine)
        if launched:
            _barrier()
        if not launched or shard[0] != 0:
            return Outcome(counts=counts, shard=shard, launched=launched)
    return finish(Path(root), config, progress, engine)


def _barrier() -> None:
    """Wait until every rank has written its shard (gloo works on CPU and GPU machines alike)."""
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    dist.barrier()
    dist.destroy_process_group()
