"""Provenance: every command records what it ran with (recipe, versions, seeds, models, counts)
next to its output, in the workspace's `runs` table and as runs/<run_id>.json."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from corpus.store import Workspace

TRACKED_PACKAGES = ("sari-toolkit", "torch", "transformers", "accelerate", "datasets", "duckdb", "numpy",
                    "librosa", "soundfile", "pydantic", "openai")


# Secrets must never reach a run record: credentials in URLs (user info, query values), key-shaped
# strings, and the values of secret-named flags in argv are replaced before anything is written.
SECRET_NAME = re.compile(r"api[_-]?key|token|secret|passw|authori[sz]ation|credential", re.I)
SECRET_VALUE = re.compile(r"\b(sk-[\w-]{3,}|hf_\w{8,}|gh[opsu]_\w{8,}|xox[abp]-[\w-]{6,})")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.I)
HARMLESS_QUERY = {"api-version", "version"}
REDACTED = "[redacted]"


class RunFailed(Exception):
    """A command ran but its outcome is unusable (a source yielded nothing, an endpoint failed most
    requests); what it finished is stored and the run is recorded as failed. The CLIs exit 1."""


def redact_url(url: str) -> str:
    """The URL with its user info and query values (but an API version) replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, v if k.lower() in HARMLESS_QUERY else REDACTED) for k, v in pairs], safe="[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    return SECRET_VALUE.sub(REDACTED, URL.sub(lambda m: redact_url(m.group()), text))


def redact(value: Any, by_name: bool = False) -> Any:
    """A copy with URL credentials, key-shaped strings and the values of secret flags in argv replaced;
    with `by_name`, also every field whose name sounds secret."""
    if isinstance(value, dict):
        return {k: REDACTED if by_name and SECRET_NAME.search(str(k)) else redact(v, by_name) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out = []
        for i, v in enumerate(value):
            after_flag = i > 0 and isinstance(value[i - 1], str) and value[i - 1].startswith("-") \
                and SECRET_NAME.search(value[i - 1]) and "=" not in value[i - 1]
            if isinstance(v, str) and v.startswith("-") and "=" in v and SECRET_NAME.search(v.split("=")[0]):
                v = v.split("=")[0] + "=" + REDACTED
            out.append(REDACTED if after_flag else redact(v, by_name))
        return out
    if isinstance(value, str):
        return redact_text(value)
    return value


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def plain_json(value: Any) -> Any:
    """`value` as strict JSON would have it: objects it cannot hold as strings, and NaN or
    infinite floats (a Spearman over constant pass rates) as null, which every JSON reader takes."""
    return json.loads(json.dumps(value, default=str), parse_constant=lambda _: None)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def recorded_run(ws: Workspace | None, command: str, folder: Path | None = None,
                 **provenance: Any) -> Iterator[dict[str, Any]]:
    """Record a command's run. Yields a dict the command fills (counts, models, outputs).

    With a workspace, the record goes to its `runs` table (at the start, status running, and
    again at the end, ok or failed) and to runs/<run_id>.json; commands whose output is a plain
    folder (eval, training runs) pass `folder` and get <folder>/runs/<run_id>.json."""
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{command.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    started = _now()
    record: dict[str, Any] = {
        "run_id": run_id, "command": command, "argv": sys.argv, "started_at": started, "pid": os.getpid(),
        "versions": versions(), "git_commit": git_commit(), **provenance,
    }
    results: dict[str, Any] = {}
    if ws is not None:
        ws.record_run(run_id, command, started, None, "running", redact(record))
    folder = (ws.runs_dir if ws is not None else Path(folder) / "runs")
    t0 = time.perf_counter()
    status = "failed"
    try:
        yield results
        status = "ok"
    except BaseException as err:  # the record of a failed run says why it failed
        record["error"] = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise
    finally:
        record.update(results=results, status=status, finished_at=_now(),
                      seconds=round(time.perf_counter() - t0, 3))
        record = redact(plain_json(record))
        if ws is not None:
            ws.record_run(run_id, command, started, record["finished_at"], status, record)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run_id}.json").write_text(json.dumps(record, indent=2))
