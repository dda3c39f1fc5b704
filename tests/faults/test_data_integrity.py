"""Nothing silently lost or replaced: repeated ids, empty sources, over-long text, killed runs, old
workspaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from faults_helpers import one_line_error, run_cli

from corpus.scoring import normalise
from corpus.store import Workspace, WorkspaceError
from corpus.testing import dummy_item, scene_clip
from sari_data.build import build
from sari_data.cli import main as sari_data
from sari_data.recipe import Recipe
from sari_data.testing import avqa_row, write, write_jsonl


def avqa_fields(path: Path, **extra) -> dict:
    return {"name": "t", "sources": [{"kind": "avqa", "name": "avqa", "path": str(path)}], **extra}


def avqa_recipe(path: Path, **extra) -> Recipe:
    return Recipe.model_validate(avqa_fields(path, **extra))


def recipe_file(tmp_path: Path, path: Path, **extra) -> Path:
    file = tmp_path / "recipe.yaml"
    file.write_text(json.dumps(avqa_fields(path, **extra)))  # JSON is YAML
    return file


def clips(folder: Path, n: int) -> list[str]:
    for i in range(n):
        write(folder / f"c{i}.wav", scene_clip(i, 2.0))
    return [f"c{i}.wav" for i in range(n)]


def test_a_repeated_id_never_replaces_the_first_record(tmp_path):
    names = clips(tmp_path, 3)
    first = avqa_row(1, names[0])
    rows = [first, avqa_row(2, names[1]),
            avqa_row(1, names[2], question_text="A different question about another clip?"),  # line 3: id 1 again
            avqa_row(5, names[2]), avqa_row(5, names[2])]  # lines 4 and 5: the same line twice
    path = write_jsonl(tmp_path / "avqa.jsonl", rows)
    build(avqa_recipe(path), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        items = {item.source_id: item for item in ws.items()}
        quarantine = ws.frame("quarantine")
    assert set(items) == {"1", "2", "5"}
    assert normalise(items["1"].question) == normalise(first["question_text"].replace("video", "audio")) and items["1"].audio.path.endswith(".wav")
    assert items["1"].meta["locator"] == f"{path}:1" and items["5"].meta["locator"] == f"{path}:4"
    assert list(quarantine.reason) == ["duplicate_id", "duplicate_id"]
    by_line = dict(zip(quarantine.locator, quarantine.message))
    assert "a different record with the same id as" in by_line[f"{path}:3"] and f"{path}:1" in by_line[f"{path}:3"]
    assert "an exact repeat of" in by_line[f"{path}:5"] and f"{path}:4" in by_line[f"{path}:5"]


def test_a_source_that_yields_nothing_fails_in_plain_words(tmp_path, capsys):
    path = write_jsonl(tmp_path / "avqa.jsonl", [avqa_row(i, f"missing{i}.wav") for i in range(5)])
    recipe = recipe_file(tmp_path, path)
    code, out, err = run_cli(sari_data, ["build", "--recipe", recipe, "--workspace", tmp_path / "ws", "--quiet"], capsys)
    line = one_line_error(err, "sari-data build")
    assert code == 1 and "source avqa yielded no items (5 rows quarantined: 5 missing_audio)" in line
    assert "--allow-empty" in line and "Empty DataFrame" not in out
    with Workspace(tmp_path / "ws", read_only=True) as ws:  # what was read is kept, the run is failed
        assert ws.count("quarantine") == 5 and ws.frame("runs").status.tolist() == ["failed"]
    code, out, err = run_cli(sari_data, ["build", "--recipe", recipe, "--workspace", tmp_path / "ws", "--quiet",
                                         "--allow-empty"], capsys)
    assert code == 0 and "Empty DataFrame" not in out and "(none)" in out and "0 items written" in out


def test_a_mostly_quarantined_source_fails_unless_the_recipe_allows_it(tmp_path, capsys):
    names = clips(tmp_path, 2)
    rows = [avqa_row(i, names[i]) for i in range(2)] + [avqa_row(10 + i, "missing.wav") for i in range(3)]
    path = write_jsonl(tmp_path / "avqa.jsonl", rows)
    code, _, err = run_cli(sari_data, ["build", "--recipe", recipe_file(tmp_path, path), "--workspace", tmp_path / "a",
                                       "--quiet"], capsys)
    assert code == 1 and "3 of 5 rows quarantined" in one_line_error(err, "sari-data build")
    lenient = recipe_file(tmp_path, path, max_quarantined_fraction=0.8)
    code, out, _ = run_cli(sari_data, ["build", "--recipe", lenient, "--workspace", tmp_path / "b", "--quiet"], capsys)
    assert code == 0 and "2 items written, 3 quarantined" in out


def test_over_long_text_is_quarantined_at_build(tmp_path):
    names = clips(tmp_path, 3)
    rows = [avqa_row(0, names[0]), avqa_row(1, names[1], question_text="Why? " * 20_000),
            avqa_row(2, names[2], multi_choice=["a" * 600, "b", "c", "d"])]
    path = write_jsonl(tmp_path / "avqa.jsonl", rows)
    build(avqa_recipe(path), tmp_path / "ws", progress=False, allow_empty=True)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        quarantine = ws.frame("quarantine")
        assert ws.count("items") == 1
    assert list(quarantine.reason) == ["text_too_long", "text_too_long"]
    assert "question has 100000 characters (max 2000)" in quarantine.message[0]
    assert "choice has 600 characters (max 500)" in quarantine.message[1]


def test_eval_refuses_when_every_prompt_is_over_the_model_context(tmp_path, capsys):
    """The benchmark path skips the build (and its cap): the context check refuses the prompt before any
    forward pass; one over-long item among others is skipped (tests/faults/test_user_hits.py)."""
    from sari_train.cli import main as sari_train
    from sari_train.models.tiny import build_tiny_qwen2_audio

    model = build_tiny_qwen2_audio(tmp_path / "model", window_seconds=4, hidden_size=32, layers=1)
    write(tmp_path / "audio" / "a.wav", scene_clip(0, 2.0))
    record = {"id": "q1", "audio_id": "a.wav", "question": "Is it loud? " * 3000, "choices": ["yes", "no"],
              "answer": "yes", "task": "sound", "difficulty": "easy", "category": "c", "sub-category": "s"}
    (tmp_path / "bench.json").write_text(json.dumps([record]))
    code, _, err = run_cli(sari_train, ["eval", "--model", model, "--benchmark", tmp_path / "bench.json",
                                        "--audio-root", tmp_path / "audio", "--out", tmp_path / "eval"], capsys)
    line = one_line_error(err, "sari-train eval")
    assert code == 2 and "every prompt is over the model's context (1 items, e.g. item q1" in line


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from corpus.provenance import recorded_run
    from corpus.store import Workspace
    ws = Workspace(sys.argv[1])
    tmp = ws.audio_dir / "ab" / f".{'ab' * 32}.{os.getpid()}.tmp.wav"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with recorded_run(ws, "build"):
        tmp.write_bytes(b"RIFF half a clip")
        ws.con.execute("CHECKPOINT")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_run_is_marked_and_its_temp_clip_removed(tmp_path):
    with Workspace(tmp_path, create=True):
        pass
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=env)
    assert done.returncode == -9
    assert list(tmp_path.glob("audio/*/.*.tmp.wav"))  # the kill left half a clip behind
    with Workspace(tmp_path, read_only=True) as ws:  # a reader changes nothing
        assert ws.frame("runs").status.tolist() == ["running"]
    with Workspace(tmp_path) as ws:  # the next writer marks it and cleans up
        assert ws.frame("runs").status.tolist() == ["interrupted"]
    assert not list(tmp_path.glob("audio/*/.*.tmp.wav"))


def test_a_workspace_from_before_schema_versions_is_migrated(tmp_path):
    from corpus.store import SCHEMA_VERSION

    with Workspace(tmp_path, create=True) as ws:
        ws.upsert([dummy_item(0)])
    con = duckdb.connect(str(tmp_path / "corpus.duckdb"))
    con.execute("DROP TABLE workspace_info")
    con.execute("ALTER TABLE cots DROP COLUMN reason")  # a column that a newer toolkit added
    con.close()
    with pytest.raises(WorkspaceError, match=f"schema version 0 .*sari-data migrate {tmp_path}"):
        Workspace(tmp_path, read_only=True)
    with Workspace(tmp_path) as ws:  # any writer migrates, keeping the rows
        assert ws.count("items") == 1
        assert "reason" in ws.query("SELECT * FROM cots").columns
    with Workspace(tmp_path, read_only=True) as ws:
        assert ws.query("SELECT value FROM workspace_info").value.tolist() == [str(SCHEMA_VERSION)]


def test_a_workspace_from_a_newer_toolkit_is_refused(tmp_path, capsys):
    with Workspace(tmp_path, create=True):
        pass
    con = duckdb.connect(str(tmp_path / "corpus.duckdb"))
    con.execute("UPDATE workspace_info SET value = '99'")
    con.close()
    code, _, err = run_cli(sari_data, ["stats", tmp_path], capsys)
    line = one_line_error(err, "sari-data stats")
    assert code == 2 and "schema version 99, newer than this toolkit's" in line and "upgrade" in line
    code, _, err = run_cli(sari_data, ["migrate", tmp_path], capsys)
    assert code == 2 and "newer" in one_line_error(err, "sari-data migrate")
