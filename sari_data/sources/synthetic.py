"""The embedded synthetic source: acoustic-reasoning multiple-choice items, answers known by construction.

Every item is a short scene (tones, noise bursts, sweeps, clicks) drawn from a seeded generator,
so the pipeline runs offline and a small model can genuinely learn to listen. Pure numpy; an item
depends only on (family, seed, index).

No shortcuts, by construction (a tiny model learns any cue that is cheaper than listening):
  * every clip has the same length, and events start at random onsets;
  * the whole clip is rescaled to a random RMS level drawn independently of the answer, so overall
    loudness, peak and the like say nothing;
  * the gold class is drawn uniformly per item and the option list is fixed per family, so option
    text alone predicts nothing;
  * where a family could leak through global statistics, the construction is symmetric: two-event
    families draw both events from one distribution and let the answer decide their order; sweeps
    are time-reversals of each other; the total beep time does not depend on the beep count; the
    click count does not depend on the tempo.
`tests/sari_data/test_synthetic.py` probes this with cue-only classifiers.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpus.clips import save_clip
from corpus.records import Item, Quarantine, make_item_id
from sari_data.recipe import SyntheticSource
from sari_data.sources import item_or_quarantine

MIN_CLIP_SECONDS = 3.0  # the families are laid out to fit 3 s; longer clips just get more room
MIN_SAMPLE_RATE = 16000  # the highest tones (4 kHz, chord harmonics) need it
RMS_DBFS_RANGE = (-32.0, -20.0)  # final clip level, drawn independently of the answer
PEAK_LIMIT = 0.99
FADE_S = 0.005  # 5 ms raised-cosine fades: no clicks at event edges
MARGIN_S = 0.1  # keep events this far from the clip edges


@dataclass(frozen=True)
class SyntheticExample:
    source_id: str
    family: str
    task: str  # "sound" | "music"
    question: str
    choices: list[str]  # canonical order; the build step balances gold positions
    answer: str  # gold option text, one of `choices`
    caption: str  # ground-truth scene description
    difficulty: float  # constructed difficulty knob in [0, 1]
    params: dict[str, Any]  # JSON-serialisable construction parameters
    audio: np.ndarray  # float32 mono, fixed length, in [-1, 1]


# --------------------------------------------------------------------------------------------
# Signal helpers. Signals are float64 at unit peak amplitude; gains are applied when mixing.


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _fade(x: np.ndarray, sr: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade in and out (in place), so event edges add no broadband click."""
    n = min(int(round(seconds * sr)), len(x) // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        x[:n] *= ramp
        x[len(x) - n:] *= ramp[::-1]
    return x


def _n_samples(seconds: float, sr: int) -> int:
    return max(1, int(round(seconds * sr)))


def _sine(rng: np.random.Generator, freq: float, n: int, sr: int) -> np.ndarray:
    """n samples of a unit sine at a random phase, in float32 (about 10x faster than float64 sin);
    the phase is wrapped to one cycle first, so float32 costs well under -50 dB of accuracy."""
    cycles = np.arange(n, dtype=np.float32) * np.float32(freq / sr) + np.float32(rng.uniform())
    cycles -= np.floor(cycles)
    return np.sin(np.float32(2 * np.pi) * cycles)


def _tone(rng: np.random.Generator, freq: float, seconds: float, sr: int,
          harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """A steady tone (random phase per partial); partials above 0.45*sr are dropped (no aliasing)."""
    n = _n_samples(seconds, sr)
    x = np.zeros(n)
    for k, amp in enumerate(harmonics, start=1):
        if k * freq < 0.45 * sr:
            x += amp * _sine(rng, k * freq, n, sr)
    return _fade(x / sum(harmonics), sr)


def _noise_burst(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """White noise scaled to the RMS of a unit sine, so a burst and a tone are equally strong."""
    x = rng.standard_normal(_n_samples(seconds, sr)) / math.sqrt(2)
    return _fade(x, sr)


def _sweep(rng: np.random.Generator, f_start: float, f_end: float, seconds: float, sr: int) -> np.ndarray:
    """Exponential sweep: pitch moves at a constant rate in octaves per second."""
    n = _n_samples(seconds, sr)
    t = np.arange(n) / sr
    r = math.log(f_end / f_start)
    phase = 2 * np.pi * f_start * seconds / r * np.expm1(r * t / seconds)
    return _fade(np.sin(phase + rng.uniform(0, 2 * np.pi)), sr)


def _click(rng: np.random.Generator, freq: float, seconds: float, sr: int) -> np.ndarray:
    """A short Hann-windowed sine burst: unit peak and energy proportional to its length whatever
    that length (an exponential decay under a fixed fade would not be); the window is its own fade."""
    n = _n_samples(seconds, sr)
    return _sine(rng, freq, n, sr) * np.hanning(n + 2)[1:-1]


def _split(rng: np.random.Generator, total: float, parts: int, jitter: float) -> np.ndarray:
    """`total` split into `parts` positive pieces, each within about +-jitter of an equal share."""
    w = rng.uniform(1 - jitter, 1 + jitter, size=parts)
    return total * w / w.sum()


def _place(rng: np.random.Generator, durations: list[float], gaps: list[float], clip_s: float) -> list[float]:
    """Onsets for a sequence of events separated by `gaps`, the sequence at a random offset in the clip."""
    span = sum(durations) + sum(gaps)
    slack = clip_s - 2 * MARGIN_S - span
    if slack < 0:
        raise ValueError(f"events need {span:.2f} s but the clip is {clip_s:.2f} s")
    t = MARGIN_S + rng.uniform(0, slack)
    onsets = []
    for i, dur in enumerate(durations):
        onsets.append(t)
        t += dur + (gaps[i] if i < len(gaps) else 0.0)
    return onsets


@dataclass
class _Event:
    onset: float  # seconds
    signal: np.ndarray  # unit-peak waveform, already faded
    gain_db: float = 0.0


@dataclass
class _Scene:
    """What a family generator describes; `_render` turns it into audio the same way for all families."""

    events: list[_Event]
    snr_db: float  # event power (over the samples where events sound) over background-noise power
    caption: str
    params: dict[str, Any] = field(default_factory=dict)


def _render(scene: _Scene, rng: np.random.Generator, clip_s: float, sr: int) -> tuple[np.ndarray, float]:
    """Mix events, add background noise at the scene's SNR, rescale to a random RMS level.

    Returns (float32 audio, its RMS level in dBFS).
    """
    n = _n_samples(clip_s, sr)
    x = np.zeros(n)
    active = np.zeros(n, dtype=bool)
    for ev in scene.events:
        i0 = int(round(ev.onset * sr))
        seg = ev.signal[: n - i0]
        x[i0:i0 + len(seg)] += seg * 10 ** (ev.gain_db / 20)
        active[i0:i0 + len(seg)] = True
    signal_rms = math.sqrt(float(np.mean(x[active] ** 2))) if active.any() else 1.0
    x += rng.standard_normal(n) * (signal_rms / 10 ** (scene.snr_db / 20))
    # Loudness must carry no information: the final level is a fresh draw, independent of the answer.
    rms_dbfs = float(rng.uniform(*RMS_DBFS_RANGE))
    gain = 10 ** (rms_dbfs / 20) / math.sqrt(float(np.mean(x**2)))
    # Lower the gain rather than hard-clip (clipping adds harmonics that distort pitch tasks).
    gain = min(gain, PEAK_LIMIT / float(np.max(np.abs(x))))
    out = np.clip(x * gain, -1.0, 1.0).astype(np.float32)
    return out, 20 * math.log10(math.sqrt(float(np.mean(x**2))) * gain)


def _snr(d: float, easy: float, hard: float) -> float:
    return round(_lerp(easy, hard, d), 2)


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


# --------------------------------------------------------------------------------------------
# Families. Each takes (rng, gold class index, difficulty, clip seconds, sample rate) and returns a
# scene; the class index refers to CHOICES[family]. Difficulty d in [0, 1] moves every knob from
# easy to hard; the gold class is never tied to d.

FamilyFn = Callable[[np.random.Generator, int, float, float, int], _Scene]

QUESTIONS: dict[str, tuple[str, ...]] = {
    "count_beeps": ("How many beeps do you hear?", "How many beeps are there in this clip?"),
    "order_tone_noise": ("Which comes first: the tone or the noise burst?",
                         "Which sound starts earlier, the steady tone or the burst of noise?"),
    "louder_first_second": ("Which of the two tones is louder?", "Of the two tones, which one is louder?"),
    "longer_first_second": ("Which of the two tones lasts longer?", "Of the two tones, which one is longer?"),
    "chirp_direction": ("Is the pitch of the sweep rising or falling?", "Does this sweep go up or down in pitch?"),
    "pitch_high_low": ("Is this tone high (above 500 Hz) or low (below 500 Hz)?",
                       "Is the pitch of this tone high (over 500 Hz) or low (under 500 Hz)?"),
    "pitch_compare": ("Which of the two tones is higher in pitch?", "Which tone has the higher pitch?"),
    "tempo_fast_slow": ("Is this click rhythm fast (at least 120 BPM) or slow (at most 90 BPM)?",
                        "Are the clicks at a fast tempo (120 BPM or more) or a slow one (90 BPM or less)?"),
    "chord_major_minor": ("Is this chord major or minor?", "Does this chord sound major or minor?"),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "count_beeps": ("2", "3", "4", "5"),
    "order_tone_noise": ("the tone", "the noise"),
    "louder_first_second": ("the first tone", "the second tone"),
    "longer_first_second": ("the first tone", "the second tone"),
    "chirp_direction": ("rising", "falling"),
    "pitch_high_low": ("high", "low"),
    "pitch_compare": ("the first tone", "the second tone"),
    "tempo_fast_slow": ("fast", "slow"),
    "chord_major_minor": ("major", "minor"),
}

TASK_OF_FAMILY: dict[str, str] = {
    "count_beeps": "sound", "order_tone_noise": "sound", "louder_first_second": "sound",
    "longer_first_second": "sound", "chirp_direction": "sound",
    "pitch_high_low": "music", "pitch_compare": "music", "tempo_fast_slow": "music", "chord_major_minor": "music",
}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _span(onset: float, dur: float) -> str:
    return f"from {onset:.2f} s to {onset + dur:.2f} s"


def _noise(snr_db: float) -> str:
    return f" Background noise at {snr_db:.0f} dB SNR."


# The inverses of `_span` and `_noise`, kept beside them so the two change together.
_SPANS = re.compile(r" from \d+\.\d{2} s to \d+\.\d{2} s")
_NOISE = re.compile(r" Background noise at -?\d+ dB SNR\.")


def scene_caption(caption: str) -> str:
    """A ground-truth caption without clock times and noise level: they bear on no answer, and they
    are the hardest tokens of a chain for a small model to guess (families that need times, like
    counting and order, state them in the template's reasoning)."""
    return _NOISE.sub("", _SPANS.sub("", caption)).strip()


def count_beeps(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    k = cls + 2
    freq = _log_uniform(rng, 500, 2000)
    # Total beep time and total silence between beeps are drawn independently of the count, so
    # overall energy and "how much of the clip sounds" say nothing about k. Harder: less silence.
    durs = _split(rng, rng.uniform(0.45, 0.75), k, 0.2)
    gaps = _split(rng, _lerp(1.6, 0.35, d) * rng.uniform(0.85, 1.15), k - 1, 0.3)
    onsets = _place(rng, list(durs), list(gaps), clip_s)
    snr = _snr(d, 30, 3)
    events = [_Event(t, _tone(rng, freq, dur, sr)) for t, dur in zip(onsets, durs)]
    when = ", ".join(f"{t:.2f}-{t + dur:.2f} s" for t, dur in zip(onsets, durs))
    return _Scene(events, snr, f"{k} beeps at {freq:.0f} Hz ({when}).",
                  {"count": k, "freq_hz": _r(freq, 1), "onsets_s": [_r(t) for t in onsets],
                   "durations_s": [_r(x) for x in durs]})


def order_tone_noise(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    freq = _log_uniform(rng, 300, 2000)
    lo, hi = _lerp(0.5, 0.2, d), _lerp(0.9, 0.4, d)  # harder: shorter events, closer together
    tone_dur, noise_dur = rng.uniform(lo, hi), rng.uniform(lo, hi)
    gap = rng.uniform(_lerp(0.3, 0.05, d), _lerp(0.8, 0.2, d))
    tone_first = cls == 0
    durs = [tone_dur, noise_dur] if tone_first else [noise_dur, tone_dur]
    onsets = _place(rng, durs, [gap], clip_s)
    tone_on, noise_on = onsets if tone_first else onsets[::-1]
    events = [_Event(tone_on, _tone(rng, freq, tone_dur, sr)), _Event(noise_on, _noise_burst(rng, noise_dur, sr))]
    parts = [(tone_on, f"a tone at {freq:.0f} Hz {_span(tone_on, tone_dur)}"),
             (noise_on, f"a noise burst {_span(noise_on, noise_dur)}")]
    first, second = sorted(parts)
    return _Scene(events, _snr(d, 30, 6), f"{_cap(first[1])}, then {second[1]}.",
                  {"first": "tone" if tone_first else "noise", "tone_hz": _r(freq, 1),
                   "tone_onset_s": _r(tone_on), "tone_duration_s": _r(tone_dur),
                   "noise_onset_s": _r(noise_on), "noise_duration_s": _r(noise_dur)})


def _two_tones(rng: np.random.Generator, freqs: tuple[float, float], durs: tuple[float, float],
               gains_db: tuple[float, float], gap: float, clip_s: float, sr: int) -> tuple[list[_Event], str, dict]:
    """Two tones in sequence; shared by the first-vs-second families."""
    onsets = _place(rng, list(durs), [gap], clip_s)
    events = [_Event(t, _tone(rng, f, dur, sr), g) for t, f, dur, g in zip(onsets, freqs, durs, gains_db)]
    level = [f" ({g:+.1f} dB)" if any(gains_db) else "" for g in gains_db]
    desc = [f"a tone at {f:.0f} Hz{lv} {_span(t, dur)}" for t, f, dur, lv in zip(onsets, freqs, durs, level)]
    params = {"freqs_hz": [_r(f, 1) for f in freqs], "onsets_s": [_r(t) for t in onsets],
              "durations_s": [_r(x) for x in durs], "gains_db": [_r(g, 2) for g in gains_db]}
    return events, f"{_cap(desc[0])}, then {desc[1]}.", params


def louder_first_second(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    freq = _log_uniform(rng, 250, 2000)  # one frequency for both: the level is the only difference
    delta = _lerp(12.0, 1.5, d)  # harder: smaller level difference
    gains = (delta / 2, -delta / 2) if cls == 0 else (-delta / 2, delta / 2)
    durs = (rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.9))
    events, caption, params = _two_tones(rng, (freq, freq), durs, gains, rng.uniform(0.2, 0.8), clip_s, sr)
    return _Scene(events, _snr(d, 30, 12), caption, {"louder": cls + 1, "delta_db": _r(delta, 2), **params})


def longer_first_second(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    freq = _log_uniform(rng, 250, 2000)
    long = rng.uniform(0.6, 1.2)
    ratio = _lerp(0.4, 0.85, d)  # harder: durations closer together
    durs = (long, long * ratio) if cls == 0 else (long * ratio, long)
    events, caption, params = _two_tones(rng, (freq, freq), durs, (0.0, 0.0), rng.uniform(0.2, 0.7), clip_s, sr)
    return _Scene(events, _snr(d, 30, 10), caption, {"longer": cls + 1, "ratio": _r(ratio), **params})


def chirp_direction(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    lo = _log_uniform(rng, 250, 1000)
    octaves = _lerp(2.0, 0.25, d)  # harder: a smaller sweep
    hi = lo * 2**octaves
    f0, f1 = (lo, hi) if cls == 0 else (hi, lo)  # falling = rising reversed in time: same global stats
    dur = rng.uniform(0.5, 1.4)
    (onset,) = _place(rng, [dur], [], clip_s)
    return _Scene([_Event(onset, _sweep(rng, f0, f1, dur, sr))], _snr(d, 30, 6),
                  f"A sweep {'rising' if cls == 0 else 'falling'} from {f0:.0f} Hz to {f1:.0f} Hz {_span(onset, dur)}.",
                  {"direction": CHOICES["chirp_direction"][cls], "f_start_hz": _r(f0, 1), "f_end_hz": _r(f1, 1),
                   "octaves": _r(octaves), "onset_s": _r(onset), "duration_s": _r(dur)})


PITCH_BOUNDARY_HZ = 500.0


def pitch_high_low(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    # Harder: deeper in noise, from +30 dB (plain) down to -40 dB, past the point (about -25 dB) where
    # even a spectral peak picker over the tone's span loses it: the knob runs from what a small model
    # hears at once to what it cannot hear. The tone sits 1/2 to 2 octaves from the 500 Hz boundary.
    octaves = rng.uniform(0.5, 2.0)
    freq = PITCH_BOUNDARY_HZ * 2**octaves if cls == 0 else PITCH_BOUNDARY_HZ / 2**octaves
    dur = rng.uniform(0.4, 1.2)
    snr = _snr(d, 30, -40)
    (onset,) = _place(rng, [dur], [], clip_s)
    return _Scene([_Event(onset, _tone(rng, freq, dur, sr))], snr,
                  f"A tone at {freq:.0f} Hz {_span(onset, dur)}.",
                  {"freq_hz": _r(freq, 1), "octaves_from_boundary": _r(octaves), "onset_s": _r(onset),
                   "duration_s": _r(dur)})


def pitch_compare(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    centre = _log_uniform(rng, 200, 1600)
    semitones = _lerp(12.0, 0.5, d)  # harder: closer pitches
    low, high = centre * 2 ** (-semitones / 24), centre * 2 ** (semitones / 24)
    freqs = (high, low) if cls == 0 else (low, high)
    durs = (rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8))
    events, caption, params = _two_tones(rng, freqs, durs, (0.0, 0.0), rng.uniform(0.15, 0.6), clip_s, sr)
    return _Scene(events, _snr(d, 30, 10), caption, {"higher": cls + 1, "semitones": _r(semitones), **params})


_FAST_BPM, _SLOW_BPM = 120.0, 90.0


def tempo_fast_slow(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    spread = 2 ** (rng.uniform() * _lerp(0.6, 0.1, d))  # harder: closer to the class boundary
    bpm = _FAST_BPM * spread if cls == 0 else _SLOW_BPM / spread
    ioi = 60 / bpm
    # Fast and slow rhythms must not differ in where they sit or in overall energy: both cover a
    # stretch of the clip drawn independently of the tempo, and the clicks share a fixed total
    # duration (a fast rhythm has more, shorter clicks, so the same peak and energy).
    stretch = rng.uniform(0.5, 0.8) * (clip_s - 2 * MARGIN_S)
    n = max(3, int(round(stretch / ioi)) + 1)
    click_s = rng.uniform(0.3, 0.45) / n
    click = _click(rng, rng.uniform(1500, 3000), click_s, sr)
    onsets = _place(rng, [click_s] * n, [ioi - click_s] * (n - 1), clip_s)
    events = [_Event(t, click) for t in onsets]
    return _Scene(events, _snr(d, 30, 6),
                  f"{n} clicks at {bpm:.0f} BPM {_span(onsets[0], onsets[-1] - onsets[0] + click_s)}.",
                  {"bpm": _r(bpm, 2), "n_clicks": n, "click_s": _r(click_s, 4), "onsets_s": [_r(t) for t in onsets]})


_HARMONICS = (1.0, 0.5, 0.25)  # a soft, organ-like timbre; the same for both classes


def chord_major_minor(rng: np.random.Generator, cls: int, d: float, clip_s: float, sr: int) -> _Scene:
    root = _log_uniform(rng, 130, 440)
    intervals = [0, 4, 7] if cls == 0 else [0, 3, 7]
    # Harder: more often an inversion (the lowest notes moved up an octave), and lower SNR.
    inversion = int(rng.integers(1, 3)) if rng.uniform() < _lerp(0.0, 0.67, d) else 0
    intervals = sorted(intervals[inversion:] + [s + 12 for s in intervals[:inversion]])
    dur = rng.uniform(0.8, 1.6)
    (onset,) = _place(rng, [dur], [], clip_s)
    freqs = [root * 2 ** (s / 12) for s in intervals]
    chord = sum(_tone(rng, f, dur, sr, _HARMONICS) for f in freqs) / len(freqs)
    quality = CHOICES["chord_major_minor"][cls]
    notes = ", ".join(f"{f:.0f}" for f in freqs) + " Hz" + (f", inversion {inversion}" if inversion else "")
    return _Scene([_Event(onset, chord)], _snr(d, 30, 8), f"A {quality} triad ({notes}) {_span(onset, dur)}.",
                  {"quality": quality, "root_hz": _r(root, 1), "freqs_hz": [_r(f, 1) for f in freqs],
                   "inversion": inversion, "onset_s": _r(onset), "duration_s": _r(dur)})


FAMILIES: dict[str, FamilyFn] = {
    "count_beeps": count_beeps,
    "order_tone_noise": order_tone_noise,
    "louder_first_second": louder_first_second,
    "longer_first_second": longer_first_second,
    "chirp_direction": chirp_direction,
    "pitch_high_low": pitch_high_low,
    "pitch_compare": pitch_compare,
    "tempo_fast_slow": tempo_fast_slow,
    "chord_major_minor": chord_major_minor,
}


# --------------------------------------------------------------------------------------------
# Public API


def _rng(family: str, index: int, seed: int) -> np.random.Generator:
    """An independent stream per (family, seed, index); crc32, not hash(), so it is stable across runs."""
    return np.random.default_rng([zlib.crc32(family.encode()), seed % 2**64, index % 2**64])


def generate_example(family: str, index: int, seed: int, *, clip_seconds: float = 3.6,
                     sample_rate: int = 16000) -> SyntheticExample:
    """One item of `family`; identical for identical (family, index, seed, clip_seconds, sample_rate)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if clip_seconds < MIN_CLIP_SECONDS:
        raise ValueError(f"clip_seconds must be at least {MIN_CLIP_SECONDS}, got {clip_seconds}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be at least {MIN_SAMPLE_RATE}, got {sample_rate}")
    rng = _rng(family, index, seed)
    choices = CHOICES[family]
    cls = int(rng.integers(len(choices)))  # balanced gold: uniform over classes, independent of all else
    difficulty = round(float(rng.uniform()), 3)
    question = QUESTIONS[family][int(rng.integers(len(QUESTIONS[family])))]
    scene = FAMILIES[family](rng, cls, difficulty, clip_seconds, sample_rate)
    audio, rms_dbfs = _render(scene, rng, clip_seconds, sample_rate)
    caption = scene.caption + _noise(scene.snr_db)
    params = {"class": cls, **scene.params, "snr_db": scene.snr_db, "rms_dbfs": _r(rms_dbfs, 2),
              "clip_seconds": clip_seconds, "sample_rate": sample_rate}
    return SyntheticExample(
        source_id=f"{family}-{seed}-{index}", family=family, task=TASK_OF_FAMILY[family], question=question,
        choices=list(choices), answer=choices[cls], caption=caption, difficulty=difficulty, params=params,
        audio=audio)


def family_cycle(families: list[str] | dict[str, int] | None) -> list[str]:
    """The round-robin order of families: all of them by default; a mapping repeats each family by
    its weight ({a: 3, b: 1} -> a, a, a, b, a, a, a, b, ...)."""
    if not families:
        return list(FAMILIES)
    if isinstance(families, dict):
        return [name for name, weight in families.items() for _ in range(weight)]
    return list(families)


def generate(n: int, seed: int, *, families: list[str] | dict[str, int] | None = None, clip_seconds: float = 3.6,
             sample_rate: int = 16000, start: int = 0) -> Iterator[SyntheticExample]:
    """Items start .. start+n-1, families in round-robin order (`family_cycle`); item i depends only on
    (seed, i, families), so a build can resume at `start`."""
    names = family_cycle(families)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    for i in range(start, start + n):
        yield generate_example(names[i % len(names)], i, seed, clip_seconds=clip_seconds, sample_rate=sample_rate)


def prepare(config: SyntheticSource, seed: int, audio_dir: Path) -> Iterator[Item | Quarantine]:
    """The synthetic source as corpus records: each example's clip is stored content-addressed and
    its construction (family, difficulty knob, parameters) kept in `meta` for later checks."""
    for ex in generate(config.n_items, seed, families=config.families, clip_seconds=config.clip_seconds,
                       sample_rate=config.sample_rate):
        audio = save_clip(audio_dir, ex.audio, config.sample_rate)
        yield item_or_quarantine(
            ex.source_id, id=make_item_id(config.name, ex.source_id), source=config.name,
            source_id=ex.source_id, audio=audio, question=ex.question, choices=list(ex.choices),
            answer=ex.answer, answer_index=ex.choices.index(ex.answer), task=ex.task, category=ex.family,
            caption=ex.caption, caption_source="ground-truth", license=config.license,
            meta={"family": ex.family, "difficulty": ex.difficulty, "params": ex.params},
        )
