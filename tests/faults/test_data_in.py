"""Bringing your own data: audio paths as real manifests write them, clips stored bit-exact, the
right reason for an empty file, and a missing source that leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from faults_helpers import one_line_error, run_cli

from corpus.store import Workspace
from corpus.testing import scene_clip
from sari_data.audio import CheckSettings, check_audio, resolve_in_root
from sari_data.build import build
from sari_data.cli import main as sari_data
from sari_data.recipe import Recipe
from sari_data.testing import avqa_row, write, write_bytes, write_jsonl

SETTINGS = CheckSettings(min_seconds=0.5, max_seconds=30)


def avqa_recipe(path: Path, **source) -> Recipe:
    return Recipe.model_validate({"name": "t", "sources": [{"kind": "avqa", "name": "avqa", "path": str(path), **source}]})


def test_absolute_paths_inside_the_root_are_accepted_outside_refused(tmp_path):
    root = tmp_path / "audios"
    inside = write(root / "a" / "x.wav", scene_clip(0, 1.0))
    write(tmp_path / "secret.wav", scene_clip(1, 1.0))
    assert resolve_in_root(root, str(inside)) == inside
    assert resolve_in_root(root, str(root / "a" / ".." / "a" / "x.wav")) == inside
    for outside in (str(tmp_path / "secret.wav"), str(root / ".." / "secret.wav"), "/etc/passwd"):
        failure = resolve_in_root(root, outside)
        assert failure[0] == "path_escapes_root" and "outside the audio root" in failure[1]


def test_absolute_paths_into_a_linked_root_are_accepted(tmp_path):
    """The manifest names the real disk; the recipe's root is a symlink to it."""
    disk = tmp_path / "big-disk" / "audios"
    clip = write(disk / "x.wav", scene_clip(0, 1.0))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "audios").symlink_to(disk)
    assert resolve_in_root(tmp_path / "data" / "audios", str(clip)) == clip


def test_an_avqa_file_with_half_its_paths_absolute_builds_whole(tmp_path):
    root = tmp_path / "avqa" / "audios"
    rows = []
    for i in range(8):
        write(root / f"c{i}.wav", scene_clip(i, 2.0))
        rows.append(avqa_row(i, str(root / f"c{i}.wav") if i % 2 else f"c{i}.wav"))
    write(tmp_path / "elsewhere.wav", scene_clip(99, 2.0))
    rows.append(avqa_row(8, str(tmp_path / "elsewhere.wav")))
    path = write_jsonl(tmp_path / "avqa" / "train_qa.jsonl", rows)
    build(avqa_recipe(path, audio_root=str(root)), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        assert ws.count("items") == 8
        assert ws.frame("quarantine").reason.tolist() == ["path_escapes_root"]


def test_a_prefix_rewrite_maps_another_machines_paths_into_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data" / "avqa" / "audios"
    for i in range(3):
        write(root / f"c{i}.wav", scene_clip(i, 2.0))
    rows = [avqa_row(i, f"/home/someone/AVQA/audios/c{i}.wav") for i in range(3)]
    rows.append(avqa_row(3, "/home/someone/AVQA/other/../../../../etc/passwd"))
    path = write_jsonl(tmp_path / "data" / "avqa" / "train_qa.jsonl", rows)
    recipe = avqa_recipe(path, audio_root="data/avqa/audios",
                         audio_path_prefix={"from": "/home/someone/AVQA/audios", "to": "data/avqa/audios"})
    build(recipe, tmp_path / "ws", progress=False, allow_empty=True)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        assert ws.count("items") == 3
        assert ws.frame("quarantine").reason.tolist() == ["path_escapes_root"]


def test_a_clip_that_needs_no_conversion_is_stored_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32768, 16000 * 2, dtype=np.int64).astype(np.int16)
    pcm[:4] = [32767, -32768, 32766, -32767]  # full scale: where a 32767 vs 32768 scale differs most
    pcm = (pcm // 4).astype(np.int16)  # not clipped: about 0.2 % of samples near full scale
    pcm[:4] = [32767, -32768, 32766, -32767]
    for suffix in ("wav", "flac"):
        source = tmp_path / f"in.{suffix}"
        sf.write(source, pcm, 16000, subtype="PCM_16")
        ref = check_audio(source, tmp_path / f"ws-{suffix}", SETTINGS)
        stored, rate = sf.read(tmp_path / f"ws-{suffix}" / ref.path, dtype="int16")
        assert rate == 16000 and np.array_equal(stored, pcm), suffix


def test_the_same_clip_as_wav_and_flac_is_stored_once(tmp_path):
    pcm = (scene_clip(3, 2.0) * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", pcm, 16000, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", pcm, 16000, subtype="PCM_16")
    assert check_audio(tmp_path / "a.wav", tmp_path / "ws", SETTINGS) == check_audio(tmp_path / "a.flac", tmp_path / "ws", SETTINGS)


def test_an_empty_file_is_zero_length_audio(tmp_path):
    for empty in (write_bytes(tmp_path / "x.wav", b""), b""):
        assert check_audio(empty, tmp_path / "ws", SETTINGS)[0] == "zero_length_audio"


def test_a_missing_source_file_leaves_no_workspace_behind(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "t", "sources": [{"kind": "avqa", "name": "avqa",
                                                              "path": str(tmp_path / "nope.jsonl")}]}))
    code, _, err = run_cli(sari_data, ["build", "--recipe", recipe, "--workspace", tmp_path / "ws", "--quiet"], capsys)
    line = one_line_error(err, "sari-data build")
    assert code == 2 and "nope.jsonl not found" in line and "path:" in line
    assert not (tmp_path / "ws").exists()
