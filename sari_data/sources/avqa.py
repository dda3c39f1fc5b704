"""AVQA as R1-AQA trains on it: JSONL, one object per line with `id, video_name, video_id,
question_text, multi_choice (4 options), answer (0-based index), question_relation,
question_type, dataset_name, audio_path`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from corpus.records import Item, Quarantine, make_item_id
from sari_data.recipe import AvqaSource
from sari_data.sources.common import AudioRoot, Pending, audio_source, convert_rows, pending

META_FIELDS = ("video_name", "video_id", "question_relation", "question_type", "dataset_name")


def to_audio(question: str, mode: str = "words") -> str:
    """The model hears the soundtrack only, so 'video' becomes 'audio'. `r1aqa`: R1-AQA's exact
    rewrite, a plain `replace("video", "audio")` (lower case only, inside words too: "videos" ->
    "audios"); `words`: whole words in either case ("Video" -> "Audio", "videos" kept); `off`: as is."""
    if mode == "r1aqa":
        return question.replace("video", "audio")
    if mode == "words":
        return re.sub(r"\bvideo\b", "audio", re.sub(r"\bVideo\b", "Audio", question))
    return question


def fields(row: dict[str, Any], source: AvqaSource) -> dict[str, Any]:
    choices, answer = row.get("multi_choice"), row.get("answer")
    gold = choices[answer] if isinstance(choices, list) and isinstance(answer, int) and 0 <= answer < len(choices) else None
    question = row.get("question_text")
    if isinstance(question, str):
        question = to_audio(question, source.video_to_audio)
    return dict(
        id=make_item_id(source.name, str(row.get("id"))), source=source.name, source_id=str(row.get("id")),
        question=question, choices=choices, answer=gold if gold is not None else repr(answer),
        answer_index=answer if gold is not None else -1, task=source.task,
        category=str(row.get("question_type") or ""), sub_category=str(row.get("question_relation") or ""),
        license=source.license, split=source.split,
        meta={k: row[k] for k in META_FIELDS if k in row},
    )


def rows(source: AvqaSource) -> Iterator[Pending | Quarantine]:
    """The source's rows as records waiting for audio (text already checked) or quarantine."""
    return convert_rows(source, record)


def record(source: AvqaSource, root: AudioRoot, locator: str, row: dict[str, Any]) -> Pending | Quarantine:
    if row.get("id") is None:
        return Quarantine(source=source.name, locator=locator, reason="missing_id", message="the row has no `id`")
    return pending(Item, locator, fields(row, source), audio_source(root, row.get("audio_path")))
