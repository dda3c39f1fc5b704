"""What every LLM stage shares: choosing items, opening the client, running per-item work
concurrently and writing results as they finish, and the summary a command prints."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from corpus.records import Item
from corpus.store import Workspace
from sari_data.llm.cache import RequestCache
from sari_train.openai_client import LLMClient, LLMConfig

CACHE_FILE = "llm_cache.jsonl"  # in the workspace root; holds replies only, never credentials
R = TypeVar("R")


def open_client(root: Path, config: LLMConfig) -> LLMClient:
    return LLMClient(config, RequestCache(Path(root) / CACHE_FILE))


def select_items(ws: Workspace, split: str | None, n: int | None, seed: int) -> list[Item]:
    """Items of a split (all when None); with `n`, a seeded sample of n, stable as the corpus grows."""
    items = ws.items(split)
    if n is not None:
        items = sorted(items, key=lambda it: hashlib.sha256(f"{seed}\x00{it.id}".encode()).hexdigest())[:n]
    return sorted(items, key=lambda it: it.id)


async def run_all(jobs: Iterable[Awaitable[R]], write: Callable[[list[R]], Any], *, total: int, desc: str,
                  progress: bool = True, batch: int = 32) -> None:
    """Run jobs concurrently (the client's semaphore bounds the requests) and hand results to
    `write` in batches as they finish, so a kill loses at most one unwritten batch (the cache
    replays it for free on the next run). A run stopped early (an endpoint error, a deadline) still
    writes what finished."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    done: list[R] = []
    try:
        for next_done in tqdm(asyncio.as_completed(tasks), total=total, desc=desc, disable=not progress, unit="item"):
            try:
                done.append(await next_done)
            except Exception:
                write(done)
                raise
            if len(done) >= batch:
                write(done)
                done = []
        write(done)
    finally:
        for task in tasks:
            task.cancel()


def format_rows(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """A plain fixed-width table for command summaries."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def usage_table(report: dict[str, Any]) -> str:
    keys = ("requests_sent", "cache_hits", "retries", "reasks", "prompt_tokens", "completion_tokens", "cost_usd")
    return format_rows([(k, report[k]) for k in keys], ("llm usage", f"{report['model']}"))
