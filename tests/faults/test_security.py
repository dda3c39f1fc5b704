"""No code runs from data: checkpoints load as plain data, secrets never reach a record, control
characters never reach a question, and the viewer does not stall under many connections."""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from corpus.provenance import recorded_run
from corpus.store import Workspace
from corpus.testing import dummy_item
from sari_data.quality import normalise_text
from sari_data.view.api import redact
from sari_train.openai_client import LLMConfig, Usage
from sari_train.config import ConfigError
from sari_train import checkpoints

ROOT = Path(__file__).parents[2]


class Payload:
    """What a crafted checkpoint holds: unpickling it runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("trainer_state.pt", "rng-0.pt"):
        torch.save({"step": 3, "sampler": Payload(marker)}, tmp_path / name)
        with pytest.raises(ConfigError, match="holds objects other than tensors and plain data"):
            checkpoints.load_plain(tmp_path / name)
    assert not marker.exists()


def test_rng_states_round_trip_through_weights_only_loading(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(checkpoints.rng_state(), tmp_path / "rng-0.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoints.set_rng_state(checkpoints.load_plain(tmp_path / "rng-0.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


UNPICKLERS = ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads", "cloudpickle.load",
              "cloudpickle.loads", "joblib.load")


def unsafe_loads(source: str) -> list[int]:
    """Lines that may unpickle arbitrary objects: `torch.load` without a literal `weights_only=True`
    (however torch or its `load` is imported and named), and pickle-family loaders."""
    tree = ast.parse(source)
    aliases = import_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = call_name(node.func, aliases)
            if name.endswith(UNPICKLERS) or (name == "torch.load" and not weights_only_true(node)):
                found.append(node.lineno)
    return found


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin: `import torch as th` gives th -> torch, `from torch import load`
    gives load -> torch.load."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return aliases


def call_name(func: ast.expr, aliases: dict[str, str]) -> str:
    """The dotted name a call is made through, its first part resolved through the imports."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""
    return ".".join([aliases.get(func.id, func.id), *reversed(parts)])


def weights_only_true(call: ast.Call) -> bool:
    return any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def test_the_unsafe_load_scan_finds_every_spelling():
    bad = ["torch.load(p)", "torch.load(p, weights_only=False)", "torch.load(p, map_location='cpu')",
           "import torch as th\nth.load(p)", "from torch import load\nload(p)", "from torch import load as L\nL(p)",
           "torch.load(p, **{'weights_only': True})", "pickle.load(f)", "pickle.loads(b)", "_pickle.loads(b)",
           "pickle.Unpickler(f).load()", "from pickle import loads\nloads(b)", "import joblib\njoblib.load(p)"]
    assert [unsafe_loads(code) for code in bad] == [[code.count("\n") + 1] for code in bad]
    assert unsafe_loads("torch.load(p, weights_only=True, map_location='cpu')") == []
    assert unsafe_loads("import json\njson.load(f)\nnp.load(p)") == []


def test_no_unsafe_loading_anywhere():
    found = [f"{path}:{line}" for folder in ("corpus", "sari_data", "sari_train", "bench", "scripts", "pipelines",
                                             "tests")
             for path in (ROOT / folder).rglob("*.py") for line in unsafe_loads(path.read_text())]
    assert found == []


SECRET_URL = "http://alice:hunter2@llm.example:8000/v1?api_key=sk-abc123&api-version=2024-06-01"


def test_url_credentials_are_redacted_before_anything_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["sari-data", "cot", "--base-url", SECRET_URL])
    config = LLMConfig(base_url=SECRET_URL, model="m")
    with Workspace(tmp_path, create=True) as ws:
        with recorded_run(ws, "cot", llm=config.model_dump()) as results:
            results["llm_usage"] = Usage().report(config)
        stored = ws.frame("runs").provenance[0]
    written = (next((tmp_path / "runs").glob("*.json"))).read_text()
    for text in (stored, written):
        assert "hunter2" not in text and "sk-abc123" not in text and "alice" not in text
        assert "llm.example:8000/v1" in text and "api-version=2024-06-01" in text
    assert json.loads(written)["llm"]["base_url"] == \
        "http://[redacted]@llm.example:8000/v1?api_key=[redacted]&api-version=2024-06-01"
    assert "hunter2" not in Usage().report(config)["base_url"]


def test_the_viewer_redacts_short_keys():
    record = {"notes": "used key sk-abc123 for this", "argv": ["--base-url", SECRET_URL]}
    assert "sk-abc123" not in json.dumps(redact(record)) and "hunter2" not in json.dumps(redact(record))


def test_normalise_text_strips_control_characters_and_terminal_escapes():
    item = dummy_item(0, question="Is the\x00 tone \x1b[31mhigh\x1b[0m or low?\x07\x1b]0;title\x07",
                      choices=["high\x08", "low"], answer="low", answer_index=1, caption="A tone.\x0c Quiet.")
    (clean,) = list(normalise_text([item]))
    text = clean.question + "".join(clean.choices) + clean.caption
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
    assert clean.question == "Is the tone high or low?" and clean.choices == ["high", "low"]
    assert clean.caption == "A tone. Quiet."


def test_the_viewer_listens_with_a_deep_backlog(tmp_path):
    """With the default backlog of 5, 200 concurrent connections waited 1.4 s at p90 (SYN retries)."""
    import socket

    from sari_data.view.server import ViewServer

    Workspace(tmp_path, create=True).close()
    server = ViewServer(tmp_path, "127.0.0.1", 0)
    try:
        assert server.request_queue_size >= 256
        clients = [socket.create_connection(server.server_address[:2], timeout=1.0) for _ in range(200)]
        for client in clients:  # nobody accepted yet: all 200 sit in the listen queue, none was refused
            client.close()
    finally:
        server.server_close()
