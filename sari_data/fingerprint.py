"""A robust audio fingerprint: finds the same recording after re-encoding, resampling, a gain
change or a small crop, where the PCM hash only finds bit-identical audio.

The fingerprint is Haitsma & Kalker's (2002) sub-fingerprint: per frame, 32 bits, each the sign of
the energy difference between adjacent log-spaced bands *and* between adjacent frames. Signs of
differences ignore gain, survive lossy coding (which perturbs energies a little, not their order)
and resampling (the bands stay below 4 kHz, inside any rate we accept). Frames overlap heavily
(128 ms window, 16 ms hop), so a crop by any number of samples lands near some frame grid.

Matching is the paper's too: candidate (clip, offset) pairs come from exact hits of 32-bit
sub-fingerprints in a hash table of postings, voted on; each candidate is verified by its bit error rate
(BER) over the overlapping frames. Same recording: BER well under 0.3; unrelated audio: about 0.5.
At a BER of 0.15 few 32-bit codes survive intact, so a query also looks up each code with its
K_WEAK least reliable bits (smallest energy differences) flipped every way: where the errors
fall, as the paper observes, so most frames find their twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal
import soxr

SAMPLE_RATE = 16000  # what callers pass in
FP_RATE = 8000  # what the fingerprint looks at: the bands end below 4 kHz, so half the FFT work
FRAME = 1024  # 128 ms at 8 kHz
HOP = 128  # 16 ms
N_BANDS = 33  # 33 bands give 32 band differences: one uint32 per frame
F_LO, F_HI = 300.0, 3800.0
MATCH_BER = 0.30  # verified match; unrelated clips sit near 0.5
K_WEAK = 5  # weak bits per frame flipped at query time (2^5 lookups per frame)
MIN_OVERLAP = 32  # frames (~0.5 s) that must overlap for a BER to mean anything
SECOND_LOOK_BER = 0.45  # decontamination checks the waveforms of candidates up to this BER
SAME_WAVEFORM = 0.8  # peak normalised cross-correlation: a copy under 20 dB noise ~0.99; unrelated audio < 0.45


def _band_edges() -> tuple[slice, np.ndarray]:
    """The FFT bins in use, and where each of the N_BANDS log-spaced bands starts among them."""
    edges = np.geomspace(F_LO, F_HI, N_BANDS + 1)
    freqs = np.fft.rfftfreq(FRAME, 1 / FP_RATE)
    used = np.flatnonzero((freqs >= F_LO) & (freqs < F_HI))
    bins = slice(int(used[0]), int(used[-1]) + 1)
    starts = np.searchsorted(freqs[bins], edges[:-1], side="left")
    assert len(np.unique(starts)) == N_BANDS, "every band needs at least one FFT bin"
    return bins, starts


BINS, BAND_STARTS = _band_edges()
WINDOW = np.hanning(FRAME).astype(np.float32)
BIT_WEIGHTS = (1 << np.arange(32, dtype=np.uint64)).astype(np.uint64)


def fingerprint(samples: np.ndarray) -> np.ndarray:
    """(frames, 2) uint32, one row per 16 ms frame of mono 16 kHz float samples: the
    sub-fingerprint, and a mask of its K_WEAK least reliable bits."""
    x = soxr.resample(np.asarray(samples, dtype=np.float32), SAMPLE_RATE, FP_RATE, quality="MQ")
    if len(x) < FRAME + HOP:
        x = np.pad(x, (0, FRAME + HOP - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * WINDOW
    spectrum = scipy.fft.rfft(frames, axis=1, overwrite_x=True)[:, BINS]  # float32 in, complex64 out
    # Band sums by reduceat, not a matrix product: BLAS threads would fight the worker processes.
    energy = np.log(np.add.reduceat(np.square(np.abs(spectrum)), BAND_STARTS, axis=1) + 1e-9)
    band_diff = energy[:, :-1] - energy[:, 1:]  # (frames, 32)
    margin = band_diff[1:] - band_diff[:-1]
    codes = ((margin > 0).astype(np.uint64) @ BIT_WEIGHTS).astype(np.uint32)
    weakest = np.argpartition(np.abs(margin), K_WEAK, axis=1)[:, :K_WEAK]
    weak = np.bitwise_or.reduce(np.left_shift(np.uint32(1), weakest.astype(np.uint32)), axis=1)
    return np.stack([codes, weak.astype(np.uint32)], axis=1)


SUBSETS = (np.arange(2**K_WEAK)[:, None] >> np.arange(K_WEAK)[None, :]) & 1  # (2^K, K): every subset


def variants(fp: np.ndarray) -> np.ndarray:
    """(frames, 2^K_WEAK) codes: each frame's code with its weak bits flipped every way."""
    codes, weak = fp[:, 0], fp[:, 1]
    bits = ((weak[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(bool)
    positions = np.argsort(~bits, axis=1, kind="stable")[:, :K_WEAK].astype(np.uint32)  # the set bits
    masks = np.left_shift(np.uint32(1), positions)  # (frames, K)
    out = np.repeat(codes[:, None], 2**K_WEAK, axis=1)
    for j in range(K_WEAK):
        out ^= np.where(SUBSETS[:, j][None, :] == 1, masks[:, j:j + 1], np.uint32(0))
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(x).view(np.uint8)).reshape(len(x), 32).sum(axis=1)


def ber(a: np.ndarray, b: np.ndarray, offset: int) -> float:
    """Bit error rate of fingerprint `b` against `a` when b's frame 0 aligns with a's frame `offset`."""
    return code_ber(a[:, 0], b[:, 0], offset)


def code_ber(a: np.ndarray, b: np.ndarray, offset: int) -> float:
    """`ber` on the codes alone (the weak-bit masks play no part in it)."""
    start_a, start_b = max(offset, 0), max(-offset, 0)
    n = min(len(a) - start_a, len(b) - start_b)
    if n < MIN_OVERLAP:
        return 1.0
    diff = np.bitwise_xor(a[start_a:start_a + n], b[start_b:start_b + n])
    return float(_popcount(diff).sum()) / (32 * n)


def waveform_similarity(a: np.ndarray, b: np.ndarray, offset: int, max_lag: int = 2 * HOP) -> float:
    """Peak normalised cross-correlation of 16 kHz clips `a` and `b` (b's frame 0 near a's frame
    `offset`, as a fingerprint match found it), over lags up to `max_lag` samples at 8 kHz. White
    noise at S/N = r leaves the peak near 1/sqrt(1 + 1/r) (0.995 at 20 dB); lossy coding keeps
    the waveform below a few kHz; unrelated audio sits near 0. A second stage for candidates whose
    bit error rate is ambiguous: both clips must be at hand."""
    x = soxr.resample(np.asarray(a, np.float32), SAMPLE_RATE, FP_RATE, quality="MQ").astype(np.float64)
    y = soxr.resample(np.asarray(b, np.float32), SAMPLE_RATE, FP_RATE, quality="MQ").astype(np.float64)
    start_a, start_b = max(offset, 0) * HOP, max(-offset, 0) * HOP
    n = min(len(x) - start_a, len(y) - start_b)
    if n < MIN_OVERLAP * HOP:
        return 0.0
    y = y[start_b:start_b + n]
    x = x[max(0, start_a - max_lag):min(len(x), start_a + n + max_lag)]
    corr = scipy.signal.correlate(x, y, mode="valid", method="fft")  # one value per lag
    energy = np.concatenate([[0.0], np.cumsum(np.square(x))])
    norms = np.sqrt((energy[n:] - energy[:-n]) * np.square(y).sum()) + 1e-12
    return float(np.max(np.abs(corr) / norms))


@dataclass
class Match:
    key: str
    offset: int  # frames; the query's frame 0 sits at this frame of the indexed clip
    ber: float

    @property
    def score(self) -> float:
        """1 for identical fingerprints, 0 at chance (BER 0.5)."""
        return round(max(0.0, 1 - 2 * self.ber), 4)


def _mix(codes: np.ndarray) -> np.ndarray:
    """A 32-bit hash of each code (Knuth's multiplicative), so similar codes land in different buckets."""
    return (codes.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)


def _grow(array: np.ndarray, size: int) -> np.ndarray:
    """`array` with room for at least `size` entries along axis 0 (capacity doubles: amortised O(1))."""
    if size <= len(array):
        return array
    out = np.zeros((max(size, 2 * len(array)), *array.shape[1:]), array.dtype)
    out[:len(array)] = array
    return out


class FingerprintIndex:
    """Indexed clips' sub-fingerprints for lookup while clips keep arriving (dedup adds and
    queries in turn), at a cost per query that does not grow with the number of clips.

    Postings (clip, frame) sit in a hash table of 2^b buckets of CAP slots, found by the hashed
    code; a bucket keeps its first CAP postings, so a code that recurs everywhere (silence, a
    steady hum) says nothing and costs nothing. The table doubles when it averages LOAD postings
    per bucket, so a query is frames x 2^K_WEAK x CAP array lookups whatever the index holds, and
    candidates are voted on in numpy. Every frame is posted: a copy after lossy coding (BER ~0.2)
    finds its twin in only a few frames, so posting every other frame loses short clips."""

    CAP = 8
    LOAD = 2

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._codes = np.zeros(0, np.uint32)  # every frame's code, clip after clip
        self._starts = np.zeros(1, np.int64)  # clip i's frames are _codes[_starts[i]:_starts[i + 1]]
        self._bits = 10
        self._slots = np.full((1 << self._bits, self.CAP), -1, np.int32)  # frame positions in _codes
        self._fill = np.zeros(1 << self._bits, np.int32)
        self._posted = 0

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, fp: np.ndarray) -> None:
        start = self._posted
        self._codes = _grow(self._codes, start + len(fp))
        self._codes[start:start + len(fp)] = fp[:, 0]
        self.keys.append(key)
        self._starts = _grow(self._starts, len(self.keys) + 1)
        self._starts[len(self.keys)] = start + len(fp)
        self._posted += len(fp)
        if self._posted > self.LOAD << self._bits:
            self._rehash()  # posts every clip again, this one included
        else:
            self._post(np.arange(start, start + len(fp), dtype=np.int32))

    def _bucket(self, codes: np.ndarray) -> np.ndarray:
        return (_mix(codes) >> np.uint64(32 - self._bits)).astype(np.int64)

    def _post(self, positions: np.ndarray) -> None:
        """Append postings to their buckets, in order; those past a full bucket's CAP are dropped."""
        bucket = self._bucket(self._codes[positions])
        order = np.argsort(bucket, kind="stable")
        bucket, positions = bucket[order], positions[order]
        first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        rank = np.arange(len(bucket)) - np.repeat(first, np.diff(np.r_[first, len(bucket)]))
        slot = self._fill[bucket] + rank
        kept = slot < self.CAP
        self._slots[bucket[kept], slot[kept]] = positions[kept]
        np.maximum.at(self._fill, bucket[kept], slot[kept] + 1)

    def _rehash(self) -> None:
        """Twice the buckets; every posting placed again in the order it first came."""
        while self._posted > self.LOAD << self._bits:
            self._bits += 1
        self._slots = np.full((1 << self._bits, self.CAP), -1, np.int32)
        self._fill = np.zeros(1 << self._bits, np.int32)
        self._post(np.arange(self._posted, dtype=np.int32))

    def _candidates(self, fp: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n (clip, offset) pairs with the most hits of a variant of a query frame's code."""
        codes = variants(fp).ravel()  # frame after frame, 2^K_WEAK codes each
        found = self._slots[self._bucket(codes)].ravel()  # CAP slots per code: positions in _codes, or -1
        lookup = np.flatnonzero(found >= 0)
        lookup = lookup[self._codes[found[lookup]] == codes[lookup // self.CAP]]  # same bucket, same code
        where, query_frame = found[lookup], lookup // (self.CAP << K_WEAK)
        clip = np.searchsorted(self._starts[:len(self.keys) + 1], where, side="right") - 1
        offset = where - self._starts[clip] - query_frame
        pairs, votes = np.unique(clip.astype(np.int64) << 32 | (offset + (1 << 31)), return_counts=True)
        best = pairs[np.argsort(-votes, kind="stable")[:n]]
        return best >> 32, (best & 0xFFFFFFFF) - (1 << 31)

    def codes_of(self, clip: int) -> np.ndarray:
        return self._codes[self._starts[clip]:self._starts[clip + 1]]

    def query(self, fp: np.ndarray, max_candidates: int = 5, max_ber: float = MATCH_BER) -> list[Match]:
        """Indexed clips that contain (part of) the query, best first."""
        if not self.keys:
            return []
        found: dict[int, Match] = {}
        for i, off in zip(*(a.tolist() for a in self._candidates(fp, max_candidates * 4))):
            score = code_ber(self.codes_of(i), fp[:, 0], off)
            if score <= max_ber and (i not in found or score < found[i].ber):
                found[i] = Match(self.keys[i], off, score)
        return sorted(found.values(), key=lambda m: m.ber)[:max_candidates]
