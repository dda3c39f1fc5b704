"""Our report equals what MMAU's and MMAR's official `evaluation.py` print on our prediction files,
in workspace and `--benchmark` modes, on planted predictions.

`mmau_script` and `mmar_script` restate the official scripts' rules (github.com/Sakshi113/MMAU
evaluation.py, github.com/ddlBoJack/MMAR code/evaluation.py) in our own words, independently of
`corpus.scoring`: records without the prediction field are not counted; every counted record
must carry the group fields the script indexes (a value outside its fixed lists is a KeyError,
as there); a record is correct when the prediction's word set holds the gold answer's words and
none of the words found only in wrong options.
"""

import json
import re

import pytest

from corpus.testing import scene_clip
from sari_data.build import build
from sari_data.recipe import Recipe
from sari_data.testing import mmar_rows, write, write_jsonl
from sari_train import evaluate as E
from sari_train.evaluate import EvalConfig, run_eval

from pathlib import Path

MMAU = Path(__file__).resolve().parents[2] / "benchmarks" / "mmau"


def official_match(answer: str, prediction: str, choices: list[str]) -> bool:
    def bag(text):
        return set(re.findall(r"\b\w+\b", text.lower()))
    said, gold = bag(prediction), bag(answer)
    if not said:
        return False
    only_wrong = set()
    for choice in choices:
        if bag(choice) != gold:
            only_wrong |= bag(choice) - gold
    return gold <= said and not (said & only_wrong)


def official(records, field, groups):
    """{'total': %, '<group>/<value>': %, 'n': counted}; `groups` maps a field to its fixed values."""
    hits, seen = {}, {}
    counted = correct = 0
    for record in records:
        if field not in record:
            continue
        keys = []
        for name, allowed in groups.items():
            value = record[name]  # KeyError when absent, as in the scripts
            if allowed is not None and value not in allowed:
                raise KeyError(value)
            keys.append(f"{name}/{value}")
        if record.get("sub-category") is not None:
            keys.append(f"sub-category/{record['sub-category']}")
        ok = official_match(record["answer"], record[field], record["choices"])
        counted += 1
        correct += ok
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
            hits[key] = hits.get(key, 0) + ok
    table = {key: 100 * hits[key] / seen[key] for key in seen}
    return {"total": 100 * correct / counted, "n": counted, **table}


def mmau_script(path):
    return official(json.loads(path.read_text()), "model_output",
                    {"task": ("sound", "music", "speech"), "difficulty": ("easy", "hard", "medium")})


def mmar_script(path):
    text = path.read_text()
    records = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    return official(records, "answer_prediction", {
        "modality": ("sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech",
                     "mix-sound-music-speech"),
        "category": ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer")})


def planted(question: str, choices: list[str], answer: str, n: int) -> str:
    """A spread of completions: right, wrong, a superset naming a wrong option, no tags, empty, upper case."""
    wrong = next(c for c in choices if c and c != answer)
    return [f"<answer>{answer}</answer>", f"<answer>{wrong}</answer>", f"<answer>{answer} or {wrong}</answer>",
            f"It is {answer.upper()}.", "<answer></answer>", f"<think>hm</think><answer>{answer}</answer>",
            f"<answer>{answer}</answer><answer>{wrong}</answer>"][n % 7]


@pytest.fixture
def planted_model(monkeypatch):
    """No model: `predict` answers from the planted spread, so the test is about scoring only."""
    monkeypatch.setattr(E.AudioLM, "load", staticmethod(lambda path, **_: None))
    monkeypatch.setattr(E, "LocalEngine", lambda lm, batch_size: None)

    def predict(engine, items, style, settings, choices=None, desc="", batch_size=8):
        return [planted(i.question, i.choices, i.answer, int(re.sub(r"\D", "", i.id)[-3:] or 0)) for i in items]
    monkeypatch.setattr(E, "predict", predict)


def bring_audio(records, root, key, keep):
    for n, record in enumerate(records):
        if n % keep:
            write(root / record[key], scene_clip(n, 1.5))


def same(report_column, script):
    for key, value in script.items():
        assert report_column[key] == pytest.approx(value), key


@pytest.fixture
def mmau_records():
    records = json.loads((MMAU / "mmau-test-mini.v2025-03.json").read_text())
    return records[::25]  # 40 records across the file: every task and difficulty


def test_mmau_benchmark_and_workspace_modes_match_the_official_script(tmp_path, mmau_records, planted_model):
    (tmp_path / "mmau.json").write_text(json.dumps(mmau_records))
    bring_audio(mmau_records, tmp_path / "mmau", "audio_id", keep=5)  # every fifth item's audio is missing
    recipe = Recipe.model_validate({"name": "e", "sources": [{"kind": "benchmark", "name": "mmau", "split": "test",
                                                              "path": str(tmp_path / "mmau.json"),
                                                              "audio_root": str(tmp_path / "mmau")}]})
    build(recipe, tmp_path / "ws", progress=False)
    for mode, config in {"benchmark": dict(benchmark=tmp_path / "mmau.json", audio_root=tmp_path / "mmau"),
                         "workspace": dict(workspace=tmp_path / "ws", split="test")}.items():
        out = tmp_path / mode
        table = run_eval(EvalConfig(models=[f"m=x"], out=out, shuffled=False, **config))
        report = json.loads((out / "report.json").read_text())
        predictions = json.loads((out / "m" / "mmau_predictions.json").read_text())
        assert not (out / "m" / "mmar_predictions.json").exists()
        assert report["n_items"] == 32 and report["n_skipped"] == 8, mode
        assert report["skipped_reasons"] == {"missing_audio": 8}
        # every record is scored or skipped (by id, or the build's file#index in workspace mode)
        skipped = {s["item"] if mode == "benchmark" else mmau_records[int(s["item"].split("#")[1])]["id"]
                   for s in report["skipped"]}
        assert {p["id"] for p in predictions} | skipped == {r["id"] for r in mmau_records}
        for p in predictions:  # the benchmark's own record, plus the prediction
            original = next(r for r in mmau_records if r["id"] == p["id"])
            assert {k: p[k] for k in original} == original
        script = mmau_script(out / "m" / "mmau_predictions.json")
        assert {"task/speech", "task/music", "difficulty/hard", "difficulty/easy"} <= set(script)
        same(table["m"], script)
        assert 20 < table["m"]["total"] < 80  # the planted spread: a test that can fail
        assert table["m"]["total (skipped counted wrong)"] == pytest.approx(table["m"]["total"] * 32 / 40)


def test_mmar_benchmark_and_workspace_modes_match_the_official_script(tmp_path, planted_model):
    records = mmar_rows(28)
    write_jsonl(tmp_path / "MMAR-meta.jsonl", records)
    bring_audio(records, tmp_path, "audio_path", keep=7)  # four missing
    recipe = Recipe.model_validate({"name": "e", "sources": [{"kind": "benchmark", "name": "mmar", "split": "test",
                                                              "path": str(tmp_path / "MMAR-meta.jsonl"),
                                                              "audio_root": str(tmp_path)}]})
    build(recipe, tmp_path / "ws", progress=False)
    for mode, config in {"benchmark": dict(benchmark=tmp_path / "MMAR-meta.jsonl", audio_root=tmp_path),
                         "workspace": dict(workspace=tmp_path / "ws", split="test")}.items():
        out = tmp_path / mode
        table = run_eval(EvalConfig(models=["m=x"], out=out, shuffled=False, **config))
        report = json.loads((out / "report.json").read_text())
        path = out / "m" / "mmar_predictions.json"
        predictions = json.loads(path.read_text())
        assert not (out / "m" / "mmau_predictions.json").exists()
        # every item with audio is scored, the empty-option ones too; the rest are listed
        assert report["n_items"] == 24 and report["skipped_reasons"] == {"missing_audio": 4}, mode
        assert "LEAK" not in path.read_text()
        by_id = {r["id"]: r for r in records}
        for p in predictions:
            original = {k: v for k, v in by_id[p["id"]].items() if k not in ("thinking", "cue", "rubric")}
            assert {k: p[k] for k in original} == original and "thinking_prediction" in p
        script = mmar_script(path)
        assert any(k.startswith("modality/mix-") for k in script) and "category/Cultural Layer" in script
        same(table["m"], script)
        assert 20 < table["m"]["total"] < 80
        assert {p["id"] for p in predictions} >= {r["id"] for r in records if "" in r["choices"]} - \
            {s["item"] for s in report["skipped"]}
