"""Recipes: a corpus build is data (YAML), validated here; unknown keys and wrong types are errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corpus.records import Task
from corpus.settings import apply_override, read_yaml_mapping
from sari_train.openai_client import LLMConfig
from sari_data.difficulty import DifficultyConfig


class RecipeError(Exception):
    """A recipe the user must fix; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticSource(Strict):
    """The embedded synthetic acoustic-reasoning source: answers known by construction."""

    kind: Literal["synthetic"] = "synthetic"
    name: str = "synthetic"
    n_items: int = Field(3000, ge=1, description="how many items to generate")
    clip_seconds: float = Field(3.6, gt=0, description="every clip has this fixed length (no duration cue)")
    sample_rate: int = 16000
    families: list[str] | dict[str, int] | None = Field(
        None, description="question families, all when empty; a mapping weights them: "
                          "{pitch_high_low: 3, chirp_direction: 1} makes three tones per sweep")
    license: str = "CC0-1.0"

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str] | dict[str, int] | None) -> list[str] | dict[str, int] | None:
        from sari_data.sources.synthetic import FAMILIES

        unknown = [name for name in families or [] if name not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
        if isinstance(families, dict) and not all(isinstance(w, int) and w >= 1 for w in families.values()):
            raise ValueError(f"family weights must be whole numbers >= 1, got {families}")
        return families


class PathPrefix(Strict):
    """Audio paths written on another machine: a path that starts with `from` starts with `to` instead."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", min_length=1, description="the prefix as the table writes it, e.g. /home/me/AVQA/audios")
    to: str = Field(description="where those files are here, e.g. data/avqa/audios (relative to where you run)")


class FileSource(Strict):
    """A source read from files a user brings; audio paths resolve under `audio_root` (relative,
    or absolute inside it) and a path escaping it is refused."""

    name: str
    path: Path = Field(description="the table: .jsonl, .json, .csv, .parquet, or a local `datasets` folder")
    audio_root: Path | None = Field(None, description="folder the audio paths are relative to (default: the table's folder)")
    audio_path_prefix: PathPrefix | None = Field(None, description=(
        "rewrite the start of audio paths written on another machine: {from: /their/audios, to: data/avqa/audios}; "
        "the result must still lie under audio_root"))
    license: str = "unknown"
    split: str = "train"

    def root(self) -> Path:
        return self.audio_root or (self.path if self.path.is_dir() else self.path.parent)


class AvqaSource(FileSource):
    """AVQA in R1-AQA's JSONL form: id, question_text, multi_choice, answer (index), audio_path, ..."""

    kind: Literal["avqa"] = "avqa"
    video_to_audio: Literal["r1aqa", "words", "off"] = Field("words", description=(
        "'video' -> 'audio' in questions. r1aqa: R1-AQA's plain replace('video', 'audio'); words: whole "
        "words, either case (true means this); off: unchanged (false)"))
    task: Task = "sound"

    @field_validator("video_to_audio", mode="before")
    @classmethod
    def _bool_means_words(cls, value: Any) -> Any:
        return {True: "words", False: "off"}.get(value, value) if isinstance(value, bool) else value


class BenchmarkSource(FileSource):
    """An MMAU/MMAR-style JSON or JSONL file (eval sets): its items keep the benchmark id and metadata."""

    kind: Literal["benchmark"] = "benchmark"
    split: str = "test"


class ClothoAqaSource(FileSource):
    """Clotho-AQA CSV (file_name, QuestionText, answer): open questions, kept as clips until distractors exist."""

    kind: Literal["clotho_aqa"] = "clotho_aqa"
    task: Task = "sound"


class CaptionsSource(FileSource):
    """A caption-only table (AudioCaps, MusicCaps, MusicBench, your own captions): clips that feed
    `sari-data questions`."""

    kind: Literal["captions"] = "captions"
    task: Task
    id_column: str = "id"
    audio_column: str = "audio"
    caption_column: str | None = Field("caption", description="null for audio-only clips that `sari-data captions` will caption")
    caption_source: str = "dataset"


class TableSource(FileSource):
    """Any table of multiple-choice items, with a column mapping (our field -> your column)."""

    kind: Literal["table"] = "table"
    columns: dict[str, str] = Field(default_factory=dict, description=(
        "id, audio, question, choices, answer (text or 0-based index), task, category, sub_category, caption; "
        "unmapped fields use their own name"))
    choices_separator: str | None = Field(None, description="split a text `choices` cell on this (CSV)")
    task: Task | None = Field(None, description="task for every row (else the `task` column)")


class AudioSettings(Strict):
    """Audio check bounds and parallelism, for every source with audio files."""

    min_seconds: float = Field(0.5, ge=0)
    max_seconds: float = Field(60.0, gt=0)
    silence_dbfs: float = -60.0
    max_clipped_fraction: float = Field(0.01, ge=0, le=1)
    workers: int | None = Field(None, ge=1, description=(
        "local processes for the per-clip work (decode, checks, normalisation, fingerprint); null: one per core"))
    cluster: str | None = Field(None, description=(
        "a Dask scheduler's address (tcp://host:8786): the per-clip work runs on its workers, which must see the "
        "audio and the workspace at the same paths; dedup, decontamination and splits stay in this process"))

    def pool(self) -> int | str:
        """Where the per-clip work runs: a Dask scheduler's address, else a number of local processes."""
        return self.cluster or self.workers or len(os.sched_getaffinity(0))


Source = Annotated[SyntheticSource | AvqaSource | BenchmarkSource | ClothoAqaSource | CaptionsSource | TableSource,
                   Field(discriminator="kind")]


class BalancePositions(Strict):
    """Move gold answers so each option position is gold equally often within (source, family, #options)."""

    kind: Literal["balance_positions"] = "balance_positions"


class Split(Strict):
    """Stratified splits by family: exact proportions in every block of 100 items of a family."""

    kind: Literal["split"] = "split"
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.85, "test": 0.15})

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> Split:
        total = sum(self.fractions.values())
        if abs(total - 1) > 1e-6 or any(f < 0 for f in self.fractions.values()):
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {self.fractions} (sum {total})")
        return self


class NormaliseText(Strict):
    """Unicode NFKC, collapsed whitespace, stripped question and options."""

    kind: Literal["normalise_text"] = "normalise_text"


class OptionSanity(Strict):
    """Quarantine items with near-duplicate options, or whose answer restates a distractor."""

    kind: Literal["option_sanity"] = "option_sanity"
    similarity: float = Field(0.9, gt=0, le=1, description="character similarity at which two options count as one")


class Dedup(Strict):
    """Group clips with the same audio (PCM hash, robust fingerprint) and drop duplicate items
    (same audio group, same or near-same question and options)."""

    kind: Literal["dedup"] = "dedup"
    near_text: float = Field(0.9, gt=0, le=1, description="word-trigram Jaccard at which two items are one")
    audio_fingerprint: bool = True


class BenchmarkRef(Strict):
    name: str
    path: Path
    audio_root: Path | None = None


class Decontaminate(Strict):
    """Find corpus items overlapping benchmark items (audio hash, fingerprint, question+options
    n-grams); record them in the `contamination` table and, with `exclude`, quarantine them."""

    kind: Literal["decontaminate"] = "decontaminate"
    benchmarks: list[BenchmarkRef] = Field(min_length=1)
    ngram: int = Field(8, ge=2, description="word n-gram length for the share of a question found in a benchmark question")
    text_threshold: float = Field(0.6, gt=0, le=1, description=(
        "question similarity (shared n-grams, or the word-sequence ratio if higher) x Jaccard of the option sets "
        "at which an item overlaps a benchmark item"))
    exclude: bool = True


class SplitCounts(Strict):
    """Exact split sizes over the whole corpus (SARI: 2k SFT / 30k RL), stratified, seeded; the
    rest goes to `rest`. Runs on the store after all sources."""

    kind: Literal["split_counts"] = "split_counts"
    counts: dict[str, int]
    rest: str = "unused"
    stratify: list[str] = Field(default_factory=lambda: ["task"], description="item columns to stratify on")


class CaptionsOptions(Strict):
    """`sari-data captions --recipe R` settings (its flags win)."""

    split: str | None = Field(None, description="caption the workspace items of this split only")


class QuestionsOptions(Strict):
    """`sari-data questions --recipe R` settings (its flags win)."""

    per_clip: int = Field(1, ge=1, description="questions per clip")
    split: str = Field("train", description="split of the new items")
    seed: int = Field(0, description="seed of the answer-position balancing")


class CotOptions(Strict):
    """`sari-data cot --recipe R` settings (its flags win)."""

    split: str | None = Field("train", description="items of this split (null: all)")
    n: int | None = Field(None, ge=1, description="a seeded sample of n items")
    seed: int = 0
    writer: Literal["auto", "llm", "template"] = "auto"


class BlindOptions(Strict):
    """`sari-data blind --recipe R` settings (its flags win)."""

    k: int = Field(4, ge=1)
    temperature: float = Field(1.0, ge=0)
    split: str | None = None
    n: int | None = Field(None, ge=1)
    seed: int = 0
    max_pass_rate: float | None = Field(None, ge=0, le=1)


STAGE_OPTIONS: dict[str, type[Strict]] = {"captions": CaptionsOptions, "questions": QuestionsOptions,
                                           "cot": CotOptions, "blind": BlindOptions}


class External(Strict):
    """A stage another command runs (it needs an LLM or a model); the build reports it as pending
    until that command has run on the workspace, and stops before the steps after it. `options`
    are that command's settings, read by it with `--recipe` (an unknown one is an error);
    `difficulty` takes none: its settings are the recipe's `difficulty:` section."""

    kind: Literal["captions", "questions", "cot", "blind", "difficulty"]
    options: dict[str, Any] = Field(default_factory=dict, description="that command's settings (its flags win)")

    @model_validator(mode="after")
    def _options_are_the_commands(self) -> External:
        if self.kind == "difficulty":
            if self.options:
                raise ValueError(f"options {sorted(self.options)}: `sari-data difficulty` reads the recipe's "
                                 f"`difficulty:` section (k, drop_unsolved, split, ...); move them there")
            return self
        self.settings()
        return self

    def settings(self) -> Strict:
        """The options as the command's typed settings; unknown keys and wrong types are errors."""
        kind = STAGE_OPTIONS[self.kind]
        try:
            return kind.model_validate(self.options)
        except ValidationError as err:
            raise ValueError(f"options of `{self.kind}` ({', '.join(kind.model_fields)}): "
                             f"{describe_validation_error(err)}") from None


Step = Annotated[BalancePositions | Split | NormaliseText | OptionSanity | Dedup | Decontaminate | SplitCounts | External,
                 Field(discriminator="kind")]
CORPUS_STEPS = (SplitCounts, External)  # run on the store after the sources; item steps stream


class Recipe(Strict):
    """A corpus recipe: where the items come from and which curation steps they pass through."""

    name: str
    description: str = ""
    seed: int = Field(0, description="every random choice of the build derives from this")
    workspace: Path | None = Field(None, description="default workspace folder (the --workspace flag wins)")
    sources: list[Source] = Field(min_length=1)
    steps: list[Step] = Field(default_factory=list)
    llm: LLMConfig | None = Field(None, description="endpoint of the LLM stages (the key only from the environment)")
    audio: AudioSettings = Field(default_factory=AudioSettings)
    max_quarantined_fraction: float = Field(0.5, ge=0, le=1, description=(
        "the build fails when a source yields no items or quarantines more than this share of its rows "
        "(what was read is kept; --allow-empty accepts it)"))
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig, description="`sari-data difficulty`")

    def stage_settings(self, kind: str) -> Strict:
        """The settings this recipe gives the `kind` command (its step's options, else defaults)."""
        steps = [s for s in self.steps if isinstance(s, External) and s.kind == kind]
        return steps[0].settings() if steps else STAGE_OPTIONS[kind]()

    @model_validator(mode="after")
    def _item_steps_first(self) -> Recipe:
        kinds = [isinstance(step, CORPUS_STEPS) for step in self.steps]
        if kinds != sorted(kinds):
            raise ValueError("steps: item steps (normalise_text, dedup, ...) must come before corpus steps "
                             "(split_counts, questions, difficulty, ...)")
        return self


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read and validate a recipe; `overrides` are `dotted.key=yaml-value` strings from the CLI."""
    data = read_yaml_mapping(path, RecipeError, hint="; recipes live in pipelines/, e.g. pipelines/demo.yaml")
    for override in overrides:
        apply_override(data, override, RecipeError)
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{path}: {describe_validation_error(err)}") from err


def describe_validation_error(err: ValidationError) -> str:
    """Pydantic's errors as one readable line: `field.path: message; ...`."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        message = "unknown key (check the spelling; see the recipe reference in the README)" \
            if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
