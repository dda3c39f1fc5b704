"""Planted overlaps (issue 26): benchmark items hidden in a training source, changed every way a
copy changes (re-encoded, resampled, cropped, noisy, paraphrased), among clean items that must
not be flagged. The per-kind table is the one the README reports (`bench/bench_decontam.py`)."""

import pytest

from corpus.store import Workspace
from sari_data.build import build
from sari_data.recipe import Recipe
from sari_data.testing import overlap_table, planted_overlaps


def flagged_by_source_id(tmp_path, n_clean):
    source, bench, truth = planted_overlaps(tmp_path, n_clean)
    recipe = Recipe.model_validate({
        "name": "planted", "audio": {"min_seconds": 0.5, "workers": 2},
        "sources": [{"kind": "avqa", "name": "avqa", "path": str(source), "audio_root": str(source.parent)}],
        "steps": [{"kind": "decontaminate", "exclude": False, "benchmarks": [
            {"name": "bench", "path": str(bench), "audio_root": str(bench.parent)}]}]})
    build(recipe, tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        source_id = {item.id: item.source_id for item in ws.items()}
        found = ws.frame("contamination")
    flagged = {}
    for row in found.itertuples():
        flagged.setdefault(source_id[row.item_id], set()).add(row.benchmark_id)
    return flagged, truth, found


@pytest.mark.slow
def test_every_planted_kind_is_found_and_no_clean_item_is_flagged(tmp_path):
    flagged, truth, found = flagged_by_source_id(tmp_path, n_clean=45)
    table = overlap_table(flagged, truth)
    missed = {row["kind"]: row["items"] - row["found"] for row in table if row["planted"] and row["found"] < row["items"]}
    false_positives = [(row["kind"], row["flagged"]) for row in table if not row["planted"] and row["flagged"]]
    # known miss: tone bursts under white noise at 20 dB S/N (the scene clip) give no fingerprint candidate
    assert missed in ({}, {"white noise at 20 dB S/N": 1}) and not false_positives, (missed, false_positives)
    assert sum(row["items"] for row in table if row["planted"]) == 42 and len(truth) == 42 + 6 + 45
    # the ambiguous ones were settled by their waveforms: some audio matches sit above MATCH_BER
    assert (found[found.method == "audio_fingerprint"].score < 0.4).any()
