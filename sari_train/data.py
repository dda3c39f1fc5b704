"""Training examples from a corpus workspace: items joined with their chains of thought and
difficulty by item id. Audio is read lazily, one clip per use, so a large corpus is not held in memory.

An example carries its audio as a loader (`load()` → 16 kHz mono float32), so the trainers never
ask where it lives: a workspace clip here, a dataset row's bytes in `sari_train.datasets`.
`data_source` picks the source a config names (`workspace` or `dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from corpus.clips import load_clip
from corpus.records import AudioRef, ChainOfThought, Difficulty
from corpus.store import Workspace
from sari_train.config import ConfigError


class AudioSource(Protocol):
    def load(self) -> np.ndarray: ...


@dataclass(frozen=True)
class WorkspaceClip:
    root: Path
    ref: AudioRef

    def load(self) -> np.ndarray:
        return load_clip(self.root, self.ref)


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    choices: list[str]
    answer: str
    audio: AudioSource
    thinking: str | None = None  # the chain of thought an SFT target wraps in <think>

    def waveform(self) -> np.ndarray:
        return self.audio.load()


def load_examples(root: Path, split: str, cot_style: str | None = None,
                  limit: int | None = None) -> tuple[list[Example], dict[str, int]]:
    """Items of `split` with audio (and, with `cot_style`, a valid chain of that style).
    Returns the examples and how many items were left out, by reason."""
    with Workspace(root, read_only=True) as ws:
        items = ws.items(split)
        cots = ({c.item_id: c.text for c in ws.records(ChainOfThought, "valid AND style = ?", [cot_style])}
                if cot_style else {})
    left_out = {"no audio": sum(i.audio is None for i in items), "no valid chain of thought": 0}
    examples = []
    for item in items:
        if item.audio is None:
            continue
        if cot_style and item.id not in cots:
            left_out["no valid chain of thought"] += 1
            continue
        examples.append(Example(item.id, item.question, item.choices, item.answer, WorkspaceClip(root, item.audio),
                                cots.get(item.id)))
    if not examples:
        need = f" with a valid {cot_style!r} chain of thought (run `sari-data cot`)" if cot_style else " with audio"
        raise ConfigError(f"workspace {root}: no items in split {split!r}{need}")
    return examples[:limit], left_out


def load_difficulty(root: Path, model: str | None = None) -> dict[str, Difficulty]:
    """Difficulty rows by item id for one scoring model (the only one, if `model` is not given)."""
    with Workspace(root, read_only=True) as ws:
        rows = list(ws.records(Difficulty, "model = ?", [model]) if model else ws.records(Difficulty))
    models = sorted({r.model for r in rows})
    if len(models) > 1:
        raise ConfigError(f"workspace {root} has difficulty from several models ({', '.join(models)}); "
                          f"choose one with difficulty_model")
    return {r.item_id: r for r in rows}


@dataclass(frozen=True)
class WorkspaceSource:
    """A workspace seen as a data source: examples by split, difficulty by item id."""

    root: Path

    def examples(self, split: str, cot_style: str | None = None,
                 limit: int | None = None) -> tuple[list[Example], dict[str, int]]:
        return load_examples(self.root, split, cot_style, limit)

    def difficulty(self, split: str, model: str | None = None) -> dict[str, Difficulty]:
        return load_difficulty(self.root, model)  # every split's rows; callers keep the ids they train on


def data_source(config: Any, dataset: str | None = None) -> Any:
    """The workspace or dataset a config names (`dataset` overrides the config's, e.g. eval_dataset);
    both answer `examples(split, cot_style, limit)` and `difficulty(split, model)`."""
    dataset = dataset or getattr(config, "dataset", None)
    if dataset:
        from sari_train.datasets import DatasetSource

        return DatasetSource(dataset, dict(config.columns), config.streaming)
    if config.workspace is None:
        raise ConfigError("no data: give --workspace DIR or --dataset ID_OR_DIR[:config]")
    return WorkspaceSource(Path(config.workspace))
