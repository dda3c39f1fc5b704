import os
import signal
import subprocess
import sys
import time

import pytest

import sari_data.build as build_module
from corpus.records import Quarantine
from corpus.store import Workspace
from corpus.testing import dummy_item
from sari_data.build import build
from sari_data.cli import main
from sari_data.recipe import load_recipe
from sari_data.sources import item_or_quarantine

N = 60


def recipe(n=N):
    return load_recipe("pipelines/demo.yaml", [f"sources.0.n_items={n}"])


def snapshot(root):
    with Workspace(root, read_only=True) as ws:
        items = ws.frame("items").drop(columns=[]).to_dict("records")
        return [(r["id"], tuple(r["choices"]), r["answer_index"], r["split"], r["audio_sha256"]) for r in items]


def test_build_writes_valid_items_with_stored_clips(tmp_path):
    counts = build(recipe(), tmp_path, progress=False)
    assert counts == {"items": N, "quarantined": 0}
    with Workspace(tmp_path, read_only=True) as ws:
        items = ws.items()
        assert len(items) == N and {i.split for i in items} <= {"pretrain", "train", "test"}
        assert all((tmp_path / i.audio.path).exists() and i.audio.duration_s == 3.6 for i in items)
        assert all(i.caption and i.meta["family"] == i.category for i in items)
        run = ws.frame("runs")
        assert list(run.status) == ["ok"] and '"n_items": 60' in run.provenance[0]


def test_rebuilding_changes_nothing(tmp_path):
    build(recipe(), tmp_path, progress=False)
    first = snapshot(tmp_path)
    build(recipe(), tmp_path, progress=False)
    assert snapshot(tmp_path) == first
    assert len(list((tmp_path / "audio").rglob("*.wav"))) == len({row[4] for row in first})


def test_a_build_that_dies_half_way_reruns_to_the_same_corpus(tmp_path, monkeypatch):
    build(recipe(), tmp_path / "whole", progress=False)
    monkeypatch.setattr(build_module, "BATCH", 16)
    real_write = build_module._write
    calls = {"n": 0}

    def dying_write(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_write(*args)

    monkeypatch.setattr(build_module, "_write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        build(recipe(), tmp_path / "resumed", progress=False)
    with Workspace(tmp_path / "resumed", read_only=True) as ws:
        assert ws.count("items") == 32  # two whole batches, nothing of the third
    monkeypatch.setattr(build_module, "_write", real_write)
    build(recipe(), tmp_path / "resumed", progress=False)
    assert snapshot(tmp_path / "resumed") == snapshot(tmp_path / "whole")


@pytest.mark.slow
def test_sigkill_mid_build_then_rerun_matches(tmp_path):
    args = [sys.executable, "-m", "sari_data.cli", "build", "--recipe", "pipelines/demo.yaml", "--quiet",
            "--set", "sources.0.n_items=600"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run(args + ["--workspace", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(args + ["--workspace", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    audio = tmp_path / "killed" / "audio"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(audio.rglob("*.wav"))) < 300:  # past the first batch
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Workspace(tmp_path / "killed", read_only=True) as ws:
        assert 0 < ws.count("items") < 600  # killed half way, one batch in
    subprocess.run(args + ["--workspace", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    assert snapshot(tmp_path / "killed") == snapshot(tmp_path / "whole")


def test_bad_items_are_quarantined_and_the_build_goes_on(tmp_path, monkeypatch):
    def source(_source, _seed, _ws):
        yield dummy_item(1)
        fields = dummy_item(2).model_dump()
        fields["answer"] = "medium"
        yield item_or_quarantine("demo.jsonl:2", **fields)
        yield dummy_item(3)

    monkeypatch.setattr(build_module, "source_records", source)
    counts = build(recipe(), tmp_path, progress=False)
    assert counts == {"items": 2, "quarantined": 1}
    with Workspace(tmp_path, read_only=True) as ws:
        (q,) = ws.records(Quarantine)
        assert (q.locator, q.reason) == ("demo.jsonl:2", "answer_not_in_choices")


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsources: [{kind: synthetic, colour: red}]\n")
    assert main(["build", "--recipe", str(bad), "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sources.0.synthetic.colour: unknown key" in err
    assert main(["stats", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no workspace" in err and "sari-data build" in err


def test_stats_prints_tables_and_writes_a_chart(tmp_path, capsys):
    build(recipe(), tmp_path, progress=False)
    assert main(["stats", str(tmp_path), "--png", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "== by family ==" in out and "== by answer position ==" in out
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_a_rebuild_keeps_the_captions_written_since(tmp_path):
    """build -> `sari-data captions` -> build: the source's empty caption must not erase the new one."""
    from corpus.records import Clip
    from corpus.testing import scene_clip
    from sari_data.recipe import Recipe
    from sari_data.testing import write

    for i in range(3):
        write(tmp_path / "audio" / f"{i}.wav", scene_clip(i, 2.0))
    (tmp_path / "clips.csv").write_text("id,audio\n" + "".join(f"c{i},{i}.wav\n" for i in range(3)))
    recipe = Recipe.model_validate({"name": "c", "sources": [{"kind": "captions", "name": "audioset", "task": "sound",
                                    "path": str(tmp_path / "clips.csv"), "audio_root": str(tmp_path / "audio"),
                                    "caption_column": None}]})
    build(recipe, tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws") as ws:
        first, *rest = list(ws.records(Clip))
        ws.upsert([first.model_copy(update={"caption": "a dog barks", "caption_source": "llm:x"})])
    build(recipe, tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        captions = {c.id: (c.caption, c.caption_source) for c in ws.records(Clip)}
    assert captions[first.id] == ("a dog barks", "llm:x") and all(captions[c.id][0] is None for c in rest)
