"""Content-addressed clips: the same 16-bit PCM is stored once, under the hash of its samples."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from corpus.records import AudioRef


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] (mono) to int16, the form that is hashed and stored."""
    clipped = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    return np.round(clipped * 32767).astype("<i2")


def pcm_sha256(pcm16: np.ndarray, sample_rate: int) -> str:
    """Hash of the decoded PCM (and its rate), so re-encoding the same audio gives the same id."""
    digest = hashlib.sha256(f"{sample_rate}:".encode())
    digest.update(np.ascontiguousarray(pcm16, dtype="<i2").tobytes())
    return digest.hexdigest()


def save_clip(audio_dir: Path, samples: np.ndarray, sample_rate: int) -> AudioRef:
    """Store a mono clip as 16-bit WAV at audio/<h[:2]>/<h>.wav; a no-op if it is already there.
    int16 samples are stored as they are (bit-exact); float samples are converted."""
    pcm = samples if samples.dtype == np.int16 else to_pcm16(samples)
    sha = pcm_sha256(pcm, sample_rate)
    relative = Path("audio") / sha[:2] / f"{sha}.wav"
    target = audio_dir.parent / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{sha}.{os.getpid()}.tmp.wav")
        sf.write(tmp, pcm, sample_rate, subtype="PCM_16")
        os.replace(tmp, target)  # atomic: a killed write never leaves a half clip under the real name
    return AudioRef(sha256=sha, path=relative.as_posix(), duration_s=len(pcm) / sample_rate,
                    sample_rate=sample_rate, channels=1)


def under_root(root: Path, relative: str) -> Path | None:
    """`relative` joined to `root`, or None when it is written to escape it (`..` out of the root,
    an absolute path elsewhere).

    Judged on the path as written, not on where symlinks lead: a folder or clip the user linked
    under the root (audio on a bigger disk) is followed; a manifest's `../` is not. An absolute
    path is accepted when it lies inside the root, or inside the folder a linked root points to."""
    root = Path(os.path.abspath(root))
    path = Path(os.path.normpath(root / relative))  # an absolute `relative` replaces the root
    if not Path(relative).is_absolute():
        return path if path.is_relative_to(root) else None
    real_root = Path(os.path.realpath(root))
    return path if path.is_relative_to(root) or path.is_relative_to(real_root) else None


def load_clip(root: Path, ref: AudioRef) -> np.ndarray:
    """A stored clip as float32 mono samples, at its stored rate."""
    return read_audio(root / ref.path, ref.sample_rate)


def read_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """Any file soundfile decodes (wav/flac/ogg/mp3), as float32 mono at `sample_rate`."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        import librosa  # imported lazily: its first call compiles numba code

        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate)
    return mono.astype(np.float32)
