"""The synthetic source: deterministic, valid, answers true to the audio, and no shortcut cues.

The shortcut probe is the key test: classifiers that see only cue features (duration, loudness,
peak, envelope statistics, difficulty, question length) must not predict the gold class better than
chance; a negative control shows the same probe does catch a leak.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest

from sari_data.sources import synthetic
from sari_data.sources.synthetic import (CHOICES, FAMILIES, TASK_OF_FAMILY, SyntheticExample, generate,
                                         generate_example)

SR = 16000
CLIP = 3.6
N_PROBE = 600  # items per family for the probe
MARGIN = 0.08  # allowed held-out accuracy above chance


@lru_cache(maxsize=None)
def items(family: str, n: int = N_PROBE, seed: int = 7) -> tuple[SyntheticExample, ...]:
    return tuple(generate_example(family, i, seed) for i in range(n))


def cls(ex: SyntheticExample) -> int:
    return ex.choices.index(ex.answer)


def _fields(ex: SyntheticExample) -> dict:
    return {k: v for k, v in vars(ex).items() if k != "audio"}


# ---------------------------------------------------------------- determinism


def test_same_seed_and_index_give_identical_items():
    for family in FAMILIES:
        a, b = generate_example(family, 11, 3), generate_example(family, 11, 3)
        assert a.audio.tobytes() == b.audio.tobytes()
        assert _fields(a) == _fields(b)


def test_different_seeds_indices_and_families_differ():
    for family in FAMILIES:
        base = generate_example(family, 5, 0)
        assert base.audio.tobytes() != generate_example(family, 5, 1).audio.tobytes()
        assert base.audio.tobytes() != generate_example(family, 6, 0).audio.tobytes()
    assert generate_example("pitch_compare", 5, 0).params != generate_example("louder_first_second", 5, 0).params


def test_generate_resumes_at_start():
    full = list(generate(12, 4))
    tail = list(generate(5, 4, start=7))
    assert [e.source_id for e in tail] == [e.source_id for e in full[7:]]
    assert all(a.audio.tobytes() == b.audio.tobytes() and _fields(a) == _fields(b) for a, b in zip(tail, full[7:]))


def test_generate_round_robins_over_requested_families():
    got = list(generate(6, 0, families=["chirp_direction", "count_beeps"]))
    assert [e.family for e in got] == ["chirp_direction", "count_beeps"] * 3
    assert [e.source_id for e in got][:2] == ["chirp_direction-0-0", "count_beeps-0-1"]
    assert {e.family for e in generate(len(FAMILIES), 0)} == set(FAMILIES)


def test_family_weights_repeat_a_family_in_the_cycle():
    got = list(generate(8, 0, families={"pitch_high_low": 3, "chirp_direction": 1}))
    assert [e.family for e in got] == ["pitch_high_low"] * 3 + ["chirp_direction"] + ["pitch_high_low"] * 3 + \
        ["chirp_direction"]
    assert len({e.source_id for e in got}) == 8  # each item is its own draw, not a copy
    from sari_data.recipe import SyntheticSource
    with pytest.raises(ValueError, match="whole numbers >= 1"):
        SyntheticSource(families={"pitch_high_low": 0})


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="unknown family"):
        generate_example("nope", 0, 0)
    with pytest.raises(ValueError, match="unknown families"):
        list(generate(1, 0, families=["nope"]))
    with pytest.raises(ValueError, match="clip_seconds"):
        generate_example("count_beeps", 0, 0, clip_seconds=1.0)
    with pytest.raises(ValueError, match="sample_rate"):
        generate_example("count_beeps", 0, 0, sample_rate=8000)


# ---------------------------------------------------------------- validity


def _check_valid(ex: SyntheticExample, clip: float = CLIP, sr: int = SR) -> None:
    assert ex.answer in ex.choices
    assert 2 <= len(ex.choices) <= 5 and len(set(ex.choices)) == len(ex.choices)
    assert ex.task == TASK_OF_FAMILY[ex.family] and ex.task in {"sound", "music"}
    assert ex.question.endswith("?") and ex.caption
    assert 0.0 <= ex.difficulty <= 1.0
    json.dumps(ex.params)
    assert ex.audio.dtype == np.float32 and ex.audio.ndim == 1
    assert len(ex.audio) == round(clip * sr)
    assert np.isfinite(ex.audio).all() and np.abs(ex.audio).max() <= 1.0
    assert np.abs(ex.audio).max() > 0.01  # not silent


@pytest.mark.parametrize("family", list(FAMILIES))
def test_items_are_valid(family):
    assert family in TASK_OF_FAMILY and family in CHOICES
    for ex in items(family)[:150]:
        _check_valid(ex)
        assert ex.source_id == f"{family}-7-{ex.source_id.rsplit('-', 1)[1]}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_other_clip_lengths_and_rates(family):
    for i in range(10):
        _check_valid(generate_example(family, i, 1, clip_seconds=3.0, sample_rate=22050), 3.0, 22050)
        _check_valid(generate_example(family, i, 1, clip_seconds=6.5), 6.5)


def test_registries_agree():
    assert set(FAMILIES) == set(TASK_OF_FAMILY) == set(CHOICES) == set(synthetic.QUESTIONS)
    assert set(TASK_OF_FAMILY.values()) == {"sound", "music"}


# ---------------------------------------------------------------- ground truth is in the audio


def _frames_db(audio: np.ndarray, hop: int) -> np.ndarray:
    p = audio.astype(np.float64) ** 2
    return 10 * np.log10(p[: len(p) // hop * hop].reshape(-1, hop).mean(axis=1) + 1e-12)


def detect_events(audio: np.ndarray, sr: int = SR, frame_s: float = 0.005, min_s: float = 0.004,
                  level: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) seconds of stretches whose energy is above a threshold between floor and peak."""
    hop = int(frame_s * sr)
    fdb = _frames_db(audio, hop)
    floor = np.percentile(fdb, 10)  # events may cover more than half the clip
    on = np.concatenate([[False], fdb > floor + level * (fdb.max() - floor), [False]])
    edges = np.flatnonzero(np.diff(on.astype(int)))
    runs = [(a * frame_s, b * frame_s) for a, b in zip(edges[::2], edges[1::2])]
    merged: list[list[float]] = []
    for a, b in runs:  # bridge one-frame dropouts
        if merged and a - merged[-1][1] <= frame_s:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged if b - a >= min_s]


def dominant_hz(audio: np.ndarray, start: float, end: float, sr: int = SR,
                band: tuple[float, float] = (0.0, SR / 2)) -> float:
    seg = audio[int(start * sr): int(end * sr)].astype(np.float64)
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=1 << 16))
    hz = np.fft.rfftfreq(1 << 16, 1 / sr)
    spec[(hz < band[0]) | (hz > band[1])] = 0
    return float(np.argmax(spec) * sr / (1 << 16))


def easy(family: str, max_d: float = 0.35, n: int = 200) -> list[SyntheticExample]:
    got = [ex for ex in items(family)[:n] if ex.difficulty <= max_d]
    assert len(got) >= 15
    return got


def test_count_beeps_envelope_count_matches_answer():
    for ex in easy("count_beeps"):
        assert len(detect_events(ex.audio, min_s=0.02)) == int(ex.answer), ex.caption


def test_pitch_compare_dominant_frequencies_match_answer():
    for ex in easy("pitch_compare", 0.5):
        events = detect_events(ex.audio, min_s=0.05)
        assert len(events) == 2, ex.caption
        hz = [dominant_hz(ex.audio, a + 0.02, b - 0.02) for a, b in events]
        assert hz == pytest.approx(ex.params["freqs_hz"], rel=0.01)
        assert ex.choices[int(np.argmax(hz))] == ex.answer


def test_pitch_high_low_dominant_frequency_matches_answer():
    # Over the tone's own span and the family's band (125 Hz - 2 kHz), the tone beats white noise in
    # its frequency bin down to -20 dB SNR; below, the tone fades into the noise even for this detector.
    heard = [ex for ex in items("pitch_high_low")[:200] if ex.params["snr_db"] >= -20]
    assert len(heard) >= 100
    for ex in heard:
        onset = ex.params["onset_s"]
        hz = dominant_hz(ex.audio, onset, onset + ex.params["duration_s"], band=(100, 2500))
        assert hz == pytest.approx(ex.params["freq_hz"], rel=0.01), ex.caption
        assert ("high" if hz > synthetic.PITCH_BOUNDARY_HZ else "low") == ex.answer, ex.caption


def test_chirp_direction_from_spectral_centroid_slope():
    for ex in easy("chirp_direction", 0.5):
        (start, end), = detect_events(ex.audio, min_s=0.1)
        seg = ex.audio[int(start * SR): int(end * SR)].astype(np.float64)
        frames = seg[: len(seg) // 256 * 256].reshape(-1, 256) * np.hanning(256)
        mag = np.abs(np.fft.rfft(frames, axis=1))
        centroid = (mag * np.fft.rfftfreq(256, 1 / SR)).sum(1) / mag.sum(1)
        slope = np.polyfit(np.arange(len(centroid)), centroid, 1)[0]
        assert ("rising" if slope > 0 else "falling") == ex.answer, ex.caption


def _event_rms_db(ex: SyntheticExample, a: float, b: float) -> float:
    seg = ex.audio[int((a + 0.02) * SR): int((b - 0.02) * SR)].astype(np.float64)
    return 10 * np.log10(np.mean(seg**2))


def test_louder_first_second_event_levels_match_answer():
    for ex in easy("louder_first_second", 0.5):
        events = detect_events(ex.audio, min_s=0.1, level=0.3)
        assert len(events) == 2, ex.caption
        levels = [_event_rms_db(ex, a, b) for a, b in events]
        assert levels[0] - levels[1] == pytest.approx(2 * ex.params["gains_db"][0], abs=1.0)
        assert ex.choices[int(np.argmax(levels))] == ex.answer


def test_longer_first_second_event_lengths_match_answer():
    for ex in easy("longer_first_second", 0.5):
        events = detect_events(ex.audio, min_s=0.1)
        assert len(events) == 2, ex.caption
        lengths = [b - a for a, b in events]
        assert lengths == pytest.approx(ex.params["durations_s"], abs=0.02)
        assert ex.choices[int(np.argmax(lengths))] == ex.answer


def test_order_tone_noise_flatness_matches_answer():
    for ex in easy("order_tone_noise", 0.5):
        events = detect_events(ex.audio, min_s=0.1)
        assert len(events) == 2, ex.caption
        flatness = []
        for a, b in events:
            seg = ex.audio[int((a + 0.02) * SR): int((b - 0.02) * SR)].astype(np.float64)
            power = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2 + 1e-20
            flatness.append(np.exp(np.mean(np.log(power))) / np.mean(power))
        first_is_tone = flatness[0] < flatness[1]
        assert ("the tone" if first_is_tone else "the noise") == ex.answer, ex.caption


def test_tempo_from_click_onsets_matches_answer():
    for ex in easy("tempo_fast_slow", 0.5):
        onsets = [a for a, _ in detect_events(ex.audio, frame_s=0.002, min_s=0.002)]
        assert len(onsets) == ex.params["n_clicks"], ex.caption
        bpm = 60 / np.median(np.diff(onsets))
        assert bpm == pytest.approx(ex.params["bpm"], rel=0.03)
        assert ("fast" if bpm >= 115 else "slow" if bpm <= 95 else "?") == ex.answer


def test_chord_quality_from_spectral_peaks():
    for ex in easy("chord_major_minor", 0.5, n=100):
        (a, b), = detect_events(ex.audio, min_s=0.3)
        seg = ex.audio[int((a + 0.02) * SR): int((b - 0.02) * SR)].astype(np.float64)
        n_fft = 1 << 16
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=n_fft))
        peaks = np.flatnonzero((spec[1:-1] > spec[:-2]) & (spec[1:-1] >= spec[2:])) + 1
        top = np.sort(peaks[np.argsort(spec[peaks])[-3:]]) * SR / n_fft  # three strongest = the notes
        assert list(top) == pytest.approx(ex.params["freqs_hz"], rel=0.01)
        semis = {int(round(12 * np.log2(f / top[0]))) % 12 for f in top}
        rotations = [{(s - r) % 12 for s in semis} for r in semis]
        quality = "major" if {0, 4, 7} in rotations else "minor" if {0, 3, 7} in rotations else "?"
        assert quality == ex.answer, ex.caption


# ---------------------------------------------------------------- shortcut probe


FEATURES = ("duration", "rms_db", "peak_db", "crest_db", "active_frac", "kurtosis", "frame_db_std",
            "frame_db_range", "first_sound", "last_sound", "difficulty", "question_len")

# Features that measure what the question asks about, so they are not cues for that family. A
# rhythm covers a stretch of the clip drawn independently of its tempo (else position would leak)
# and its clicks share a fixed total duration (else energy and crest factor would), so what is left
# is how many clicks the stretch holds, which is the tempo itself; counting 20-ms frames that hold
# sound sees it.
CONTENT_FEATURES = {"tempo_fast_slow": {"active_frac"}}


def cue_features(ex: SyntheticExample) -> list[float]:
    """Things a model could pick up without listening to what the question asks about (see FEATURES)."""
    x = ex.audio.astype(np.float64)
    power = x**2
    rms_db = 10 * np.log10(power.mean())
    peak_db = 20 * np.log10(np.abs(x).max())
    fdb = _frames_db(ex.audio, SR // 50)  # 20 ms frames
    active = fdb > np.median(fdb) + 6
    return [len(x) / SR, rms_db, peak_db, peak_db - rms_db, active.mean(),
            (power**2).mean() / power.mean() ** 2,  # kurtosis: how "bursty" the clip is
            fdb.std(), fdb.max() - np.median(fdb),
            np.argmax(active) / len(active), np.argmax(active[::-1]) / len(active),  # first/last sound
            ex.difficulty, len(ex.question)]


def _stump(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int, bins: int = 8) -> np.ndarray:
    """Best single feature, cut into quantile bins, each bin predicting its majority class."""
    best, pred = -1.0, None
    for j in range(xtr.shape[1]):
        edges = np.unique(np.quantile(xtr[:, j], np.linspace(0, 1, bins + 1)[1:-1]))
        btr, bte = np.searchsorted(edges, xtr[:, j]), np.searchsorted(edges, xte[:, j])
        counts = np.zeros((len(edges) + 1, k))
        np.add.at(counts, (btr, ytr), 1)
        majority = counts.argmax(1)
        acc = (majority[btr] == ytr).mean()
        if acc > best:
            best, pred = acc, majority[bte]
    return pred


def _centroid(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int) -> np.ndarray:
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1
    ztr, zte = (xtr - mu) / sd, (xte - mu) / sd
    cents = np.stack([ztr[ytr == c].mean(0) if (ytr == c).any() else np.full(ztr.shape[1], np.inf) for c in range(k)])
    return ((zte[:, None, :] - cents[None]) ** 2).sum(-1).argmin(1)


def probe_accuracy(x: np.ndarray, y: np.ndarray, k: int, folds: int = 3) -> float:
    """Held-out accuracy (k-fold) of the better of two cue-only classifiers."""
    order = np.random.default_rng(0).permutation(len(y))
    correct = {"stump": 0, "centroid": 0}
    for f in range(folds):
        te = order[f::folds]
        tr = np.setdiff1d(order, te)
        correct["stump"] += (_stump(x[tr], y[tr], x[te], k) == y[te]).sum()
        correct["centroid"] += (_centroid(x[tr], y[tr], x[te], k) == y[te]).sum()
    return max(correct.values()) / len(y)


@lru_cache(maxsize=None)
def probe_data(family: str) -> tuple[np.ndarray, np.ndarray, int]:
    exs = items(family)
    return np.array([cue_features(e) for e in exs]), np.array([cls(e) for e in exs]), len(CHOICES[family])


def cue_columns(family: str) -> list[int]:
    return [j for j, name in enumerate(FEATURES) if name not in CONTENT_FEATURES.get(family, set())]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cue_features_do_not_predict_the_answer(family):
    x, y, k = probe_data(family)
    acc = probe_accuracy(x[:, cue_columns(family)], y, k)
    assert acc < 1 / k + MARGIN, f"{family}: cue-only accuracy {acc:.3f} vs chance {1 / k:.3f}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gold_classes_are_balanced_and_option_length_is_no_cue(family):
    exs = items(family)
    k = len(CHOICES[family])
    freq = np.bincount([cls(e) for e in exs], minlength=k) / len(exs)
    assert np.all(np.abs(freq - 1 / k) < 0.07), freq
    for pick in (max, min):
        acc = np.mean([pick(e.choices, key=len) == e.answer for e in exs])
        assert acc < 1 / k + MARGIN, f"{pick.__name__} option length: {acc:.3f}"
    # difficulty is a knob of its own, not a hint: similar on average in every class
    means = [np.mean([e.difficulty for e in exs if cls(e) == c]) for c in range(k)]
    assert max(means) - min(means) < 0.1


def test_probe_catches_a_leaky_feature():
    """Negative control: the same probe flags leaks, so its passing above means something."""
    x, y, k = probe_data("count_beeps")
    noisy_label = y + np.random.default_rng(1).normal(0, 0.8, len(y))
    assert probe_accuracy(np.column_stack([x, noisy_label]), y, k) > 1 / k + 0.2
    # A realistic leak: forget the loudness normalisation, so a clip with more beeps is louder
    # (energy grows with the count). Only 4 dB across the classes against a 12 dB random spread.
    leaky = [cue_features(SyntheticExample(**{**vars(e), "audio": e.audio * np.sqrt(int(e.answer) / 5)}))
             for e in items("count_beeps")]
    assert probe_accuracy(np.array(leaky), y, k) > 1 / k + MARGIN


# ---------------------------------------------------------------- speed


def test_generation_is_fast_enough():
    import time
    t0 = time.perf_counter()
    n = sum(1 for _ in generate(90, 123))
    rate = n / (time.perf_counter() - t0)
    assert rate > 100, f"{rate:.0f} items/s"  # loose bound for loaded CI machines; ~700/s measured locally
