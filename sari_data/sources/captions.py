"""Caption-only tables (AudioCaps, MusicCaps, MusicBench, or captions you generated): each row is a
clip and its caption; `sari-data questions` writes the multiple-choice items from them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from corpus.records import Clip, Quarantine, make_item_id
from sari_data.recipe import CaptionsSource
from sari_data.sources.common import AudioRoot, Pending, audio_source, convert_rows, pending


def rows(source: CaptionsSource) -> Iterator[Pending | Quarantine]:
    """The source's rows as records waiting for audio (text already checked) or quarantine."""
    return convert_rows(source, record)


def record(source: CaptionsSource, root: AudioRoot, locator: str, row: dict[str, Any]) -> Pending | Quarantine:
    audio = row.get(source.audio_column)
    source_id = row.get(source.id_column)
    if source_id is None:  # fall back to the audio path, which names the clip
        source_id = audio.get("path") if isinstance(audio, dict) else audio
    if source_id is None:
        return Quarantine(source=source.name, locator=locator, reason="missing_id",
                          message=f"neither `{source.id_column}` nor `{source.audio_column}` is set")
    caption = row.get(source.caption_column) if source.caption_column else None
    if source.caption_column and not (isinstance(caption, str) and caption.strip()):
        return Quarantine(source=source.name, locator=locator, reason="empty_caption",
                          message=f"`{source.caption_column}` is empty or not text: {caption!r}")
    used = {source.id_column, source.audio_column, source.caption_column}
    fields = dict(
        id=make_item_id(source.name, str(source_id)), source=source.name, source_id=str(source_id),
        task=source.task, caption=caption, caption_source=source.caption_source, license=source.license,
        split=source.split, meta={k: v for k, v in row.items() if k not in used and _jsonable(v)},
    )
    return pending(Clip, locator, fields, audio_source(root, audio))



def _jsonable(value: object) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
