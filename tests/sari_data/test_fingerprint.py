import numpy as np
import pytest
import soundfile as sf
import soxr

from corpus.testing import scene_clip
from sari_data.fingerprint import MATCH_BER, FingerprintIndex, ber, fingerprint
from sari_data.testing import VARIANTS, variant


@pytest.fixture(scope="module")
def indexed():
    clips = [scene_clip(seed, seconds=2.0) for seed in range(300)]
    index = FingerprintIndex()  # 300 clips: the table doubles several times on the way
    for i, clip in enumerate(clips):
        index.add(f"clip{i}", fingerprint(clip))
    return clips, index


def decoded(path):
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return soxr.resample(mono, rate, 16000) if rate != 16000 else mono


@pytest.mark.parametrize("how", VARIANTS)
def test_changed_copies_are_found_among_300_clips(indexed, how, tmp_path):
    clips, index = indexed
    for i in (3, 150, 299):
        found = index.query(fingerprint(decoded(variant(clips[i], how, tmp_path, f"c{i}"))))
        assert found and found[0].key == f"clip{i}", (how, i, found)
        assert found[0].ber < 0.25 and found[0].score > 0.5


def test_a_crop_is_found_at_its_offset(indexed):
    clips, index = indexed
    found = index.query(fingerprint(clips[7][16000:]))  # the clip minus its first second
    assert found[0].key == "clip7" and abs(found[0].offset - 16000 // 256) <= 1


def test_no_false_positive_on_300_other_clips(indexed):
    _, index = indexed
    assert all(index.query(fingerprint(scene_clip(seed, 5.0))) == [] for seed in range(1000, 1300))


def test_gain_and_silence_edges():
    clip = scene_clip(1, 3.0)
    assert ber(fingerprint(clip), fingerprint(0.1 * clip), 0) < 0.01
    assert 0.4 < ber(fingerprint(clip), fingerprint(scene_clip(2, 3.0)), 0) < 0.6
    assert ber(fingerprint(clip), fingerprint(clip[:1000]), 0) == 1.0  # too little overlap to judge
    assert len(fingerprint(np.zeros(10, np.float32))) == 1 and fingerprint(clip).shape[1] == 2 and MATCH_BER < 0.4


def test_waveform_similarity_of_copies_noise_and_other_audio():
    from sari_data.fingerprint import waveform_similarity
    from sari_data.testing import music_like_clip, with_noise

    clip = music_like_clip(3, 3.0)
    assert waveform_similarity(clip, clip, 0) == pytest.approx(1.0, abs=1e-6)
    assert waveform_similarity(clip, -0.3 * clip, 0) == pytest.approx(1.0, abs=1e-6)  # polarity and gain
    # 20 dB S/N: 1 / sqrt(1 + 1/100) = 0.995; the 8 kHz view keeps half the noise, so a bit above
    assert 0.99 < waveform_similarity(clip, with_noise(clip, 20), 0) < 1
    assert waveform_similarity(clip, clip[2560 + 50:], 10) > 0.99  # 10 frames (160 ms) and 50 samples later
    assert waveform_similarity(clip, music_like_clip(4, 3.0), 0) < 0.5
    assert waveform_similarity(clip, clip[:4000], 0) == 0.0  # under MIN_OVERLAP frames: no verdict


def test_a_code_posted_cap_times_is_not_posted_again():
    fp = fingerprint(scene_clip(5, 2.0))
    index = FingerprintIndex()
    for i in range(FingerprintIndex.CAP + 3):
        index.add(f"copy{i}", fp)
    found = index.query(fp, max_candidates=20)
    assert {m.key for m in found} == {f"copy{i}" for i in range(FingerprintIndex.CAP)}
    assert all(m.ber == 0 for m in found)
