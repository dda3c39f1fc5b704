"""Clotho-AQA: a CSV of `file_name, QuestionText, answer` (+ `confidence`), one row per annotator
answer. Answers are open (yes/no or one word), so each (clip, question) becomes a `Clip` with its
majority answer, waiting for `sari-data questions` to write distractors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from corpus.records import Clip, Quarantine, make_item_id
from sari_data.recipe import ClothoAqaSource
from sari_data.sources.common import AudioRoot, Pending, audio_source, pending, read_rows


def rows(source: ClothoAqaSource) -> Iterator[Pending | Quarantine]:
    """The source's rows as records waiting for audio (text already checked) or quarantine."""
    root = AudioRoot.of(source)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (file, question) -> [(locator, answer)]
    for row in read_rows(source.path, source.name):
        if isinstance(row, Quarantine):
            yield row
            continue
        locator, data = row
        file_name, question, answer = (str(data.get(k) or "").strip() for k in ("file_name", "QuestionText", "answer"))
        if not file_name or not question or not answer:
            yield Quarantine(source=source.name, locator=locator, reason="missing_field",
                             message="file_name, QuestionText and answer must all be non-empty")
            continue
        groups.setdefault((file_name, question), []).append((locator, answer.lower()))
    for (file_name, question), answers in groups.items():
        votes = Counter(answer for _, answer in answers)
        majority, _ = max(votes.items(), key=lambda kv: (kv[1], kv[0] in ("yes", "no"), kv[0]))
        source_id = f"{file_name}#{question}"
        fields = dict(
            id=make_item_id(source.name, source_id), source=source.name, source_id=source_id, task=source.task,
            question=question, answer=majority, license=source.license, split=source.split,
            meta={"file_name": file_name, "answers": dict(votes), "yes_no": set(votes) <= {"yes", "no"},
                  "rows": [locator for locator, _ in answers]},
        )
        yield pending(Clip, answers[0][0], fields, audio_source(root, file_name))
