"""Decontamination: find corpus items that overlap a benchmark's items.

MMAU test-mini draws ~500 items from AudioSet, MusicBench and MELD (the very sources SARI trains
on) and renames its audio to UUIDs, so file names say nothing. Overlap is found by content:
- audio_hash: the same decoded 16 kHz PCM (score 1);
- audio_fingerprint: the same recording after re-encoding, resampling, gain, a crop, lossy coding
  or added noise (score = 1 - 2 x bit error rate). A candidate whose bit error rate is ambiguous
  (between MATCH_BER and SECOND_LOOK_BER: MP3 at low bit rates, noise at 20 dB S/N) is a match
  when the two waveforms correlate (`fingerprint.waveform_similarity`), which unrelated audio never does;
- text_ngram: the same question and options, or the question lightly paraphrased (score = question
  similarity x Jaccard of the two option sets; question similarity is the share of the item's
  word n-grams found in the benchmark question or, if higher, the word-sequence ratio, 2 x
  matching words / all words, which a word or two swapped for synonyms leaves near 1).
  Templated questions with other options score 0, so "What is the genre of this music?" alone is
  no contamination.
Every overlap becomes a `Contamination` record; with `exclude`, the item is quarantined too.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from corpus.clips import load_clip, pcm_sha256, to_pcm16
from corpus.records import Clip, Contamination, Item, Quarantine
from sari_data.audio import AudioSource, CheckSettings, Failure, clip_fingerprint, decode, normalise, ordered_map
from sari_data.fingerprint import (MATCH_BER, SAME_WAVEFORM, SAMPLE_RATE, SECOND_LOOK_BER, FingerprintIndex, Match,
                                   fingerprint, waveform_similarity)
from sari_data.quality import option_key, reject
from sari_data.recipe import BenchmarkRef, BenchmarkSource, Decontaminate
from sari_data.sources import benchmark as benchmark_source


def question_ngrams(question: str, n: int) -> set[tuple[str, ...]]:
    words = option_key(question).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)} or {tuple(words)}


def question_similarity(a: list[str], b: list[str], n: int) -> float:
    """How alike two questions (word lists) are: the share of word n-grams they share, or the
    word-sequence ratio (2 x matching words / all words), whichever is higher. One synonym in a
    ten-word question breaks every 8-gram but leaves the ratio at 0.9."""
    grams_a, grams_b = (question_ngrams(" ".join(words), n) for words in (a, b))
    shared = len(grams_a & grams_b) / max(len(grams_a), len(grams_b))
    return max(shared, difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())


BENCHMARK_AUDIO = CheckSettings(min_seconds=0, max_seconds=3600, silence_dbfs=-200, max_clipped_fraction=1)


def benchmark_waveform(source: AudioSource) -> np.ndarray | None:
    """A benchmark clip decoded and normalised as the corpus's clips are (mono 16 kHz), or None."""
    try:
        decoded = decode(source, BENCHMARK_AUDIO)
        mono = None if isinstance(decoded[0], str) else normalise(*decoded, BENCHMARK_AUDIO)
    except Exception:  # an unreadable benchmark clip only loses its audio check
        return None
    return None if mono is None or isinstance(mono, tuple) else mono


@dataclass
class Reference:
    """One benchmark, indexed for lookup by text and by audio."""

    name: str
    n: int
    ids: list[str] = field(default_factory=list)
    options: list[set[str]] = field(default_factory=list)
    words: list[list[str]] = field(default_factory=list)
    by_option: dict[str, list[int]] = field(default_factory=dict)
    by_hash: dict[str, str] = field(default_factory=dict)
    prints: FingerprintIndex = field(default_factory=FingerprintIndex)
    audio: dict[str, AudioSource] = field(default_factory=dict)  # re-decoded for the waveform check
    n_audio: int = 0

    def add_text(self, benchmark_id: str, question: str, choices: list[str]) -> None:
        index = len(self.ids)
        self.ids.append(benchmark_id)
        self.options.append({option_key(c) for c in choices})
        self.words.append(option_key(question).split())
        for option in self.options[-1]:
            self.by_option.setdefault(option, []).append(index)

    def add_audio(self, benchmark_id: str, sha: str, fp: np.ndarray, source: AudioSource | None = None) -> None:
        self.by_hash.setdefault(sha, benchmark_id)
        self.prints.add(benchmark_id, fp)
        if source is not None:
            self.audio[benchmark_id] = source
        self.n_audio += 1

    def text_matches(self, item: Item, threshold: float) -> Iterator[tuple[str, float]]:
        """Benchmark items that share options with the item (no shared option: score 0), scored."""
        options = {option_key(c) for c in item.choices}
        words = option_key(item.question).split()
        for i in sorted({i for option in options for i in self.by_option.get(option, ())}):
            overlap = len(options & self.options[i]) / len(options | self.options[i])
            score = overlap * question_similarity(words, self.words[i], self.n) if overlap >= threshold else 0
            if score >= threshold:
                yield self.ids[i], round(score, 4)

    def audio_matches(self, fp: np.ndarray, clip: Callable[[], np.ndarray]) -> Iterator[Match]:
        """Benchmark clips the fingerprint matches; an ambiguous candidate only if its waveform
        correlates with the corpus clip (`clip()` loads it, only when needed)."""
        for match in self.prints.query(fp, max_ber=SECOND_LOOK_BER):
            if match.ber <= MATCH_BER:
                yield match
                continue
            source = self.audio.get(match.key)
            original = None if source is None else benchmark_waveform(source)
            if original is not None and waveform_similarity(original, clip(), match.offset) >= SAME_WAVEFORM:
                yield match


def _benchmark_print(source: AudioSource | Failure) -> tuple[str, np.ndarray] | None:
    """A benchmark clip's PCM hash and fingerprint (in a worker process)."""
    mono = None if isinstance(source, tuple) else benchmark_waveform(source)
    return None if mono is None else (pcm_sha256(to_pcm16(mono), SAMPLE_RATE), fingerprint(mono))


def load_reference(ref: BenchmarkRef, n: int, workers: int | str = 2) -> Reference:
    """A benchmark's text, plus its audio where `audio_root` holds it (the text is enough to start)."""
    source = BenchmarkSource(name=ref.name, path=ref.path, audio_root=ref.audio_root)
    reference = Reference(ref.name, n)
    rows = [row for row in benchmark_source.rows(source) if not isinstance(row, Quarantine)]
    for row in rows:
        fields = row.fields
        if isinstance(fields["question"], str) and isinstance(fields["choices"], list):
            reference.add_text(fields["meta"]["benchmark_id"], fields["question"], [str(c) for c in fields["choices"]])
    if ref.audio_root is not None:
        audio = ordered_map(_benchmark_print, (row.audio for row in rows), workers)
        for row, found in zip(rows, audio):
            if found is not None:
                reference.add_audio(row.fields["meta"]["benchmark_id"], *found, row.audio)
    if reference.n_audio < len(reference.ids):
        print(f"decontaminate: {ref.name}: audio of {reference.n_audio} of {len(reference.ids)} items found under "
              f"{ref.audio_root}; the rest are checked by text only (bring the audio to check it too)", file=sys.stderr)
    return reference


def matches(item: Item | Clip, reference: Reference, workspace: Path, threshold: float) -> list[Contamination]:
    """Overlaps of one item (text and audio) or clip (audio) with one benchmark."""
    found = [] if not isinstance(item, Item) else [
        Contamination(item_id=item.id, benchmark=reference.name, benchmark_id=bid, method="text_ngram", score=s)
        for bid, s in reference.text_matches(item, threshold)]
    if item.audio is not None and reference.n_audio:
        if item.audio.sha256 in reference.by_hash:
            found.append(Contamination(item_id=item.id, benchmark=reference.name,
                                       benchmark_id=reference.by_hash[item.audio.sha256], method="audio_hash", score=1.0))
        clip = partial(load_clip, workspace, item.audio)
        for match in reference.audio_matches(clip_fingerprint(workspace, item.audio), clip):
            found.append(Contamination(item_id=item.id, benchmark=reference.name, benchmark_id=match.key,
                                       method="audio_fingerprint", score=match.score))
    return found


def decontaminate(config: Decontaminate, workspace: Path, workers: int | str = 2):
    """The recipe step: record every overlap; with `exclude`, quarantine the item as well."""
    references = [load_reference(ref, config.ngram, workers) for ref in config.benchmarks]

    def step(items: Iterable[Item | Clip]) -> Iterator[Item | Clip | Quarantine | Contamination]:
        for item in items:
            found = [c for reference in references for c in matches(item, reference, workspace, config.text_threshold)]
            yield from found
            if found and config.exclude:
                best = max(found, key=lambda c: c.score)
                yield reject(item, "contaminated", f"overlaps {best.benchmark} item {best.benchmark_id} "
                                                   f"({best.method}, score {best.score})")
            else:
                yield item

    return step


def report(contamination: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark and method: how many corpus items and benchmark items overlap."""
    if contamination.empty:
        return pd.DataFrame(columns=["benchmark", "method", "corpus_items", "benchmark_items", "min_score"])
    return (contamination.groupby(["benchmark", "method"])
            .agg(corpus_items=("item_id", "nunique"), benchmark_items=("benchmark_id", "nunique"),
                 min_score=("score", "min"))
            .reset_index())
