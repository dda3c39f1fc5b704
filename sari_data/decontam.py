"""Decontamination: find corpus items that overlap a benchmark's items.

MMAU test-mini draws ~500 items from AudioSet, MusicBench and MELD (the very sources SARI trains
on) and renames its audio to UUIDs, so file names say nothing. Overlap is found by content:
- audio_hash: the same decoded 16 kHz PCM (score 1);
- audio_fingerprint: the same recording after re-encoding, resampling, gain or a crop
  (score = 1 - 2 x bit error rate);
- text_ngram: the same question and options (score = share of the item's question word n-grams
  found in the benchmark question x Jaccard of the two option sets). Templated questions with
  other options score 0, so "What is the genre of this music?" alone is no contamination.
Every overlap becomes a `Contamination` record; with `exclude`, the item is quarantined too.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from corpus.clips import pcm_sha256, to_pcm16
from corpus.records import Clip, Contamination, Item, Quarantine
from sari_data.audio import CheckSettings, Failure, clip_fingerprint, decode, normalise, ordered_map
from sari_data.fingerprint import SAMPLE_RATE, FingerprintIndex, fingerprint
from sari_data.quality import option_key, reject
from sari_data.recipe import BenchmarkRef, BenchmarkSource, Decontaminate
from sari_data.sources import benchmark as benchmark_source


def question_ngrams(question: str, n: int) -> set[tuple[str, ...]]:
    words = option_key(question).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)} or {tuple(words)}


@dataclass
class Reference:
    """One benchmark, indexed for lookup by text and by audio."""

    name: str
    n: int
    ids: list[str] = field(default_factory=list)
    options: list[set[str]] = field(default_factory=list)
    grams: list[set[tuple[str, ...]]] = field(default_factory=list)
    by_gram: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    by_hash: dict[str, str] = field(default_factory=dict)
    prints: FingerprintIndex = field(default_factory=FingerprintIndex)
    n_audio: int = 0

    def add_text(self, benchmark_id: str, question: str, choices: list[str]) -> None:
        index = len(self.ids)
        self.ids.append(benchmark_id)
        self.options.append({option_key(c) for c in choices})
        self.grams.append(question_ngrams(question, self.n))
        for gram in self.grams[-1]:
            self.by_gram.setdefault(gram, []).append(index)

    def add_audio(self, benchmark_id: str, sha: str, fp: np.ndarray) -> None:
        self.by_hash.setdefault(sha, benchmark_id)
        self.prints.add(benchmark_id, fp)
        self.n_audio += 1

    def text_matches(self, item: Item, threshold: float) -> Iterator[tuple[str, float]]:
        grams = question_ngrams(item.question, self.n)
        options = {option_key(c) for c in item.choices}
        hits = Counter(i for gram in grams for i in self.by_gram.get(gram, ()))
        for i, count in hits.items():
            score = count / max(len(grams), len(self.grams[i])) * len(options & self.options[i]) / len(options | self.options[i])
            if score >= threshold:
                yield self.ids[i], round(score, 4)


@dataclass(frozen=True)
class _BenchmarkAudio:
    """Picklable: decode + normalise a benchmark clip to its PCM hash and fingerprint."""

    settings: CheckSettings

    def __call__(self, path: Path | Failure) -> tuple[str, np.ndarray] | None:
        if isinstance(path, tuple):
            return None
        try:
            decoded = decode(path, self.settings)
            if isinstance(decoded[0], str):
                return None
            mono = normalise(*decoded, self.settings)
        except Exception:  # an unreadable benchmark clip only loses its audio check
            return None
        if isinstance(mono, tuple):
            return None
        return pcm_sha256(to_pcm16(mono), SAMPLE_RATE), fingerprint(mono)


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
        settings = CheckSettings(min_seconds=0, max_seconds=3600, silence_dbfs=-200, max_clipped_fraction=1)
        audio = ordered_map(_BenchmarkAudio(settings), (row.audio for row in rows), workers)
        for row, found in zip(rows, audio):
            if found is not None:
                reference.add_audio(row.fields["meta"]["benchmark_id"], *found)
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
        for match in reference.prints.query(clip_fingerprint(workspace, item.audio)):
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
