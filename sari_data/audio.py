"""Audio check and normalisation: decode, validate, mix to mono, resample to 16 kHz, store
content-addressed, fingerprint. Runs in a small process pool over a bounded window, so a corpus
of any size streams through in constant memory.

A clip that fails a check becomes a (reason, message) pair; the caller turns it into a
quarantine record with the row's locator. Reason codes: missing_audio, path_escapes_root,
undecodable_audio, truncated_audio, zero_length_audio, non_finite_samples, silent_audio,
clipped_audio, too_short, too_long.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf
import soxr

from corpus.clips import load_clip, save_clip, under_root
from corpus.records import AudioRef
from sari_data.fingerprint import SAMPLE_RATE, fingerprint

Failure = tuple[str, str]  # (reason code, message)
AudioSource = Path | bytes  # a file on disk, or encoded bytes (a `datasets` Audio(decode=False) cell)


@dataclass(frozen=True)
class CheckSettings:
    """The bounds a clip must meet (from the recipe's `audio:` section)."""

    min_seconds: float = 0.5
    max_seconds: float = 60.0
    silence_dbfs: float = -60.0  # RMS below this is silence
    max_clipped_fraction: float = 0.01  # share of samples at full scale
    fingerprint: bool = True


def resolve_in_root(root: Path, relative: str) -> Path | Failure:
    """`relative` under `root`; a path written to escape the root (`..`, absolute) is refused, while
    symlinks the user placed under the root are followed (`corpus.clips.under_root`)."""
    path = under_root(root, relative)
    if path is None:
        return "path_escapes_root", f"{relative!r} is outside the audio root {os.path.abspath(root)}"
    if not path.is_file():
        return "missing_audio", f"no audio file at {path}"
    return path


def fingerprint_path(workspace: Path, sha256: str) -> Path:
    return workspace / "fingerprints" / sha256[:2] / f"{sha256}.npy"


def load_fingerprint(workspace: Path, sha256: str) -> np.ndarray | None:
    path = fingerprint_path(workspace, sha256)
    return np.load(path) if path.exists() else None


def decode(source: AudioSource, settings: CheckSettings) -> tuple[np.ndarray, int] | Failure:
    """Samples (frames, channels) float32 and rate, after the checks that need no decoding."""
    if (len(source) if isinstance(source, bytes) else source.stat().st_size) == 0:
        return "zero_length_audio", "the file is empty (0 bytes)"
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        info = sf.info(handle)
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        return "undecodable_audio", f"cannot read the audio header: {err}"
    if info.frames <= 0 or info.samplerate <= 0:
        return "zero_length_audio", "the file holds no samples"
    seconds = info.frames / info.samplerate
    if seconds > settings.max_seconds:  # decided from the header: a 3-hour file is never decoded
        return "too_long", f"{seconds:.1f} s is over the recipe's max_seconds {settings.max_seconds}"
    if "should be" in info.extra_info:  # libsndfile's note when a WAV header promises more than is there
        return "truncated_audio", "the header promises more data than the file holds"
    try:
        samples, rate = sf.read(handle, dtype=_read_dtype(info), always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        return "truncated_audio" if "sync" in str(err) or "truncat" in str(err) else "undecodable_audio", str(err)
    if len(samples) == 0:
        return "zero_length_audio", "decoding gave no samples"
    if len(samples) < 0.9 * info.frames:
        return "truncated_audio", f"decoded {len(samples)} of the {info.frames} frames the header announces"
    return samples, rate


def _read_dtype(info: sf._SoundFileInfo) -> str:
    """int16 for a 16-bit mono 16-kHz file, which needs no conversion and is then stored bit-exact
    (a float round trip scales by 1/32768 and back by 32767: 1 LSB off near full scale)."""
    as_stored = info.subtype == "PCM_16" and info.channels == 1 and info.samplerate == SAMPLE_RATE
    return "int16" if as_stored else "float32"


def normalise(samples: np.ndarray, rate: int, settings: CheckSettings) -> np.ndarray | Failure:
    """Mono 16 kHz float32 (int16 as read, when no conversion is needed), or why it is unusable."""
    as_read = samples[:, 0] if samples.dtype == np.int16 else None
    if as_read is not None:  # checked as the float reader would have given it
        samples = samples.astype(np.float32) / 32768
    # One cheap pass each: numpy reduces slowly over a short last axis, and BLAS calls spawn
    # threads that fight the worker processes, so channels are summed column by column.
    if not np.isfinite(samples.sum()):
        return "non_finite_samples", f"{int((~np.isfinite(samples)).sum())} NaN/inf samples"
    if max(samples.max(), -samples.min()) >= 0.999:
        clipped = np.count_nonzero(np.abs(samples) >= 0.999) / samples.size
        if clipped > settings.max_clipped_fraction:
            return "clipped_audio", f"{clipped:.1%} of samples at full scale (max {settings.max_clipped_fraction:.1%})"
    channels = samples.shape[1]
    mono = sum(samples[:, c] for c in range(channels)) / channels if channels > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return _check_mono(mono, settings) or (as_read if as_read is not None else mono.astype(np.float32))


def _check_mono(mono: np.ndarray, settings: CheckSettings) -> Failure | None:
    """Why a mono 16-kHz clip is unusable (length, silence), or None."""
    seconds = len(mono) / SAMPLE_RATE
    if seconds < settings.min_seconds:
        return "too_short", f"{seconds:.2f} s is under the recipe's min_seconds {settings.min_seconds}"
    if seconds > settings.max_seconds:
        return "too_long", f"{seconds:.1f} s is over the recipe's max_seconds {settings.max_seconds}"
    rms_db = 10 * np.log10(float(np.square(mono).mean()) + 1e-20)
    if rms_db < settings.silence_dbfs:
        return "silent_audio", f"RMS {rms_db:.1f} dBFS is under {settings.silence_dbfs} dBFS"
    return None


def check_audio(source: AudioSource, workspace: Path, settings: CheckSettings) -> AudioRef | Failure:
    """Decode, check, normalise and store one clip (and its fingerprint) in the workspace."""
    decoded = decode(source, settings)
    if isinstance(decoded, tuple) and isinstance(decoded[0], str):
        return decoded
    mono = normalise(*decoded, settings)
    if isinstance(mono, tuple):
        return mono
    ref = save_clip(workspace / "audio", mono, SAMPLE_RATE)
    target = fingerprint_path(workspace, ref.sha256)
    if settings.fingerprint and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{ref.sha256}.{os.getpid()}.tmp.npy")
        np.save(tmp, fingerprint(mono.astype(np.float32) / 32768 if mono.dtype == np.int16 else mono))
        os.replace(tmp, target)
    return ref


T = TypeVar("T")
U = TypeVar("U")


def ordered_map(fn: Callable[[T], U], inputs: Iterable[T], workers: int | str, window: int = 64) -> Iterator[U]:
    """`map(fn, inputs)` over `workers` local processes (<= 1: inline, no pool to start) or a Dask
    scheduler's workers (an address), in input order, with a bounded number in flight: memory
    stays flat however long `inputs` is, and every later step sees the order one process gives."""
    if isinstance(workers, str):
        from sari_data.cluster import dask_executor

        with dask_executor(workers) as (pool, slots):
            yield from _in_order(pool, fn, inputs, max(window, 2 * slots))
    elif workers <= 1:
        yield from map(fn, inputs)
    else:
        with ProcessPoolExecutor(workers) as pool:
            yield from _in_order(pool, fn, inputs, window)


def _in_order(pool: Executor, fn: Callable[[T], U], inputs: Iterable[T], window: int) -> Iterator[U]:
    pending: deque[Future[U]] = deque()
    for x in inputs:
        pending.append(pool.submit(fn, x))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass(frozen=True)
class _Checker:
    """A picklable `check_audio` with its workspace and settings bound."""

    workspace: Path
    settings: CheckSettings

    def __call__(self, source: AudioSource | Failure) -> AudioRef | Failure:
        if isinstance(source, tuple):
            return source
        try:
            return check_audio(source, self.workspace, self.settings)
        except Exception as err:  # a decoder crash on one odd file must not stop the build
            return "undecodable_audio", f"{type(err).__name__}: {err}"


def check_many(sources: Iterable[AudioSource | Failure], workspace: Path, settings: CheckSettings,
               workers: int | str = 2) -> Iterator[AudioRef | Failure]:
    """`check_audio` over many clips in parallel; a Failure passed in comes back unchanged."""
    return ordered_map(_Checker(workspace, settings), sources, workers)


def clip_fingerprint(workspace: Path, ref: AudioRef) -> np.ndarray:
    """A stored clip's fingerprint: the one the audio check saved, or computed now and saved."""
    stored = load_fingerprint(workspace, ref.sha256)
    if stored is not None:
        return stored
    samples = load_clip(workspace, ref)
    fp = fingerprint(samples)
    target = fingerprint_path(workspace, ref.sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, fp)
    return fp
