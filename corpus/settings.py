"""Reading settings files (recipes, training configs) and `--set key.path=value` overrides, with
every mistake a one-line error of the caller's type: a missing file or a folder, bytes that are not
UTF-8, broken YAML (with line and column), a Python tag (YAML is read as plain data only), a file
that is not a mapping, an override whose path runs into a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Error = type[Exception]


def read_yaml_mapping(path: str | Path, error: Error, hint: str = "") -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path} not found{hint}")
    if path.is_dir():
        raise error(f"{path} is a folder; pass a YAML file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: byte {err.start} is not UTF-8 text; save the file as UTF-8") from None
    except OSError as err:
        raise error(f"cannot read {path} ({err.strerror})") from None
    data = parse_yaml(text, str(path), error)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of `key: value` lines at the top, got a {type(data).__name__}")
    return data


def parse_yaml(text: str, where: str, error: Error) -> Any:
    """Plain YAML data (yaml.safe_load), or a one-line error saying where it broke."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "parse error"
        if isinstance(err, yaml.constructor.ConstructorError):
            problem = f"{problem}; tags such as !!python/... are refused: settings are plain data"
        raise error(f"{where}{at}: not valid YAML ({problem})") from None


def apply_override(data: dict[str, Any], override: str, error: Error) -> None:
    """Apply one `a.b.0.c=yaml-value` override to nested mappings and lists (missing mappings are made)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise error(f"--set {override!r} must look like key.path=value")
    value = parse_yaml(raw, f"--set {override!r}", error)
    *parents, last = key.strip().split(".")
    node: Any = data
    walked: list[str] = []
    try:
        for part in parents:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}  # a section left empty (`llm:`) or not written yet
            node = node[int(part)] if isinstance(node, list) else node[part]
            walked.append(part)
            if not isinstance(node, (dict, list)):
                raise TypeError(f"`{'.'.join(walked)}` is a value ({node!r}), not a section")
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    except (IndexError, ValueError, TypeError, KeyError) as err:
        raise error(f"--set {override!r} does not fit: {err}") from None
