"""`sari-data captions`: audio sent as chat `input_audio` (base64 WAV), a folder or the workspace items,
and a local transformers checkpoint."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf
from llm_helpers import config_for

from corpus.store import Workspace
from corpus.testing import dummy_clip, dummy_item
from sari_data.llm.captions import read_clips, run_captions
from sari_data.llm.testing import FakeChatServer, Reply, last_user_text


def audio_of(body) -> np.ndarray:
    part = next(p for p in body["messages"][0]["content"] if p["type"] == "input_audio")
    assert part["input_audio"]["format"] == "wav"
    samples, rate = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
    assert rate == 16000
    return samples


def describe(body) -> Reply:
    """Caption = the clip's dominant frequency, so the test can check each clip got its own caption;
    a very quiet clip gets a refusal every time."""
    samples = audio_of(body)
    if np.abs(samples).max() < 0.01:
        return Reply(content="I'm sorry, I cannot hear anything.")
    freq = np.argmax(np.abs(np.fft.rfft(samples))) * 16000 / len(samples)
    return Reply(content=f"A steady tone at about {freq:.0f} Hz.")


def test_caption_a_folder_into_a_clips_file(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "a.wav", dummy_clip(freq=500), 16000)
    sf.write(folder / "b.flac", dummy_clip(freq=1000, sample_rate=32000), 32000)  # resampled to 16 kHz
    sf.write(folder / "quiet.wav", dummy_clip() * 0.001, 16000)
    Workspace(tmp_path / "ws", create=True).close()
    with FakeChatServer(describe) as server:
        results = run_captions(tmp_path / "ws", config=config_for(server), clips=folder, out=tmp_path / "out.jsonl",
                               progress=False)
    clips = {c.source_id: c for _, c in read_clips(tmp_path / "out.jsonl")}
    assert clips["a.wav"].caption == "A steady tone at about 500 Hz." and clips["a.wav"].caption_source == "llm:test-model"
    assert clips["b.flac"].caption == "A steady tone at about 1000 Hz."
    assert clips["quiet.wav"].caption is None
    assert results["captioned"] == 2 and list(results["failures"].values())[0].startswith("refusal")
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["source"] == "clips"


def test_caption_workspace_items_without_a_caption(tmp_path):
    with Workspace(tmp_path, create=True) as ws:
        ws.upsert([dummy_item(i, workspace=tmp_path, caption=None if i < 2 else "given") for i in range(3)])
    with FakeChatServer(describe) as server:
        results = run_captions(tmp_path, config=config_for(server), progress=False)
    assert len(server.requests) == 2 and results["captioned"] == 2
    with Workspace(tmp_path, read_only=True) as ws:
        captions = {it.source_id: (it.caption, it.caption_source) for it in ws.items()}
    assert captions["0"] == ("A steady tone at about 300 Hz.", "llm:test-model")
    assert captions["1"] == ("A steady tone at about 310 Hz.", "llm:test-model") and captions["2"][0] == "given"


@pytest.mark.slow
def test_local_transformers_model_captions(tmp_path):
    from sari_train.models.tiny import build_tiny_qwen2_audio

    model = build_tiny_qwen2_audio(tmp_path / "tiny")
    with Workspace(tmp_path / "ws", create=True) as ws:
        ws.upsert([dummy_item(i, workspace=tmp_path / "ws", caption=None) for i in range(2)])
    results = run_captions(tmp_path / "ws", local_model=str(model), progress=False)
    # A random-weight model writes noise: each clip ends captioned or failed with a reason; only
    # captions that pass the checks are cached (a failure is tried again next run).
    assert results["captioned"] + results["failed"] == 2 and results["caption_source"] == "local:tiny"
    assert len((tmp_path / "ws" / "llm_cache.jsonl").read_text().splitlines()) == results["captioned"]


def test_workspace_clips_are_captioned_then_become_questions(tmp_path):
    """sari-32k's chain: clips a `captions` source stored (AudioSet, MELD) -> `sari-data captions`
    -> `sari-data questions --workspace` (no clips file)."""
    from corpus.clips import save_clip
    from corpus.records import Clip
    from sari_data.llm.questions import run_questions

    with Workspace(tmp_path, create=True) as ws:
        clips = [Clip(id=f"c{i}", source="audioset", source_id=f"as{i}", task="sound",
                      audio=save_clip(ws.audio_dir, dummy_clip(freq=300 + 100 * i), 16000)) for i in range(3)]
        ws.upsert(clips)
    with FakeChatServer(describe) as server:
        assert run_captions(tmp_path, config=config_for(server), progress=False)["captioned"] == 3

    def question(body):
        freq = last_user_text(body).split("about ")[1].split(" Hz")[0]
        return Reply(content=json.dumps({"questions": [{
            "question": f"Which tone plays ({freq})?", "choices": ["a low hum", "a high whistle", "a bell", "a click"],
            "answer": "a bell", "task": "sound", "category": "sound source"}]}))
    with FakeChatServer(question) as server:
        results = run_questions(tmp_path, config=config_for(server), progress=False)
    with Workspace(tmp_path, read_only=True) as ws:
        items = ws.items()
        stored = {c.id: c for c in ws.records(Clip)}
    assert results["items"] == 3 and {i.source_id for i in items} == {f"as{i}#q0" for i in range(3)}
    assert all(i.audio == stored[f"c{int(i.source_id[2])}"].audio for i in items)  # the stored clip, not a copy
    assert {i.caption for i in items} == {c.caption for c in stored.values()} and None not in {i.caption for i in items}
