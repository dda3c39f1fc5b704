"""A persistent cache of finished LLM requests, so a re-run never re-sends one (datatrove-style).

The client stores only the replies of exchanges that ended in a usable answer, so a failure is asked
again on the next run instead of being replayed forever. One JSON line per reply, keyed by the
client's `request_key` (a sha256 of model, messages, parameters, schema).
A line is written and flushed to the kernel before the request counts as finished, so a killed
process loses at most the requests still in flight; a line cut short by the kill is skipped on
load (that request is simply sent again). Only responses are stored, never the request headers,
so no credential can reach this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RequestCache:
    """Append-only JSONL file; `get` reads the in-memory index, `put` appends and flushes."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        self._file = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self.entries[entry["key"]] = entry
            except (ValueError, KeyError):
                self.skipped_lines += 1  # a line cut short by a kill: that request is sent again
        if raw and not raw.endswith(b"\n"):
            with self.path.open("ab") as f:  # start the next entry on a fresh line
                f.write(b"\n")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        entry = {"key": key, **response}
        self.entries[key] = entry
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()  # in the kernel now: survives SIGKILL of this process

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
