"""The records every part of the toolkit speaks: separate kinds joined by item id (lhotse-style).

An `Item` is a multiple-choice question about one audio clip; chains of thought, rollouts and
difficulty scores are their own records that point at it. Validation here is the contract: a
record that constructs is one every later step may trust.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Task = Literal["sound", "music", "speech", "mixed"]
CotStyle = Literal["structured", "free"]


def reason_code(err: ValidationError) -> tuple[str, str]:
    """(reason code, message) of a record's first validation error, for quarantine records.

    Our validators start their messages with a code (`answer_not_in_choices: ...`); pydantic's
    own errors (wrong type, missing field) become `invalid_<field>`.
    """
    first = err.errors()[0]
    found = re.match(r"Value error, ([a-z_]+): ", first["msg"])
    if found:
        return found.group(1), first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"]) or "item"
    return f"invalid_{first['loc'][0] if first['loc'] else 'item'}", f"{where}: {first['msg']}"


class Record(BaseModel):
    """Base for all records: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def make_item_id(source: str, source_id: str) -> str:
    """A stable id: the same source record always maps to the same item id."""
    digest = hashlib.sha1(f"{source}\x00{source_id}".encode()).hexdigest()[:16]
    return f"{source}-{digest}"


class AudioRef(Record):
    """Where a normalised clip lives in the workspace; `sha256` is the hash of its 16-bit PCM."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    path: str  # relative to the workspace root
    duration_s: float = Field(gt=0)
    sample_rate: int = Field(gt=0)
    channels: int = Field(default=1, ge=1)


# Longest texts an item may hold (characters): a 100,000-character question builds fine and then
# exhausts memory in training or eval, so longer ones are quarantined as `text_too_long` at build.
MAX_CHARS = {"question": 2000, "choice": 500, "caption": 5000}


class Item(Record):
    """One multiple-choice audio question. The gold answer is the option *text*."""

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    audio: AudioRef | None = None  # None only for text-only or not-yet-ingested items
    question: str
    choices: list[str]
    answer: str
    answer_index: int
    task: Task
    category: str = ""
    sub_category: str = ""
    caption: str | None = None
    caption_source: str | None = None  # e.g. "ground-truth", "dataset", "llm:<model>"
    license: str = "unknown"
    split: str = "train"
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("question")
    @classmethod
    def _question_not_empty(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("empty_question: the question is empty")
        return question

    @model_validator(mode="after")
    def _choices_hold_the_answer(self) -> Item:
        lengths = {"question": len(self.question), "choice": max(map(len, self.choices), default=0),
                   "caption": len(self.caption or "")}
        over = [f"{name} has {n} characters (max {MAX_CHARS[name]})" for name, n in lengths.items() if n > MAX_CHARS[name]]
        if over:
            raise ValueError(f"text_too_long: {'; '.join(over)}")
        if len(self.choices) < 2:
            raise ValueError(f"too_few_choices: needs at least 2 choices, got {len(self.choices)}")
        if any(not c.strip() for c in self.choices):
            raise ValueError(f"empty_choice: a choice is empty in {self.choices}")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"duplicate_choices: {self.choices}")
        if self.answer not in self.choices:
            raise ValueError(f"answer_not_in_choices: answer {self.answer!r} is not among the choices {self.choices}")
        in_range = 0 <= self.answer_index < len(self.choices)
        if not in_range or self.choices[self.answer_index] != self.answer:
            raise ValueError(f"answer_index_mismatch: answer_index {self.answer_index} does not point at the answer {self.answer!r}")
        return self

    def with_choices(self, choices: list[str]) -> Item:
        """The same item with its options reordered (the answer index follows the answer)."""
        return self.model_copy(update={"choices": choices, "answer_index": choices.index(self.answer)})


class ChainOfThought(Record):
    """A reasoning chain for an item; `valid` is False when it failed the checks (kept, not lost)."""

    item_id: str
    style: CotStyle
    text: str
    generator: str  # "template" or "llm:<model>"
    valid: bool = True
    reason: str = ""  # why it is invalid, when it is


class Rollout(Record):
    """One sampled answer of a model to an item, scored against the gold answer."""

    item_id: str
    model: str
    settings: str  # a short hash of the sampling settings, so different settings never mix
    sample_index: int = Field(ge=0)
    completion: str
    correct: bool


class Difficulty(Record):
    """A model's pass rate on an item: n_correct of k samples, and the curriculum bucket."""

    item_id: str
    model: str
    k: int = Field(ge=1)
    n_correct: int = Field(ge=0)
    pass_rate: float = Field(ge=0, le=1)
    bucket: int | None = None

    @model_validator(mode="after")
    def _counts_agree(self) -> Difficulty:
        if self.n_correct > self.k:
            raise ValueError(f"n_correct {self.n_correct} exceeds k {self.k}")
        if abs(self.pass_rate - self.n_correct / self.k) > 1e-9:
            raise ValueError(f"pass_rate {self.pass_rate} != n_correct/k = {self.n_correct}/{self.k}")
        return self


class Quarantine(Record):
    """A record that could not join the corpus, with where it came from and why."""

    source: str
    locator: str  # file:line, source id, or path: enough to find the record again
    reason: str  # a short reason code, e.g. "answer_not_in_choices", "missing_audio"
    message: str = ""
    item_id: str = ""  # set when a curation step rejects an item that had an id


class Clip(Record):
    """A checked clip with no multiple-choice item yet: a caption to write questions from
    (AudioCaps, MusicCaps, MusicBench), an open question with a free-form answer that needs
    distractors (Clotho-AQA), or neither yet (AudioSet, MELD: `sari-data captions` writes the
    caption). `sari-data questions` turns these into items."""

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    audio: AudioRef
    task: Task
    caption: str | None = None
    caption_source: str | None = None
    question: str | None = None  # open-ended question (Clotho-AQA)
    answer: str | None = None  # its free-form answer (the majority of the annotators')
    license: str = "unknown"
    split: str = "train"
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _open_question_has_answer(self) -> Clip:
        if (self.question is None) != (self.answer is None) or (self.answer is not None and not self.answer.strip()):
            raise ValueError("empty_answer: an open question needs a non-empty answer")
        return self


class Contamination(Record):
    """A corpus item that overlaps a benchmark item, by audio (hash, fingerprint) or text n-grams."""

    item_id: str
    benchmark: str  # e.g. "mmau-test-mini.v2025-03"
    benchmark_id: str
    method: Literal["audio_hash", "audio_fingerprint", "text_ngram"]
    score: float = Field(ge=0, le=1)  # 1 = identical
