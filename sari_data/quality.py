"""Quality steps (items in; items, quarantine records out): text normalisation, option sanity,
and duplicate detection for items and audio. Every rejection is a quarantine record naming the
item, so nothing is dropped silently."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from corpus.records import Clip, Item, Quarantine
from sari_data.audio import clip_fingerprint
from sari_data.fingerprint import FingerprintIndex
from sari_data.sources.common import validate

Out = Iterator[Item | Quarantine]


ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def clean(text: str) -> str:
    """NFKC (full-width letters, ligatures, non-breaking spaces), terminal escape sequences and other
    control characters (NUL, BEL, ...) removed, whitespace collapsed."""
    text = ANSI_ESCAPE.sub("", unicodedata.normalize("NFKC", text))
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) != "Cc")
    return re.sub(r"\s+", " ", text).strip()


def option_key(text: str) -> str:
    """An option reduced to what a listener would consider the same answer."""
    words = re.findall(r"\w+", clean(text).casefold())
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def reject(item: Item | Clip, reason: str, message: str) -> Quarantine:
    return Quarantine(source=item.source, locator=str(item.meta.get("locator", item.id)), reason=reason,
                      message=message, item_id=item.id)


def normalise_text(items: Iterable[Item]) -> Out:
    for item in items:
        choices = [clean(c) for c in item.choices]
        fields = item.model_dump() | dict(question=clean(item.question), choices=choices, answer=clean(item.answer),
                                          caption=clean(item.caption) if item.caption else item.caption)
        checked = validate(Item, str(item.meta.get("locator", item.id)), fields)
        yield checked.model_copy(update={"item_id": item.id}) if isinstance(checked, Quarantine) else checked


def option_sanity(similarity: float):
    """Options that a listener could not tell apart make an item unanswerable (or trivially so)."""

    def step(items: Iterable[Item]) -> Out:
        for item in items:
            keys = [option_key(c) for c in item.choices]
            clash = next(((i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))
                          if keys[i] == keys[j] or difflib.SequenceMatcher(None, keys[i], keys[j]).ratio() >= similarity),
                         None)
            if clash is None:
                yield item
                continue
            a, b = (item.choices[k] for k in clash)
            reason = "answer_matches_distractor" if item.answer_index in clash else "near_duplicate_options"
            yield reject(item, reason, f"options {a!r} and {b!r} say the same thing")

    return step


def trigrams(item: Item) -> set[tuple[str, ...]]:
    words = option_key(item.question).split() + ["|"] + sorted(option_key(c) for c in item.choices)
    return {tuple(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def dedup(workspace: Path, near_text: float, audio_fingerprint: bool):
    """Tag each item with its audio group (same PCM, or same recording by fingerprint) and drop
    items that repeat an earlier one in the same group (same or near-same question and options).
    Different questions on one clip are kept: the group keeps them in one split downstream."""

    def step(items: Iterable[Item]) -> Out:
        group_of: dict[str, str] = {}  # sha -> group representative sha
        index = FingerprintIndex()
        seen: dict[tuple, str] = {}  # exact key -> item id
        by_group: dict[str, list[tuple[str, set]]] = {}  # group -> [(item id, trigrams)]
        for item in items:
            group, score = "", 1.0
            if item.audio is not None:
                group, score = _group(item, workspace, group_of, index if audio_fingerprint else None)
            key = (group, option_key(item.question), tuple(sorted(option_key(c) for c in item.choices)))
            if key in seen and seen[key] != item.id:
                yield reject(item, "duplicate_item", f"same audio, question and options as {seen[key]}")
                continue
            grams = trigrams(item)
            near = next((other for other, g in by_group.get(group, []) if group and other != item.id
                         and len(grams & g) / len(grams | g) >= near_text), None)
            if near:
                yield reject(item, "near_duplicate_item", f"same audio and near-same question and options as {near}")
                continue
            seen[key] = item.id
            if group:
                by_group.setdefault(group, []).append((item.id, grams))
            meta = item.meta | ({"audio_group": group, "audio_group_score": score} if group else {})
            yield item.model_copy(update={"meta": meta})

    return step


def _group(item: Item, workspace: Path, group_of: dict[str, str], index: FingerprintIndex | None) -> tuple[str, float]:
    sha = item.audio.sha256
    if sha in group_of:
        return group_of[sha], 1.0
    score = 1.0
    group = sha
    if index is not None:
        fp = clip_fingerprint(workspace, item.audio)
        found = index.query(fp, max_candidates=1)
        if found:
            group, score = found[0].key, found[0].score
        else:
            index.add(sha, fp)
    group_of[sha] = group
    return group, score
