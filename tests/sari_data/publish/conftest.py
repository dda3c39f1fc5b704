"""A small corpus to publish (the fake Hub is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus.records import ChainOfThought, Difficulty, Quarantine
from corpus.store import Workspace
from corpus.testing import dummy_item


def small_corpus(root: Path) -> Path:
    """13 items over 2 splits, 2 sources with different licences, one item without audio, CoTs
    (one invalid), difficulty for 8 items (one never solved), one quarantined record."""
    with Workspace(root, create=True) as ws:
        items = [dummy_item(i, workspace=root, split="test" if i % 3 == 0 else "train",
                            task="music" if i % 2 else "sound", answer_index=i % 2,
                            answer=["high", "low"][i % 2]) for i in range(10)]
        items += [dummy_item(i, workspace=root, source="other", license="CC-BY-4.0", split="train",
                             caption="a steady tone", caption_source="llm:qwen2-audio") for i in (10, 11)]
        items.append(dummy_item(12, split="train"))  # no audio
        ws.upsert(items)
        ws.upsert([ChainOfThought(item_id=items[i].id, style="structured", text=f"<planning>plan {i}</planning>",
                                  generator="llm:qwen2.5-72b") for i in (1, 2, 4)])
        ws.upsert([ChainOfThought(item_id=items[2].id, style="free", text="it is low", generator="llm:qwen2.5-72b"),
                   ChainOfThought(item_id=items[5].id, style="free", text="bad", generator="llm:qwen2.5-72b",
                                  valid=False, reason="wrong_final_answer")])
        ws.upsert([Difficulty(item_id=items[i].id, model="tiny-qwen2-audio", k=4, n_correct=i % 5,
                              pass_rate=(i % 5) / 4, bucket=i % 3) for i in range(8)])
        ws.upsert([Quarantine(source="dummy", locator="x.jsonl:3", reason="missing_audio")])
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return small_corpus(tmp_path / "ws")
