"""Test helpers shipped with the package (lhotse-style): a dummy clip and a dummy item."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corpus.clips import save_clip
from corpus.records import AudioRef, Item, make_item_id


def dummy_clip(seconds: float = 1.0, freq: float = 440.0, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dummy_item(index: int = 0, *, audio: AudioRef | None = None, workspace: Path | None = None, **overrides) -> Item:
    """A valid item; with `workspace`, its clip (a tone whose pitch depends on index) is stored there."""
    if workspace is not None and audio is None:
        audio = save_clip(Path(workspace) / "audio", dummy_clip(freq=300.0 + 10 * index), 16000)
    fields = dict(
        id=make_item_id("dummy", str(index)), source="dummy", source_id=str(index), audio=audio,
        question="Is the tone high or low?", choices=["high", "low"], answer="low", answer_index=1,
        task="music", category="pitch", meta={"family": "pitch_high_low"},
    )
    fields.update(overrides)
    return Item(**fields)


def scene_clip(seed: int, seconds: float = 10.0, sample_rate: int = 16000) -> np.ndarray:
    """A distinct, natural-ish clip per seed: tone bursts, chirps and band noise at random onsets
    over a noise floor. Unlike a steady tone, it has the time structure real recordings have,
    which is what audio fingerprints (and duplicate detectors) key on."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = 0.003 * rng.standard_normal(n)
    for _ in range(int(rng.integers(8, 16) * seconds / 4)):
        length = int(rng.uniform(0.08, 0.6) * sample_rate)
        start = int(rng.integers(0, max(1, n - length)))
        t = np.arange(length) / sample_rate
        kind = rng.integers(3)
        if kind == 0:
            event = np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
        elif kind == 1:
            f0, f1 = rng.uniform(200, 3000, 2)
            event = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
        else:
            spectrum = np.fft.rfft(rng.standard_normal(length))
            lo = int(rng.integers(1, len(spectrum) // 2))
            spectrum[:lo] = 0
            spectrum[lo + len(spectrum) // 8:] = 0
            event = np.fft.irfft(spectrum, length)
            event /= np.abs(event).max() + 1e-9
        envelope = np.minimum(1, np.minimum(t, t[-1] - t) / 0.01)
        out[start:start + length] += rng.uniform(0.05, 0.3) * event * envelope
    return np.clip(out, -1, 1).astype(np.float32)

def noise_clips(n: int, seconds: float = 3.0, seed: int = 0) -> list[np.ndarray]:
    """n different white-noise clips (float32, 16 kHz)."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(n)]


def dummy_benchmark(root: Path, n: int = 3) -> Path:
    """An MMAU-format benchmark file of n two-choice pitch questions with their WAV clips under root."""
    import json

    import soundfile as sf

    records = []
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        audio = f"audio/clip{i}.wav"
        sf.write(root / audio, dummy_clip(1.5, 300 + 50 * i), 16000)
        records.append({"id": f"q{i}", "audio_id": audio, "question": "Is the tone high or low?",
                        "choices": ["high", "low"], "answer": "low", "dataset": "toy", "task": "music",
                        "split": "test", "category": "pitch", "sub-category": "pitch", "difficulty": "easy"})
    (root / "bench.json").write_text(json.dumps(records))
    return root / "bench.json"
