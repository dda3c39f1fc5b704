import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from corpus.clips import load_clip, pcm_sha256, save_clip, to_pcm16
from corpus.provenance import recorded_run
from corpus.records import ChainOfThought, Quarantine, Rollout
from corpus.store import Workspace, WorkspaceError
from corpus.testing import dummy_clip, dummy_item


def test_missing_workspace_says_how_to_make_one(tmp_path):
    with pytest.raises(WorkspaceError, match="sari-data build"):
        Workspace(tmp_path / "nowhere")


def test_items_round_trip_through_the_store(tmp_path):
    with Workspace(tmp_path, create=True) as ws:
        items = [dummy_item(i, workspace=tmp_path, meta={"family": "f", "nested": {"a": [1, 2]}}) for i in range(3)]
        items.append(dummy_item(9))  # no audio
        ws.upsert(items)
        assert sorted(ws.items(), key=lambda i: i.id) == sorted(items, key=lambda i: i.id)


def test_upsert_is_idempotent_and_replaces_by_key(tmp_path):
    with Workspace(tmp_path, create=True) as ws:
        ws.upsert([dummy_item(i) for i in range(5)])
        ws.upsert([dummy_item(i) for i in range(5)])
        ws.upsert([dummy_item(0, question="Changed?")])
        assert ws.count("items") == 5
        assert [i.question for i in ws.items() if i.source_id == "0"] == ["Changed?"]
        rollouts = [Rollout(item_id="a", model="m", settings="s", sample_index=j, completion="x", correct=j % 2 == 0)
                    for j in range(4)]
        ws.upsert(rollouts)
        ws.upsert(rollouts)
        assert ws.count("rollouts") == 4
        ws.upsert([ChainOfThought(item_id="a", style="structured", text="t", generator="template")])
        ws.upsert([Quarantine(source="s", locator="f.jsonl:3", reason="bad_json")] * 2)
        assert ws.count("cots") == 1 and ws.count("quarantine") == 1


def test_a_failed_transaction_writes_nothing(tmp_path):
    with Workspace(tmp_path, create=True) as ws:
        with pytest.raises(RuntimeError):
            with ws.transaction():
                ws.upsert([dummy_item(1)])
                raise RuntimeError("killed")
        assert ws.count("items") == 0


def test_export_is_atomic_and_readable(tmp_path):
    with Workspace(tmp_path, create=True) as ws:
        ws.upsert([dummy_item(i) for i in range(3)])
        path = ws.export_parquet("SELECT id, choices FROM items ORDER BY id", "items")
        assert [p.name for p in path.parent.iterdir()] == ["items.parquet"]  # no temp file left
        frame = pd.read_parquet(path)
        assert len(frame) == 3 and list(frame.choices[0]) == ["high", "low"]


def test_clips_are_content_addressed(tmp_path):
    samples = dummy_clip()
    a = save_clip(tmp_path / "audio", samples, 16000)
    b = save_clip(tmp_path / "audio", samples.copy(), 16000)
    c = save_clip(tmp_path / "audio", samples * 0.5, 16000)
    assert a == b and a.sha256 != c.sha256
    assert len(list((tmp_path / "audio").rglob("*.wav"))) == 2
    decoded, rate = sf.read(tmp_path / a.path, dtype="int16")
    assert rate == 16000 and pcm_sha256(decoded, rate) == a.sha256  # the hash is of the decoded PCM
    np.testing.assert_allclose(load_clip(tmp_path, a), samples, atol=1 / 32767)
    assert a.duration_s == 1.0


def test_pcm16_clips_out_of_range_samples():
    assert list(to_pcm16(np.array([-2.0, 0.0, 2.0]))) == [-32767, 0, 32767]


def test_runs_record_provenance_even_on_failure(tmp_path):
    with Workspace(tmp_path, create=True) as ws:
        with recorded_run(ws, "build", seed=7) as results:
            results["counts"] = {"items": 3}
        with pytest.raises(ValueError):
            with recorded_run(ws, "cot", seed=1):
                raise ValueError("boom")
        runs = ws.frame("runs", order_by="started_at, command")
        assert sorted(runs.status) == ["failed", "ok"]
        files = sorted(os.listdir(ws.runs_dir))
        assert len(files) == 2
        build = runs[runs.command == "build"].provenance.iloc[0]
        assert '"seed": 7' in build and '"items": 3' in build and "duckdb" in build
