"""Fixture writers for tests and benchmarks: audio files in every format and state we must
handle, and source tables (clean or deliberately dirty) that point at them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from corpus.testing import scene_clip

RATE = 16000


def write(path: Path, samples: np.ndarray, rate: int = RATE, subtype: str | None = None) -> Path:
    """Write audio in the format the suffix names (wav/flac/ogg/mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return path


def variant(samples: np.ndarray, how: str, folder: Path, name: str) -> Path:
    """The same recording changed the way corpora change it: re-encoded, resampled, gain, cropped."""
    if how == "mp3":
        return write(folder / f"{name}.mp3", samples)
    if how == "flac":
        return write(folder / f"{name}.flac", samples)
    if how == "ogg":
        return write(folder / f"{name}.ogg", samples)
    if how == "resample44k":
        return write(folder / f"{name}.wav", soxr.resample(samples, RATE, 44100), 44100)
    if how == "gain":
        return write(folder / f"{name}.wav", samples * 0.25)
    if how == "crop":  # a small crop at both ends, at an odd sample offset
        return write(folder / f"{name}.wav", samples[int(0.73 * RATE) + 17: -int(0.41 * RATE)])
    if how == "stereo":
        return write(folder / f"{name}.wav", np.stack([samples, 0.8 * samples], 1))
    raise ValueError(how)


VARIANTS = ("mp3", "flac", "ogg", "resample44k", "gain", "crop", "stereo")


def sparse_long_wav(path: Path, hours: float = 3.0, rate: int = 8000) -> Path:
    """A valid 16-bit WAV of `hours` of silence that costs no disk: a header, then a sparse hole."""
    n_bytes = int(hours * 3600 * rate) * 2
    header = b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", n_bytes)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + n_bytes)
    return path


def truncated(path: Path, samples: np.ndarray) -> Path:
    """A file cut in half after it was written (a broken download)."""
    write(path, samples)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    return path


def avqa_row(index: int, audio_path: str, **overrides) -> dict:
    row = {"id": index, "video_name": f"v{index:05d}", "video_id": index, "question_text":
           f"What is making the sound in the video number {index}?", "multi_choice":
           [f"dog {index}", f"car {index}", f"bell {index}", f"rain {index}"], "answer": index % 4,
           "question_relation": "View", "question_type": "Which", "dataset_name": "VGGSound", "audio_path": audio_path}
    row.update(overrides)
    return row


def write_jsonl(path: Path, rows: list[dict | bytes | str]) -> Path:
    """Rows as JSONL; bytes and str entries are written as raw lines (for malformed input)."""
    with path.open("wb") as f:
        for row in rows:
            if isinstance(row, bytes):
                f.write(row + b"\n")
            elif isinstance(row, str):
                f.write(row.encode() + b"\n")
            else:
                f.write(json.dumps(row).encode() + b"\n")
    return path


def dirty_avqa(folder: Path, n_good: int = 12) -> tuple[Path, dict[str, int]]:
    """An AVQA JSONL with `n_good` good rows (in every format) and one row per kind of bad input.
    Returns the file and the quarantine reasons it must produce, with their counts."""
    audio = folder / "audio"
    rows: list[dict | bytes | str] = []
    for i in range(n_good):
        clip = scene_clip(i, seconds=4.0)
        how = VARIANTS[i % len(VARIANTS)] if i % 2 else "flac"
        rel = variant(clip, how, audio, f"good{i}").relative_to(audio).as_posix()
        rows.append(avqa_row(i, rel))
    rng = np.random.default_rng(0)
    bad = {
        "undecodable_audio": write_bytes(audio / "corrupt.wav", b"RIFF\x24\x00\x00\x00WAVEjunk" + rng.bytes(3000)),
        "truncated_audio": truncated(audio / "cut.flac", scene_clip(101, 4.0)),
        "non_finite_samples": write(audio / "nan.wav", np.where(np.arange(RATE * 2) % 997 == 0, np.nan,
                                                                scene_clip(102, 2.0)).astype(np.float32), subtype="FLOAT"),
        "silent_audio": write(audio / "silent.wav", np.zeros(RATE * 2, np.float32)),
        "clipped_audio": write(audio / "clipped.wav", np.clip(scene_clip(103, 2.0) * 40, -1, 1)),
        "too_short": write(audio / "short.wav", scene_clip(104, 0.2)),
        "too_long": sparse_long_wav(audio / "three_hours.wav"),
        "zero_length_audio": write(audio / "empty.wav", np.zeros(0, np.float32)),
    }
    reasons = {reason: 1 for reason in bad}
    for j, (reason, path) in enumerate(bad.items()):
        rows.append(avqa_row(100 + j, path.relative_to(audio).as_posix()))
    write(folder / "outside.wav", scene_clip(105, 2.0))
    rows += [
        avqa_row(200, "nowhere.wav"),  # missing_audio
        avqa_row(201, "../outside.wav"),  # path_escapes_root (the file exists, outside the root)
        avqa_row(202, "good1.wav", answer=7),  # answer_not_in_choices
        avqa_row(203, "good1.wav", question_text=123),  # invalid_question (wrong type)
        avqa_row(204, "good1.wav", multi_choice="dog, car"),  # invalid_choices (wrong type)
        avqa_row(205, "good1.wav", multi_choice=["dog", "dog", "car", "rain"]),  # duplicate_choices
        '{"id": 206, "question_text": "broken',  # malformed_json
        b'{"id": 207, "question_text": "caf\xe9 \xff"}',  # not_utf8
        "[1, 2, 3]",  # malformed_json (not an object)
        {**avqa_row(208, "good0.flac"), "id": None},  # missing_id
        "",  # a blank line is not a record
    ]
    reasons.update(missing_audio=1, path_escapes_root=1, answer_not_in_choices=1, invalid_question=1,
                   invalid_choices=1, duplicate_choices=1, malformed_json=2, not_utf8=1, missing_id=1)
    # duplicates of good rows: same audio file, same question and options, another id
    rows.append({**rows[0], "id": 300})
    rows.append({**rows[2], "id": 301, "question_text": rows[2]["question_text"] + "  "})  # near-same text
    reasons["duplicate_item"] = 2
    return write_jsonl(folder / "avqa.jsonl", rows), reasons


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


MMAR_MODALITIES = ("sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech",
                   "mix-sound-music-speech")
MMAR_CATEGORIES = ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer")


def mmar_rows(n: int, prefix: str = "mmar") -> list[dict]:
    """MMAR-meta.jsonl-style records: every modality and category, MMAR's answer explanations
    (`thinking`, `cue`, `rubric`, which must never reach a prompt), and, like four real MMAR items,
    an empty option in every fifth record."""
    rows = []
    for i in range(n):
        choices = [f"a bell {i}", f"a dog {i}", f"rain falling {i}", f"a car horn {i}"]
        if i % 5 == 3:
            choices[-1] = ""
        rows.append({"id": f"{prefix}{i:03d}", "audio_path": f"./audio/{prefix}{i:03d}.wav",
                     "question": f"Which sound is heard first in clip {i}?", "choices": choices,
                     "answer": choices[i % 3], "modality": MMAR_MODALITIES[i % 7], "category": MMAR_CATEGORIES[i % 4],
                     "sub-category": ["Counting", "Temporal Order", "Emotion"][i % 3], "language": "en",
                     "source": "youtube", "url": "", "timestamp": "", "thinking": f"LEAK-THINKING {i}",
                     "cue": [f"LEAK-CUE {i}"], "rubric": [{"name": f"LEAK-RUBRIC {i}", "choices": [0, 1]}]})
    return rows


def speech_like_clip(seed: int, seconds: float = 4.0) -> np.ndarray:
    """Syllables of a voiced source (a glottal pulse train at a wandering pitch) through moving
    formants, with pauses: the time-frequency texture of speech, which MMAU draws from MELD."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    start = int(rng.uniform(0, 0.2) * RATE)
    while start < n:
        length = min(int(rng.uniform(0.12, 0.35) * RATE), n - start)
        t = np.arange(length) / RATE
        f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 30))
        spectrum = np.fft.rfft(voice)
        freqs = np.fft.rfftfreq(length, 1 / RATE)
        gain = sum(np.exp(-0.5 * ((freqs - f) / 80) ** 2) for f in (rng.uniform(300, 900), rng.uniform(900, 2500),
                                                                       rng.uniform(2500, 3500)))
        syllable = np.fft.irfft(spectrum * (0.05 + gain), length)
        out[start:start + length] += syllable * np.hanning(length) / (np.abs(syllable).max() + 1e-9)
        start += length + int(rng.uniform(0.03, 0.4) * RATE)
    return (0.3 * out / (np.abs(out).max() + 1e-9) + 0.002 * rng.standard_normal(n)).astype(np.float32)


def music_like_clip(seed: int, seconds: float = 4.0) -> np.ndarray:
    """Notes of a harmonic instrument on a beat, two voices, each note decaying: music's texture
    (MMAU draws from MusicBench)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    beat = rng.uniform(0.2, 0.5)
    for voice in range(2):
        for onset in np.arange(0, seconds, beat * (1 + voice)):
            length = min(int(beat * (1 + voice) * RATE), n - int(onset * RATE))
            t = np.arange(length) / RATE
            f = 110 * 2 ** (rng.integers(0, 36) / 12) * (2 if voice == 0 else 1)
            note = sum(np.sin(2 * np.pi * k * f * t) * 0.6 ** k for k in range(1, 8)) * np.exp(-t * rng.uniform(2, 8))
            start = int(onset * RATE)
            out[start:start + length] += note * (0.6 if voice else 1.0)
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def with_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise added at `snr_db` below the clip's mean power."""
    power = float(np.mean(np.square(samples.astype(np.float64))))
    noise = np.random.default_rng(seed).standard_normal(len(samples)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (samples + noise).astype(np.float32)


# Planted overlaps: benchmark items hidden in a training source, changed the ways copies change.
AUDIO_KINDS = ("exact copy", "resampled to 44.1 kHz", "gain -12 dB", "cropped", "padded with 1 s of silence",
               "shifted by 0.37 s", "MP3", "OGG", "MP3 at a low bit rate", "OGG at low quality", "white noise at 20 dB S/N")
TEXT_CASES = (  # a benchmark question, then with one and with two words swapped for synonyms; its options
    ("Which instrument plays the main melody in this recording?", "Which instrument performs the main melody in this "
     "recording?", "Which instrument performs the main tune in this recording?", ["violin", "piano", "flute", "trumpet"]),
    ("What is the mood of the music in this clip?", "What is the feeling of the music in this clip?",
     "What is the feeling of the music in this excerpt?", ["calm", "angry", "joyful", "sad"]),
    ("How many times does the dog bark before the car passes?", "How many times does the dog bark before the "
     "vehicle passes?", "How many times does the hound bark before the vehicle passes?", ["one", "two", "three", "four"]),
)
TEXT_KINDS = ("question copied", "one word swapped", "two words swapped")
CLEAN_KINDS = ("unrelated clip", "other question, same options", "same question, other options")


def planted_clip(index: int, seconds: float = 5.0) -> np.ndarray:
    """Clip `index` of the planted-overlap set: scene, speech-like and music-like in turn."""
    kind = index % 3
    return [scene_clip, speech_like_clip, music_like_clip][kind](index * 7 + kind, seconds)


def changed(samples: np.ndarray, kind: str, folder: Path, name: str) -> str:
    """The clip written as `kind` changes it; returns the file name."""
    encoded = {"MP3": ("mp3", None), "OGG": ("ogg", None), "MP3 at a low bit rate": ("mp3", 0.9),
               "OGG at low quality": ("ogg", 0.9)}
    if kind in encoded:
        suffix, level = encoded[kind]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{name}.{suffix}", samples, RATE, compression_level=level)
        return f"{name}.{suffix}"
    if kind == "resampled to 44.1 kHz":
        return write(folder / f"{name}.wav", soxr.resample(samples, RATE, 44100), 44100).name
    samples = {"exact copy": samples, "gain -12 dB": samples * 0.25,
               "cropped": samples[int(0.73 * RATE) + 17: -int(0.41 * RATE)],
               "padded with 1 s of silence": np.concatenate([np.zeros(RATE // 2), samples, np.zeros(RATE // 2)]),
               "shifted by 0.37 s": samples[int(0.37 * RATE):],
               "white noise at 20 dB S/N": with_noise(samples, 20, seed=len(name))}[kind]
    return write(folder / f"{name}.wav", np.asarray(samples, np.float32)).name


def planted_overlaps(folder: Path, n_clean: int = 60) -> tuple[Path, Path, dict[str, tuple[str, str | None]]]:
    """A benchmark (MMAU format, with audio) and an AVQA source that hides its items: every audio
    kind on one scene, one speech-like and one music-like clip; every text kind on each of the
    TEXT_CASES; and n_clean unrelated items plus near-miss texts that must not be flagged.
    Returns the source, the benchmark file, and per source id (kind, the benchmark id it copies)."""
    bench, train = folder / "bench", folder / "train"
    records, rows, truth = [], [], {}
    for k, kind in enumerate(AUDIO_KINDS):
        for j in range(3):
            b = 3 * k + j
            clip = planted_clip(b)
            write(bench / f"b{b}.wav", clip)
            records.append({"id": f"b{b}", "audio_id": f"b{b}.wav", "question": f"What happens in benchmark scene {b}?",
                            "choices": [f"event {b}", f"other {b}", f"nothing {b}", f"both {b}"], "answer": f"event {b}"})
            rows.append(avqa_row(len(rows), changed(clip, kind, train, f"p{b}")))
            truth[str(len(rows) - 1)] = (kind, f"b{b}")
    for c, (question, one, two, choices) in enumerate(TEXT_CASES):
        b = len(records)
        write(bench / f"b{b}.wav", planted_clip(1000 + c))
        records.append({"id": f"b{b}", "audio_id": f"b{b}.wav", "question": question, "choices": choices,
                        "answer": choices[0]})
        for kind, text in zip(TEXT_KINDS, (question, one, two)):
            clip = write(train / f"t{c}{kind[0]}.wav", planted_clip(2000 + 10 * c + len(kind))).name
            rows.append(avqa_row(len(rows), clip, question_text=text, multi_choice=choices[::-1], answer=1))
            truth[str(len(rows) - 1)] = (kind, f"b{b}")
        near_misses = [(f"Which of these is the loudest at the end of clip {c}?", choices),
                       (question, [f"{o} solo" for o in ("drum", "harp", "voice", "choir")])]
        for kind, (text, options) in zip(CLEAN_KINDS[1:], near_misses):
            clip = write(train / f"n{c}{kind[0]}.wav", planted_clip(3000 + 10 * c + len(kind))).name
            rows.append(avqa_row(len(rows), clip, question_text=text, multi_choice=options, answer=0))
            truth[str(len(rows) - 1)] = (kind, None)
    for i in range(n_clean):
        rows.append(avqa_row(len(rows), write(train / f"c{i}.wav", planted_clip(5000 + i)).name))
        truth[str(len(rows) - 1)] = ("unrelated clip", None)
    (bench / "bench.json").write_text(json.dumps([r | {"task": "sound"} for r in records]))
    return write_jsonl(train / "train.jsonl", rows), bench / "bench.json", truth


def overlap_table(flagged: dict[str, set[str]], truth: dict[str, tuple[str, str | None]]) -> list[dict]:
    """Per kind: planted items and how many were found with the right benchmark item, or clean
    items and how many were flagged at all. `flagged`: source id -> benchmark ids found."""
    table = []
    for kind in (*AUDIO_KINDS, *TEXT_KINDS, *CLEAN_KINDS):
        ids = [sid for sid, (k, _) in truth.items() if k == kind]
        planted = truth[ids[0]][1] is not None
        hits = [sid for sid in ids if (truth[sid][1] in flagged.get(sid, set()) if planted else flagged.get(sid))]
        table.append({"kind": kind, "items": len(ids), "found" if planted else "flagged": len(hits),
                      "planted": planted})
    return table
