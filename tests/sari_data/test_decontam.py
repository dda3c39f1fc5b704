import json

import pandas as pd
import pytest

from corpus.store import Workspace
from corpus.testing import scene_clip
from sari_data.build import build
from sari_data.decontam import report
from sari_data.recipe import Recipe
from sari_data.testing import VARIANTS, avqa_row, variant, write, write_jsonl


def planted(tmp_path, n_clean=300):
    """A benchmark of 20 items with audio, and a training set of n_clean clean clips with 7
    benchmark clips hidden among them (each changed another way) and 1 benchmark question copied."""
    bench_root, train_root = tmp_path / "bench", tmp_path / "train"
    records = []
    for i in range(20):
        write(bench_root / f"{i}.wav", scene_clip(5000 + i, 2.0))
        records.append({"id": f"b{i}", "audio_id": f"{i}.wav", "question": f"Which animal calls out twice near benchmark sample {i}?",
                        "choices": [f"owl {i}", f"crow {i}", f"frog {i}", f"goat {i}"], "answer": f"owl {i}", "task": "sound"})
    (bench_root / "bench.json").write_text(json.dumps(records))
    rows = [avqa_row(i, variant(scene_clip(i, 2.0), "flac", train_root, f"c{i}").name) for i in range(n_clean)]
    for k, how in enumerate(VARIANTS):
        rows.append(avqa_row(1000 + k, variant(scene_clip(5000 + k, 2.0), how, train_root, f"hidden{k}").name))
    copied = records[15]
    rows.append(avqa_row(2000, "c0.flac", question_text=copied["question"], multi_choice=copied["choices"], answer=0))
    write_jsonl(train_root / "train.jsonl", rows)
    return bench_root, train_root


def recipe(bench_root, train_root, exclude):
    return Recipe.model_validate({
        "name": "decon", "audio": {"min_seconds": 0.5},
        "sources": [{"kind": "avqa", "name": "avqa", "path": str(train_root / "train.jsonl")}],
        "steps": [{"kind": "decontaminate", "exclude": exclude, "benchmarks": [
            {"name": "bench", "path": str(bench_root / "bench.json"), "audio_root": str(bench_root)}]}]})


@pytest.mark.slow
def test_planted_contamination_is_found_without_false_positives(tmp_path):
    bench_root, train_root = planted(tmp_path)
    counts = build(recipe(bench_root, train_root, exclude=True), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        found = ws.frame("contamination")
        quarantine = ws.frame("quarantine")
        kept = {i.source_id for i in ws.items()}
    flagged = {item_id: set(rows.benchmark_id) for item_id, rows in found.groupby("item_id")}
    by_source = {q.locator.rsplit(":", 1)[1]: q for q in quarantine.itertuples()}
    assert len(flagged) == 8 and set(quarantine.reason) == {"contaminated"} and len(quarantine) == 8
    assert kept == {str(i) for i in range(300)}  # no clean clip flagged
    hidden_lines = {str(301 + k): f"b{k}" for k in range(len(VARIANTS))}
    for line, bench_id in hidden_lines.items():
        assert bench_id in by_source[line].message
    text = found[found.method == "text_ngram"]
    assert list(text.benchmark_id) == ["b15"] and text.score.iloc[0] == 1.0
    assert set(found.method) == {"audio_fingerprint", "text_ngram"}  # no PCM survives a change bit-exactly
    assert counts["contamination"] == len(found)
    table = report(found).set_index("method")
    assert table.loc["audio_fingerprint", "corpus_items"] == 7 and table.loc["text_ngram", "benchmark_items"] == 1


def test_record_only_keeps_the_items(tmp_path):
    bench_root, train_root = planted(tmp_path, n_clean=5)
    build(recipe(bench_root, train_root, exclude=False), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        assert ws.count("items") == 13 and ws.count("quarantine") == 0 and ws.count("contamination") >= 8


def test_templated_question_with_other_options_is_not_contamination():
    from corpus.testing import dummy_item
    from sari_data.decontam import Reference

    reference = Reference("b", 6)
    reference.add_text("b1", "What is the genre of this music piece here?", ["jazz", "rock", "pop", "metal"])
    same = dummy_item(question="What is the genre of this music piece here?", choices=["jazz", "rock", "pop", "metal"], answer="pop", answer_index=2)
    other = dummy_item(question="What is the genre of this music piece here?", choices=["folk", "soul", "funk", "blues"], answer="soul", answer_index=1)
    assert list(reference.text_matches(same, 0.6)) == [("b1", 1.0)]
    assert list(reference.text_matches(other, 0.6)) == []
    assert report(pd.DataFrame(columns=["item_id", "benchmark", "benchmark_id", "method", "score"])).empty


def test_question_similarity_by_hand():
    from sari_data.decontam import question_similarity

    assert question_similarity("a b c d".split(), "a x c d".split(), 8) == 0.75  # 2 x 3 matching words / 8
    assert question_similarity("a b c d".split(), "a b c d".split(), 8) == 1.0
    # a copy inside a longer question: 2-grams 3 shared of max(3, 5) = 0.6; the ratio 2 x 4 / 10 is higher
    assert question_similarity("a b c d".split(), "z a b c d y".split(), 2) == 0.8


def test_a_lightly_paraphrased_question_with_the_same_options_is_contamination():
    from corpus.testing import dummy_item
    from sari_data.decontam import Reference

    reference = Reference("b", 8)
    options = ["violin", "piano", "flute", "trumpet"]
    reference.add_text("b1", "Which instrument plays the main melody in this recording?", options)
    swapped = dummy_item(question="Which instrument performs the main tune in this recording?", choices=options[::-1],
                         answer="flute", answer_index=1)
    other = dummy_item(question="Which of these is the loudest at the very end?", choices=options, answer="flute",
                       answer_index=2)
    # words: which instrument plays main melody in this recording (8; "the" dropped), 6 of them kept in order
    assert list(reference.text_matches(swapped, 0.6)) == [("b1", 0.75)]
    assert list(reference.text_matches(other, 0.6)) == []
