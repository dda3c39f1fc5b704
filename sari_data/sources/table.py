"""Any table of multiple-choice items (JSONL, JSON, CSV, Parquet, a local `datasets` folder),
mapped onto our fields by a column mapping in the recipe:

    - kind: table
      name: my-set
      path: data/my_set.csv
      columns: {question: q, choices: options, answer: label, audio: wav}
      choices_separator: "|"     # CSV cells hold "a|b|c"

`answer` may be the option text or its 0-based index. Unmapped fields use their own name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from corpus.records import Item, Quarantine, make_item_id
from sari_data.recipe import TableSource
from sari_data.sources.common import AudioRoot, Pending, audio_source, convert_rows, pending

FIELDS = ("id", "audio", "question", "choices", "answer", "task", "category", "sub_category", "caption")


def parse_choices(value: Any, separator: str | None) -> Any:
    """A list as is; a text cell split on the separator, or read as a JSON list."""
    if not isinstance(value, str):
        return list(value) if isinstance(value, tuple) else value
    if separator:
        return [part.strip() for part in value.split(separator)]
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value  # the Item check reports it as invalid_choices


def answer_of(answer: Any, choices: Any) -> tuple[Any, int]:
    """(answer text, index) from either form; an index that misses gives a text not in the choices."""
    if not isinstance(choices, list):
        return answer, -1
    if isinstance(answer, bool):
        return repr(answer), -1
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit() and answer not in choices):
        index = int(answer)
        return (choices[index], index) if 0 <= index < len(choices) else (f"<index {index}>", -1)
    return answer, choices.index(answer) if answer in choices else -1


def fields(row: dict[str, Any], source: TableSource) -> dict[str, Any]:
    get = {name: row.get(source.columns.get(name, name)) for name in FIELDS}
    choices = parse_choices(get["choices"], source.choices_separator)
    answer, index = answer_of(get["answer"], choices)
    used = {source.columns.get(name, name) for name in FIELDS}
    return dict(
        id=make_item_id(source.name, str(get["id"])), source=source.name, source_id=str(get["id"]),
        question=get["question"], choices=choices, answer=answer, answer_index=index,
        task=source.task or get["task"], category=str(get["category"] or ""), sub_category=str(get["sub_category"] or ""),
        caption=get["caption"], caption_source="dataset" if get["caption"] else None,
        license=source.license, split=source.split,
        meta={k: v for k, v in row.items() if k not in used and isinstance(v, (str, int, float, bool))},
    )


def rows(source: TableSource) -> Iterator[Pending | Quarantine]:
    """The source's rows as records waiting for audio (text already checked) or quarantine."""
    return convert_rows(source, record)


def record(source: TableSource, root: AudioRoot, locator: str, row: dict[str, Any]) -> Pending | Quarantine:
    if row.get(source.columns.get("id", "id")) is None:
        return Quarantine(source=source.name, locator=locator, reason="missing_id",
                          message=f"no `{source.columns.get('id', 'id')}` column value")
    return pending(Item, locator, fields(row, source), audio_source(root, row.get(source.columns.get("audio", "audio"))))
