import json
from collections import Counter
from pathlib import Path

import pytest

from corpus.store import Workspace
from corpus.testing import scene_clip
from sari_data.build import build
from sari_data.recipe import Recipe
from sari_data.testing import write
from sari_train.prompts import messages

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks" / "mmau"
MMAU = sorted(BENCHMARKS.glob("mmau-test-mini*.json"))


def eval_recipe(path, root, name="mmau"):
    return Recipe.model_validate({"name": "eval", "sources": [{"kind": "benchmark", "name": name, "path": str(path),
                                                               "audio_root": str(root)}]})


def test_both_mmau_versions_ship_with_their_licence():
    assert [p.name for p in MMAU] == ["mmau-test-mini.v05.15.25.json", "mmau-test-mini.v2025-03.json"]
    assert "Apache License" in (BENCHMARKS / "LICENSE").read_text()


@pytest.mark.parametrize("path", MMAU, ids=lambda p: p.name)
def test_mmau_test_mini_all_1000_accounted_for(tmp_path, path):
    records = json.loads(path.read_text())
    root = tmp_path / "mmau"
    for record in records[:5]:  # bring the audio of five items; the rest is missing
        write(root / record["audio_id"], scene_clip(hash(record["id"]) % 1000, 2.0))
    build(eval_recipe(path, root), tmp_path / "ws", progress=False, allow_empty=True)  # 995 clips missing
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        items = {i.meta["benchmark_id"]: i for i in ws.items("test")}
        quarantine = ws.frame("quarantine")
    assert len(items) + len(quarantine) == 1000 and len(items) == 5
    assert Counter(quarantine.reason) == {"missing_audio": 995}
    assert all("test-mini-audios" in m for m in quarantine.message)
    for record in records[:5]:
        item = items[record["id"]]
        assert item.split == "test" and item.task == record["task"] and item.answer == record["answer"]
        assert item.sub_category == record["sub-category"] and item.category == record["category"]
        assert {item.meta[k] for k in ("dataset", "difficulty", "sub-category")} == \
            {record["dataset"], record["difficulty"], record["sub-category"]}


def test_repeated_options_are_kept_once_and_recorded(tmp_path):
    record = {"id": "r1", "audio_id": "a.wav", "question": "How many?", "choices": ["four", "nine", "nine", "two"],
              "answer": "nine", "task": "sound", "dataset": "x", "difficulty": "easy", "category": "c", "sub-category": "s"}
    (tmp_path / "b.jsonl").write_text(json.dumps(record) + "\n")
    write(tmp_path / "a.wav", scene_clip(0, 2.0))
    build(eval_recipe(tmp_path / "b.jsonl", tmp_path), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        (item,) = ws.items()
    assert item.choices == ["four", "nine", "two"] and item.answer_index == 1
    assert item.meta["original_choices"] == record["choices"]


def test_mmar_explanations_never_reach_a_prompt(tmp_path):
    leaks = {"thinking": "LEAK-THINK the bell rings twice", "cue": "LEAK-CUE listen at 3s", "rubric": "LEAK-RUBRIC"}
    records = [{"id": f"m{i}", "audio_path": f"./audio/{i}.wav", "question": f"Which sound comes first {i}?",
                "choices": ["bell", "dog"], "answer": "bell", "modality": modality, "category": "Signal Layer",
                "sub-category": "order", "language": "en", **leaks}
               for i, modality in enumerate(["sound", "sound-music", "speech"])]
    (tmp_path / "MMAR-meta.json").write_text(json.dumps(records))
    for i in range(3):
        write(tmp_path / "audio" / f"{i}.wav", scene_clip(i, 2.0))
    build(eval_recipe(tmp_path / "MMAR-meta.json", tmp_path, "mmar"), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        items = ws.items()
        stored = ws.frame("items").to_json()
    assert [i.task for i in items] == ["sound", "mixed", "speech"] or sorted(i.task for i in items) == ["mixed", "sound", "speech"]
    assert "LEAK" not in stored
    assert all("LEAK" not in json.dumps(messages(i.question, i.choices)) for i in items)


def test_mmar_items_with_an_empty_option_are_kept(tmp_path):
    """Four real MMAR items have an empty option: the item shows the others, the record keeps all."""
    from sari_data.testing import mmar_rows, write_jsonl

    records = mmar_rows(10)
    write_jsonl(tmp_path / "MMAR-meta.jsonl", records)
    for n, record in enumerate(records):
        write(tmp_path / record["audio_path"], scene_clip(n, 2.0))
    build(eval_recipe(tmp_path / "MMAR-meta.jsonl", tmp_path, "mmar"), tmp_path / "ws", progress=False)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        items = {i.meta["benchmark_id"]: i for i in ws.items("test")}
        assert ws.count("quarantine") == 0 and len(items) == 10
    for record in records:
        item = items[record["id"]]
        assert item.choices == [c for c in record["choices"] if c]
        assert item.meta["benchmark_record"]["choices"] == record["choices"]
        assert item.meta["benchmark_record"]["modality"] == record["modality"]
        assert "LEAK" not in json.dumps(item.meta)
