import json

import pandas as pd
import pytest
import soundfile as sf

from corpus.benchmarks import read_benchmark
from corpus.scoring import mmau_match
from corpus.testing import dummy_clip
from sari_train.config import ConfigError
from sari_train.evaluate import (EvalConfig, EvalItem, accuracy_table, benchmark_items, difficulty_label, run_eval,
                                 score, shuffled_choices, write_predictions)

from pathlib import Path

# The benchmark files ship in the repository; resolve them from this file, not the cwd.
MMAU = Path(__file__).resolve().parents[2] / "benchmarks" / "mmau" / "mmau-test-mini.v2025-03.json"


def item(i, answer="the second tone", task="music", difficulty="easy", sub="pitch"):
    return EvalItem(id=str(i), question="Which is higher?", choices=["the first tone", "the second tone"],
                    answer=answer, task=task, difficulty=difficulty, sub_category=sub, audio=dummy_clip(),
                    record={"id": str(i), "choices": ["the first tone", "the second tone"], "answer": answer,
                            "task": task, "difficulty": difficulty, "sub-category": sub})


def test_score_extracts_then_applies_the_mmau_rule():
    items = [item(n) for n in range(5)]
    completions = ["<answer>the second tone</answer>", "<answer>the first tone</answer>",
                   "second", "The second tone.", "<answer></answer>"]
    scored = score(items, completions)
    assert scored.correct.tolist() == [True, False, False, True, False]
    assert scored.prediction.tolist() == ["the second tone", "the first tone", "second", "The second tone.", ""]


def test_accuracy_table_micro_averages_by_group():
    scored = pd.DataFrame({"task": ["sound", "sound", "music", "music"], "difficulty": ["easy", "hard", "easy", "easy"],
                           "sub-category": ["a", "a", "b", ""], "correct": [True, False, True, True]})
    table = accuracy_table(scored)
    assert table["total"] == 75 and table["task/sound"] == 50 and table["task/music"] == 100
    assert table["difficulty/easy"] == pytest.approx(100) and table["difficulty/hard"] == 0
    assert table["sub-category/a"] == 50 and "sub-category/" not in table.index and table["n"] == 4


def test_mmar_breakdowns_come_from_its_records():
    records = [{"modality": m, "category": c, "sub-category": "x"} for m, c in
               [("mix-sound-speech", "Signal Layer"), ("mix-sound-speech", "Cultural Layer"), ("speech", "Signal Layer")]]
    items = [EvalItem(str(n), "q", ["a", "b"], "a", "mixed", "", "x", dummy_clip(), r) for n, r in enumerate(records)]
    table = accuracy_table(score(items, ["<answer>a</answer>", "<answer>b</answer>", "<answer>a</answer>"]))
    assert table["modality/mix-sound-speech"] == 50 and table["modality/speech"] == 100
    assert table["category/Signal Layer"] == 100 and table["category/Cultural Layer"] == 0
    assert not any(k.startswith("task/") for k in table.index)


def test_difficulty_knob_becomes_thirds():
    assert [difficulty_label(x) for x in (0.0, 0.33, 0.34, 0.66, 0.67, 1.0, None)] == \
        ["easy", "easy", "medium", "medium", "hard", "hard", ""]


def test_shuffled_choices_keep_the_options_and_are_seeded():
    items = [item(i) for i in range(20)]
    a, b = shuffled_choices(items, 1), shuffled_choices(items, 1)
    assert a == b and all(sorted(c) == sorted(i.choices) for c, i in zip(a, items))
    assert any(c != i.choices for c, i in zip(a, items))


def test_mmau_file_reads_all_1000_records():
    items, problems = read_benchmark(MMAU)
    assert len(items) == 1000 and problems == []
    assert {i.task for i in items} == {"sound", "music", "speech"}


def test_predictions_round_trip_through_the_official_format(tmp_path):
    """The file has the benchmark's own fields plus `model_output`; re-scoring it the way MMAU's
    evaluation.py does (model_output vs answer/choices) gives our per-item verdicts."""
    items, _ = read_benchmark(MMAU)
    items = items[:30]
    eval_items = [EvalItem(i.id, i.question, i.choices, i.answer, i.task, i.difficulty, i.sub_category,
                           dummy_clip(), dict(i.record)) for i in items]
    completions = [f"<answer>{i.choices[n % len(i.choices)]}</answer>" for n, i in enumerate(items)]
    write_predictions(eval_items, completions, tmp_path)
    mmau = json.loads((tmp_path / "mmau_predictions.json").read_text())
    assert not (tmp_path / "mmar_predictions.json").exists()  # MMAR's script would fail on MMAU records
    assert [r["id"] for r in mmau] == [i.id for i in items] and set(items[0].record) < set(mmau[0])
    rescored = [mmau_match(r["model_output"], r["answer"], r["choices"]) for r in mmau]
    assert rescored == score(eval_items, completions).correct.tolist()


def test_mmar_explanations_never_reach_items(tmp_path):
    path = tmp_path / "mmar.jsonl"
    record = {"id": "x", "audio_path": "a.wav", "question": "Q?", "choices": ["a", "b"], "answer": "a",
              "modality": "sound", "thinking": "SECRET", "cue": "SECRET", "rubric": "SECRET"}
    path.write_text(json.dumps(record) + "\n{broken\n")
    items, problems = read_benchmark(path)
    assert "SECRET" not in repr(items) and items[0].task == "sound"
    assert problems == [(f"{path}:2", problems[0][1])] and "not valid JSON" in problems[0][1]


def test_benchmark_without_audio_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--audio-root"):
        benchmark_items(MMAU, tmp_path, limit=5)


def test_eval_end_to_end_on_a_benchmark_folder(tmp_path, tiny_qwen2_audio):
    tiny_qwen2_audio.model.save_pretrained(tmp_path / "model")
    tiny_qwen2_audio.tokenizer.save_pretrained(tmp_path / "model")
    tiny_qwen2_audio.feature_extractor.save_pretrained(tmp_path / "model")
    items, _ = read_benchmark(MMAU)
    records = [dict(i.record) for i in items[:6]]
    for n, r in enumerate(records[:4]):  # two items keep their audio missing
        (tmp_path / r["audio_id"]).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / r["audio_id"], dummy_clip(2.0, 300 + 50 * n, 22050), 22050)  # resampled on read
    (tmp_path / "bench.json").write_text(json.dumps(records))
    config = EvalConfig(models=[str(tmp_path / "model")], benchmark=tmp_path / "bench.json", audio_root=tmp_path,
                        max_new_tokens=4, out=tmp_path / "out")
    table = run_eval(config)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_items"] == 4 and len(report["skipped"]) == 2 and table.loc["n", "model"] == 4
    assert report["skipped_reasons"] == {"missing_audio": 2} and table.attrs["n_skipped"] == 2
    assert (tmp_path / "out" / "accuracy.png").exists()
    predictions = json.loads((tmp_path / "out" / "model" / "mmau_predictions.json").read_text())
    assert len(predictions) == 4 and all("model_output" in p for p in predictions)


def test_benchmark_questions_are_asked_as_written(tmp_path):
    """MMAR has questions about a 'video'; the eval prompt keeps the word (only corpus builds rewrite)."""
    from sari_train.evaluate import eval_style
    from sari_train.prompts import user_text

    config = EvalConfig(models=["m"], workspace=tmp_path)
    style = eval_style(config, str(tmp_path / "not-ours"))
    assert "in the video" in user_text("What happens in the video?", ["a", "b"], style)
    assert style.format == "implicit"


def served_workspace(root, n=5):
    from corpus.store import Workspace
    from corpus.testing import dummy_item

    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, workspace=root, split="test") for i in range(n)])
    return root


def test_eval_through_an_endpoint_asks_greedy_with_the_same_prompts(tmp_path):
    from sari_train.evaluate import eval_style, workspace_items
    from sari_train.fake_endpoint import serve
    from sari_train.prompts import messages
    from sari_train.rollout.endpoint import openai_messages

    root = served_workspace(tmp_path / "ws")
    with serve() as server:
        config = EvalConfig(models=["judge=served-model"], endpoint=server.url, workspace=root, shuffled=False,
                            batch_size=2, max_new_tokens=16, out=tmp_path / "out")
        table = run_eval(config)
    assert {(r["model"], r["temperature"], r["n"], r["max_tokens"]) for r in server.requests} == {
        ("served-model", 0.0, 1, 16)}
    items = workspace_items(root, "test", None)
    style = eval_style(config, "served-model")
    asked = [openai_messages(messages(i.question, i.choices, style), i.audio, 16000) for i in items]
    assert sorted(map(json.dumps, (r["messages"] for r in server.requests))) == sorted(map(json.dumps, asked))
    predictions = json.loads((tmp_path / "out" / "judge" / "mmau_predictions.json").read_text())
    assert [p["id"] for p in predictions] == [i.record["id"] for i in items]
    assert {p["raw_output"] for p in predictions} <= {"<answer>high</answer>", "<answer>low</answer>"}
    correct = [p["model_output"] == "low" for p in predictions]  # every dummy item's answer is "low"
    assert table.loc["total", "judge"] == pytest.approx(100 * sum(correct) / len(correct))
    assert table.loc["n", "judge"] == 5
    usage = json.loads((tmp_path / "out" / "report.json").read_text())["endpoint_usage"]["judge"]
    assert usage["requests_sent"] == 5 and usage["retries"] == 0 and usage["model"] == "served-model"


def test_eval_command_with_an_endpoint_and_an_unreachable_one(tmp_path, capsys):
    import socket

    from sari_train.cli import main
    from sari_train.fake_endpoint import serve

    root = served_workspace(tmp_path / "ws", n=3)
    with serve() as server:
        assert main(["eval", "--endpoint", server.url, "--model", "served", "--workspace", str(root),
                     "--out", str(tmp_path / "out"), "--retries", "0"]) == 0
    assert len(server.requests) == 6  # 3 items, and again with the options shuffled
    assert "total (shuffled options)" in capsys.readouterr().out
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["eval", "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "served", "--workspace", str(root),
                 "--out", str(tmp_path / "out2"), "--retries", "0", "--timeout", "5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"cannot reach the endpoint http://127.0.0.1:{port}/v1" in error
    assert "start the server" in error
