import os

import numpy as np
import pytest
import soundfile as sf

from corpus.testing import scene_clip
from sari_data.audio import CheckSettings, check_audio, check_many, load_fingerprint, ordered_map, resolve_in_root
from sari_data.testing import sparse_long_wav, truncated, variant, write, write_bytes

SETTINGS = CheckSettings(min_seconds=0.5, max_seconds=30)


def test_stereo_44k_becomes_mono_16k_and_is_stored_once(tmp_path):
    clip = scene_clip(0, 3.0)
    ref = check_audio(variant(clip, "stereo", tmp_path / "in", "a"), tmp_path, SETTINGS)
    again = check_audio(variant(clip, "resample44k", tmp_path / "in", "b"), tmp_path, SETTINGS)
    stored, rate = sf.read(tmp_path / ref.path)
    assert rate == 16000 and stored.ndim == 1 and ref.duration_s == 3.0 and ref.channels == 1
    assert again.sample_rate == 16000 and abs(again.duration_s - 3.0) < 1e-3
    same = check_audio(write(tmp_path / "in" / "c.wav", np.stack([clip, 0.8 * clip], 1)), tmp_path, SETTINGS)
    assert same == ref and len(list((tmp_path / "audio").rglob("*.wav"))) == 2  # same PCM, one file
    assert load_fingerprint(tmp_path, ref.sha256).shape == (int((48000 - 2048) / 256) + 1 - 1, 2)


@pytest.mark.parametrize("make, reason", [
    (lambda d: write_bytes(d / "x.wav", b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(500)), "undecodable_audio"),
    (lambda d: write_bytes(d / "x.mp3", os.urandom(2000)), "undecodable_audio"),
    (lambda d: truncated(d / "x.wav", scene_clip(1, 4.0)), "truncated_audio"),
    (lambda d: truncated(d / "x.flac", scene_clip(1, 4.0)), "truncated_audio"),
    (lambda d: write(d / "x.wav", np.zeros(0, np.float32)), "zero_length_audio"),
    (lambda d: write(d / "x.wav", np.full(16000, np.nan, np.float32), subtype="FLOAT"), "non_finite_samples"),
    (lambda d: write(d / "x.wav", np.zeros(16000, np.float32)), "silent_audio"),
    (lambda d: write(d / "x.wav", np.sign(scene_clip(2, 1.0) + 1e-9)), "clipped_audio"),
    (lambda d: write(d / "x.wav", scene_clip(3, 0.3)), "too_short"),
    (lambda d: write(d / "x.ogg", scene_clip(3, 31.0)), "too_long"),
    (lambda d: sparse_long_wav(d / "x.wav", hours=3), "too_long"),
])
def test_bad_audio_gets_its_reason(tmp_path, make, reason):
    result = check_audio(make(tmp_path), tmp_path / "ws", SETTINGS)
    assert isinstance(result, tuple) and result[0] == reason, result
    assert not (tmp_path / "ws" / "audio").exists() or not list((tmp_path / "ws" / "audio").rglob("*.wav"))


def test_three_hour_file_is_judged_from_its_header(tmp_path):
    path = sparse_long_wav(tmp_path / "long.wav", hours=3)
    assert sf.info(path).duration == 3 * 3600 and os.stat(path).st_blocks * 512 < 1 << 20  # sparse: no disk used


def test_paths_resolve_inside_the_root_only(tmp_path):
    root = tmp_path / "root"
    write(root / "a" / "ok.wav", scene_clip(0, 1.0))
    write(tmp_path / "secret.wav", scene_clip(1, 1.0))
    assert resolve_in_root(root, "a/ok.wav") == root / "a" / "ok.wav"
    assert resolve_in_root(root, "./a/../a/ok.wav") == root / "a" / "ok.wav"
    for escaping in ("../secret.wav", str(tmp_path / "secret.wav"), "a/../../secret.wav"):
        assert resolve_in_root(root, escaping)[0] == "path_escapes_root"
    assert resolve_in_root(root, "a/none.wav")[0] == "missing_audio"


def test_symlinks_the_user_placed_under_the_root_are_followed(tmp_path):
    """`data/mmau/test-mini-audios` linked to a bigger disk, or one linked clip: the user's choice."""
    big_disk = tmp_path / "big-disk" / "test-mini-audios"
    write(big_disk / "x.wav", scene_clip(0, 1.0))
    root = tmp_path / "data" / "mmau"
    root.mkdir(parents=True)
    (root / "test-mini-audios").symlink_to(big_disk)
    (root / "one.wav").symlink_to(big_disk / "x.wav")
    assert resolve_in_root(root, "./test-mini-audios/x.wav") == root / "test-mini-audios" / "x.wav"
    assert resolve_in_root(root, "one.wav") == root / "one.wav"
    assert resolve_in_root(root, "test-mini-audios/../../../big-disk/test-mini-audios/x.wav")[0] == "path_escapes_root"


def test_parallel_checks_keep_input_order(tmp_path):
    paths = [write(tmp_path / "in" / f"{i}.wav", scene_clip(i, 1.0)) for i in range(12)]
    inputs = [*paths[:6], ("missing_audio", "gone"), *paths[6:]]
    serial = list(check_many(inputs, tmp_path / "one", SETTINGS, workers=1))
    parallel = list(check_many(inputs, tmp_path / "two", SETTINGS, workers=2))
    assert serial == parallel and parallel[6] == ("missing_audio", "gone")
    assert list(ordered_map(abs, range(-200, 0), workers=2, window=8)) == list(range(200, 0, -1))
