"""The viewer's JSON API: query parameters in, JSON-ready dicts out.

No HTTP here, so every payload is testable without a server. All SQL lives in corpus/browsing.py;
user input reaches it only as query parameters. Item text is returned as plain JSON strings: the
page inserts it with textContent, so a question holding HTML or a script shows as text.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pandas as pd

from corpus import browsing, provenance
from corpus.records import ChainOfThought, Item
from corpus.store import Workspace
from sari_train.prompts import structured_sections

PER_PAGE_DEFAULT, PER_PAGE_MAX = 50, 500
TRUTH = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


class BadRequest(ValueError):
    """A query parameter the API cannot use; the message says which and what it accepts."""


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = [v for v in query.get(name, []) if v.strip() != ""]
    return values[-1].strip() if values else None


def _number(name: str, text: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a {kind.__name__}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={text} is outside [{low}, {high}]")
    return value


def parse_item_query(query: dict[str, list[str]]) -> tuple[dict[str, Any], str | None, int, int]:
    """(filters for browsing.item_page, difficulty model or None for the default, page, per page)."""
    known = set(browsing.ITEM_FILTERS) | {"model", "page", "per_page"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    filters: dict[str, Any] = {}
    for name in browsing.ITEM_FILTERS:
        text = _one(query, name)
        if text is None:
            continue
        if name == "bucket":
            filters[name] = _number(name, text, int, -2**31, 2**31 - 1)
        elif name in ("pass_min", "pass_max"):
            filters[name] = _number(name, text, float, 0.0, 1.0)
        elif name in ("has_cot", "contaminated"):
            if text.lower() not in TRUTH:
                raise BadRequest(f"{name}={text!r}: use yes or no")
            filters[name] = TRUTH[text.lower()]
        else:
            filters[name] = text
    page = _number("page", _one(query, "page") or "1", int, 1, 10**9)
    per_page = _number("per_page", _one(query, "per_page") or str(PER_PAGE_DEFAULT), int, 1, PER_PAGE_MAX)
    return filters, _one(query, "model"), page, per_page


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-ready dicts (NaN -> null, numpy scalars -> Python, timestamps -> ISO)."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def items(ws: Workspace, query: dict[str, list[str]]) -> dict[str, Any]:
    filters, model, page, per_page = parse_item_query(query)
    model = model or browsing.default_difficulty_model(ws)
    total, rows = browsing.item_page(ws, filters, model, per_page, (page - 1) * per_page)
    return {"total": total, "page": page, "per_page": per_page, "pages": max(1, -(-total // per_page)),
            "model": model, "filters": filters, "items": records(rows)}


def facets(ws: Workspace) -> dict[str, Any]:
    model = browsing.default_difficulty_model(ws)
    found = {name: records(frame) for name, frame in browsing.facet_counts(ws, model).items()}
    return {**found, "default_model": model, "has_contamination": browsing.has_contamination(ws),
            "filters": list(browsing.ITEM_FILTERS)}


def audio_url(item: Item) -> str | None:
    """The URL of an item's clip under /audio/, or None when it has none or it is not under audio/."""
    if item.audio is None or not item.audio.path.startswith("audio/"):
        return None
    return "/audio/" + quote(item.audio.path.removeprefix("audio/"))


def cot_view(cot: ChainOfThought) -> dict[str, Any]:
    """A chain of thought with its structured sections parsed (None when they are not all there)."""
    found = re.search(r"<think>(.*?)</think>", cot.text, flags=re.DOTALL)
    thinking = found.group(1) if found else cot.text
    sections = structured_sections(thinking) if cot.style == "structured" else None
    return {**cot.model_dump(mode="json"), "sections": sections}


def item_detail(ws: Workspace, item_id: str, runs_limit: int = 20) -> dict[str, Any] | None:
    found = list(ws.records(Item, "id = ?", [item_id]))
    if not found:
        return None
    item = found[0]
    return {
        "item": item.model_dump(mode="json"),
        "audio_url": audio_url(item),
        "cots": [cot_view(c) for c in sorted(ws.records(ChainOfThought, "item_id = ?", [item_id]),
                                             key=lambda c: c.style != "structured")],
        "rollouts": records(ws.frame("rollouts", "item_id = ?", [item_id])),
        "difficulty": records(ws.frame("difficulty", "item_id = ?", [item_id])),
        "contamination": records(browsing.contamination_rows(ws, item_id)),
        "runs": runs(ws, runs_limit),
    }


def quarantine(ws: Workspace, per_reason: int = 5) -> dict[str, Any]:
    groups, examples = browsing.quarantine_examples(ws, per_reason)
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for row in records(examples):
        by_reason.setdefault(row.pop("reason"), []).append(row)
    reasons = [{**group, "examples": by_reason.get(group["reason"], [])} for group in records(groups)]
    return {"total": sum(r["n"] for r in reasons), "reasons": reasons}


def stats(ws: Workspace) -> dict[str, Any]:
    """`sari-data stats`'s tables: for each, its columns (splits, total) and one row per value."""
    from sari_data.stats import summary_tables

    tables = {}
    for name, table in summary_tables(ws).items():
        tables[name] = {"columns": [str(c) for c in table.columns],
                        "rows": [[str(label), *map(int, values)] for label, values in zip(table.index, table.values)]}
    return {"tables": tables}


def runs(ws: Workspace, limit: int = 50) -> list[dict[str, Any]]:
    """The newest runs (provenance of every command), with anything key-like redacted."""
    rows = records(ws.frame("runs", order_by="started_at DESC, run_id").head(limit))
    for row in rows:
        # NaN in records written before run records became strict JSON reads as null
        row["provenance"] = redact(json.loads(row["provenance"], parse_constant=lambda _: None)
                                   if row["provenance"] else {})
    return rows


def redact(value: Any) -> Any:
    """A copy with secret-named fields, URL credentials, key-shaped strings and secret flags' values replaced
    (run records are redacted when written; this also covers records written before that)."""
    return provenance.redact(value, by_name=True)
