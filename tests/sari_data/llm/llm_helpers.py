"""Helpers for the LLM stage tests: synthetic-like items, a workspace, a scripted chat server."""

from __future__ import annotations

import json
import re

from corpus.records import Item, make_item_id
from corpus.store import Workspace
from sari_train.openai_client import LLMConfig
from sari_data.llm.testing import FakeChatServer, last_user_text

FAMILY_CHOICES = {"pitch_high_low": ["high", "low"], "count_beeps": ["2", "3", "4", "5"]}


def synthetic_item(i: int, split: str = "train") -> Item:
    """An item shaped like the synthetic source's: ground-truth caption, family and params in meta."""
    if i % 2:
        choices, answer = ["2", "3", "4", "5"], str(2 + i % 4)
        caption = f"{answer} beeps at {700 + i} Hz. Background noise at 20 dB SNR."
        meta = {"family": "count_beeps", "difficulty": 0.5,
                "params": {"count": int(answer), "onsets_s": [0.2 + 0.5 * k for k in range(int(answer))]}}
        question = "How many beeps do you hear?"
    else:
        answer = "high" if i % 4 == 0 else "low"
        choices = ["high", "low"]
        caption = f"A tone at {(2000 if answer == 'high' else 150) + i} Hz from 0.50 s to 1.20 s. Background noise at 20 dB SNR."
        meta = {"family": "pitch_high_low", "difficulty": 0.5, "params": {"freq_hz": 2000.0 if answer == "high" else 150.0}}
        question = "Is this tone high (above 1 kHz) or low (below 300 Hz)?"
    return Item(id=make_item_id("synthetic", f"s{i}"), source="synthetic", source_id=f"s{i}", question=question,
                choices=choices, answer=answer, answer_index=choices.index(answer), task="sound",
                caption=caption, caption_source="ground-truth", split=split, meta=meta)


def make_workspace(root, items: list[Item]) -> None:
    with Workspace(root, create=True) as ws:
        ws.upsert(items)


def gold_of(body: dict) -> str:
    return re.search(r"Correct answer: (.*)", last_user_text(body)).group(1).strip()


def good_chain(body: dict, answer: str | None = None) -> str:
    """A valid reply to a CoT request (structured or free, read off the prompt)."""
    answer = answer or gold_of(body)
    if "four sections" in last_user_text(body):
        thinking = (f"<planning>Listen.</planning><caption>A sound.</caption><reasoning>It fits {answer}."
                    f"</reasoning><summary>The answer is {answer}.</summary>")
    else:
        thinking = f"I listen carefully. The answer is {answer}."
    return json.dumps({"thinking": thinking, "answer": answer})


def config_for(server: FakeChatServer, **overrides) -> LLMConfig:
    """Small limits, so failure paths run fast (the SDK's retries wait 0.5 s and up unless the server
    sends Retry-After)."""
    fields = dict(base_url=server.base_url, model="test-model", api_key_env="SARI_TEST_KEY", concurrency=4,
                  timeout_s=5.0, max_retries=3, max_reasks=2)
    fields.update(overrides)
    return LLMConfig(**fields)
