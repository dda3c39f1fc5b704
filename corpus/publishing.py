"""The publishing queries over a workspace: one view's item rows (joined with chains of thought
or difficulty) for the Hub export, and the fixed counts the data card reports."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from corpus.store import Workspace, WorkspaceError

PUBLISH_VIEWS = ("all", "sft", "rl", "eval")


def view_frame(ws: Workspace, view: str, *, splits: Sequence[str] = (), difficulty_model: str | None = None,
               min_correct: int = 0) -> pd.DataFrame:
    """Items of one publishing view in (split, id) order: `all`/`eval` are items as they are, `sft`
    adds valid CoT texts (items with at least one), `rl` adds one model's difficulty row."""
    select, joins, where, params = "i.*", "", ["true"], []
    if view == "sft":
        select += (", s.text AS cot_structured, f.text AS cot_free, "
                   "coalesce(s.generator, f.generator) AS cot_generator")
        joins = ("LEFT JOIN cots s ON s.item_id = i.id AND s.style = 'structured' AND s.valid "
                 "LEFT JOIN cots f ON f.item_id = i.id AND f.style = 'free' AND f.valid")
        where.append("(s.text IS NOT NULL OR f.text IS NOT NULL)")
    elif view == "rl":
        select += ", d.model AS difficulty_model, d.k, d.n_correct, d.pass_rate, d.bucket"
        joins = "JOIN difficulty d ON d.item_id = i.id AND d.model = ?"
        where.append("d.n_correct >= ?")
        params += [difficulty_model, min_correct]
    elif view not in PUBLISH_VIEWS:
        raise WorkspaceError(f"unknown view {view!r}; views: {', '.join(PUBLISH_VIEWS)}")
    if splits:
        where.append(f"i.split IN ({', '.join('?' for _ in splits)})")
        params += list(splits)
    sql = f"SELECT {select} FROM items i {joins} WHERE {' AND '.join(where)} ORDER BY i.split, i.id"
    return ws.con.execute(sql, params).df()


CARD_QUERIES = {
    "licenses": "SELECT source, license, count(*) AS n FROM items GROUP BY ALL ORDER BY ALL",
    "captions": """SELECT coalesce(caption_source, '(none)') AS caption_source, count(*) AS n FROM items
                   GROUP BY ALL ORDER BY ALL""",
    "cots": "SELECT style, generator, valid, count(*) AS n FROM cots GROUP BY ALL ORDER BY ALL",
    "difficulty": """SELECT model, k, count(*) AS items, count(*) FILTER (WHERE n_correct = 0) AS never_correct,
                     round(avg(pass_rate), 4) AS mean_pass_rate FROM difficulty GROUP BY ALL ORDER BY ALL""",
    "rollouts": "SELECT model, settings, count(*) AS rollouts FROM rollouts GROUP BY ALL ORDER BY ALL",
    "quarantine": "SELECT reason, count(*) AS n FROM quarantine GROUP BY ALL ORDER BY ALL",
    "totals": """SELECT count(*) AS items, coalesce(sum(audio_duration_s), 0) AS audio_seconds,
                 count(*) - count(audio_sha256) AS no_audio FROM items""",
    "positions": """SELECT len(choices) AS n_choices, chr(65 + answer_index) AS position, count(*) AS n
                    FROM items GROUP BY ALL ORDER BY ALL""",
}


def card_frame(ws: Workspace, name: str) -> pd.DataFrame:
    """One of the fixed `CARD_QUERIES` the data card reports."""
    return ws.con.execute(CARD_QUERIES[name]).df()


def bucket_counts(ws: Workspace, model: str) -> pd.DataFrame:
    return ws.con.execute(
        "SELECT coalesce(d.bucket::VARCHAR, '(none)') AS bucket, i.split, count(*) AS n FROM difficulty d "
        "JOIN items i ON i.id = d.item_id WHERE d.model = ? GROUP BY ALL ORDER BY ALL", [model]).df()


def contamination_summary(ws: Workspace) -> pd.DataFrame | None:
    """Matches per benchmark and method, or None when decontamination never ran in this workspace
    (no rows, and no successful build whose recipe had a `decontaminate` step)."""
    ran = ws.count("runs", "status = 'ok' AND provenance LIKE ?", ['%"kind": "decontaminate"%']) > 0
    if not ran and ws.count("contamination") == 0:
        return None
    return ws.con.execute(
        "SELECT benchmark, method, count(*) AS matches, count(DISTINCT c.item_id) AS items_flagged, "
        "count(DISTINCT i.id) AS flagged_items_in_corpus FROM contamination c "
        "LEFT JOIN items i ON i.id = c.item_id GROUP BY ALL ORDER BY ALL").df()
