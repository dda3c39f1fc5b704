"""What a new user hit: a NaN that broke the viewer, an empty curriculum found too late, a random
sampler that wanted difficulty, two evals in one column, a format lost between SFT and GRPO, crafted
weights, an over-long item, a misspelt eval split, failed runs that did not say why."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from faults_helpers import audio_workspace, one_line_error, run_cli

from corpus.provenance import recorded_run
from corpus.records import Difficulty
from corpus.store import Workspace
from corpus.testing import dummy_item, scene_clip
from sari_data.cli import main as sari_data
from sari_data.difficulty import DifficultyConfig, run_difficulty
from sari_data.testing import write
from sari_data.view import api
from sari_train.cli import main as sari_train


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from sari_train.models.tiny import build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny"), window_seconds=4, hidden_size=32, layers=1)


def run_records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]


class AlwaysWrong:
    """A rollout engine whose every answer is wrong: every item scores 0/k."""

    def sample(self, prompts, waveforms, settings):
        return SimpleNamespace(texts=[["<answer>neither</answer>"] * settings.k for _ in prompts])


def scored_zero(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, workspace=root, meta={"family": "pitch_high_low", "difficulty": i / 8})
                   for i in range(8)])
    return root


# --- the viewer and NaN -----------------------------------------------------------------------------

def test_a_nan_in_a_run_record_is_stored_as_null_and_the_viewer_answers(tmp_path):
    root = audio_workspace(tmp_path / "ws", n=2)
    with Workspace(root) as ws, recorded_run(ws, "difficulty") as results:
        results["spearman"] = float("nan")
    with Workspace(root) as ws:  # a record written before the fix, NaN and all
        ws.record_run("old", "difficulty", "2025-01-01", "2025-01-01", "ok", {"results": {"spearman": float("nan")}})
    with Workspace(root, read_only=True) as ws:
        stored = [json.loads(p) for p in ws.frame("runs").provenance]
        payloads = [api.runs(ws), api.item_detail(ws, ws.items()[0].id)]
    new = next(r for r in stored if r.get("command") == "difficulty" and "run_id" in r)
    assert new["results"]["spearman"] is None
    for payload in payloads:
        json.dumps(payload, allow_nan=False)  # what the server sends; NaN made it answer 500
    assert {r["run_id"]: r["provenance"].get("results", {}).get("spearman", "absent")
            for r in payloads[0]}["old"] is None


# --- difficulty that drops every item, and what GRPO says then ----------------------------------------

def test_difficulty_that_drops_every_item_warns_and_grpo_says_the_curriculum_is_empty(tmp_path, capsys, monkeypatch):
    import sari_data.difficulty as difficulty

    root = scored_zero(tmp_path)
    monkeypatch.setattr(difficulty, "make_engine", lambda config: AlwaysWrong())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "t", "sources": [{"kind": "synthetic"}], "difficulty": {"model": "base", "k": 2}}))
    code, out, err = run_cli(sari_data, ["difficulty", "--recipe", recipe, "--workspace", root, "--quiet"], capsys)
    assert code == 0, err
    assert "warning: all 8 scored items of split 'train' were answered correctly 0 of 2 times" in err
    assert "curriculum is empty" in err
    with Workspace(root, read_only=True) as ws:
        record = json.loads(ws.frame("runs").provenance.iloc[-1])
    assert "curriculum is empty" in record["results"]["warnings"][0]

    from sari_train.grpo.train import GRPOConfig, make_sampler
    from sari_train.data import load_examples

    config = GRPOConfig(model="m", workspace=root, out=tmp_path / "g")
    examples, _ = load_examples(root, "train")
    with pytest.raises(Exception) as caught:
        make_sampler(config, examples)
    assert "curriculum is empty: all 8 scored items" in str(caught.value) and "0/k" in str(caught.value)
    assert "run `sari-data difficulty` first" not in str(caught.value)


def test_difficulty_that_keeps_items_does_not_warn(tmp_path):
    root = scored_zero(tmp_path)

    class HalfRight:
        def sample(self, prompts, waveforms, settings):
            return SimpleNamespace(texts=[["<answer>low</answer>", "<answer>high</answer>"] for _ in prompts])

    outcome = run_difficulty(root, DifficultyConfig(model="base", k=2), progress=False, engine=HalfRight())
    assert outcome.warnings == []


def test_a_random_sampler_needs_no_difficulty_from_one_model(tmp_path):
    from sari_train.data import load_examples
    from sari_train.grpo.train import GRPOConfig, make_sampler

    root = audio_workspace(tmp_path / "ws", n=4, split="train")
    with Workspace(root) as ws:
        ids = sorted(ws.item_ids())
        ws.upsert([Difficulty(item_id=i, model=m, k=4, n_correct=2, pass_rate=0.5, bucket=0) for i in ids for m in "ab"])
    examples, _ = load_examples(root, "train")
    sampler = make_sampler(GRPOConfig(model="m", workspace=root, out=tmp_path / "g", sampler="random"), examples)
    assert sorted(sampler.ids) == ids
    with pytest.raises(Exception, match="several models"):  # the curriculum still asks which model
        make_sampler(GRPOConfig(model="m", workspace=root, out=tmp_path / "g"), examples)


# --- eval: two models, one column; crafted weights; an over-long item ----------------------------------

def test_two_models_that_would_share_a_column_are_refused(tmp_path, capsys):
    root = audio_workspace(tmp_path / "ws", n=2)
    code, _, err = run_cli(sari_train, ["eval", "--model", tmp_path / "A" / "final", "--model", tmp_path / "B" / "final",
                                        "--workspace", root, "--out", tmp_path / "eval"], capsys)
    line = one_line_error(err, "sari-train eval")
    assert code == 2 and "share the column 'final'" in line and "NAME=PATH" in line


class Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_pickled_weights_are_one_line_and_run_nothing(tmp_path, tiny_model, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"model.weight": Payload(marker)}, model / "pytorch_model.bin")
    code, _, err = run_cli(sari_train, ["eval", "--model", model, "--workspace", audio_workspace(tmp_path / "ws", 2),
                                        "--out", tmp_path / "eval"], capsys)
    line = one_line_error(err, "sari-train eval")
    assert code == 2 and str(model) in line and "more than tensors" in line and "safetensors" in line
    assert not marker.exists()


def test_an_over_long_item_is_skipped_with_its_reason(tmp_path, tiny_model, capsys):
    write(tmp_path / "audio" / "a.wav", scene_clip(0, 2.0))
    record = {"audio_id": "a.wav", "choices": ["yes", "no"], "answer": "yes", "task": "sound",
              "difficulty": "easy", "category": "c", "sub-category": "s"}
    records = [{**record, "id": "q1", "question": "Is it loud? " * 3000},
               {**record, "id": "q2", "question": "Is it loud?"}]
    (tmp_path / "bench.json").write_text(json.dumps(records))
    code, out, err = run_cli(sari_train, ["eval", "--model", tiny_model, "--benchmark", tmp_path / "bench.json",
                                          "--audio-root", tmp_path / "audio", "--out", tmp_path / "eval"], capsys)
    assert code == 0, err
    assert "scored 1 of 2 items; skipped 1 (prompt_too_long 1)" in out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [(s["item"], s["reason"]) for s in report["skipped"]] == [("q1", "prompt_too_long")]
    assert report["accuracy"][tiny_model.name]["n"] == 1
    predictions = json.loads((tmp_path / "eval" / tiny_model.name / "mmau_predictions.json").read_text())
    assert [p["id"] for p in predictions] == ["q2"]


# --- GRPO's prompt format follows the SFT model's -----------------------------------------------------

@pytest.mark.parametrize("flags, expected", [([], "structured"), (["--set", "prompt.format=implicit"], "implicit")])
def test_grpo_asks_in_the_format_its_model_was_trained_in(tmp_path, capsys, monkeypatch, flags, expected):
    import sari_train.grpo.train as grpo

    model = tmp_path / "sft" / "final"
    model.mkdir(parents=True)
    (model / "config.yaml").write_text("model: base\nprompt: {format: structured}\n")
    seen = []
    monkeypatch.setattr(grpo, "train_grpo", lambda config: seen.append(config) or {"left_out": {}})
    code, _, err = run_cli(sari_train, ["grpo", "--model", model, "--workspace", tmp_path / "ws",
                                        "--out", tmp_path / "grpo", *flags], capsys)
    assert code == 0, err
    assert seen[0].prompt.format == expected
    assert run_records(tmp_path / "grpo")[0]["config"]["prompt"]["format"] == expected


def test_sft_records_the_prompt_format_with_the_model(tmp_path):
    from sari_train.checkpoints import saved_prompt_style

    (tmp_path / "config.yaml").write_text("prompt: {format: free}\n")
    assert saved_prompt_style(tmp_path).format == "free"
    assert saved_prompt_style(tmp_path / "nothing-here") is None


# --- one-line errors: tiny-model onto a file, publish --eval-split nosuch -------------------------------

@pytest.mark.parametrize("flags", [[], ["--replica", "qwen2-audio"]])
def test_tiny_model_onto_an_existing_file(tmp_path, capsys, flags):
    file = tmp_path / "model.bin"
    file.write_text("x")
    code, _, err = run_cli(sari_train, ["tiny-model", file, *flags], capsys)
    assert code == 2 and "existing file" in one_line_error(err, "sari-train tiny-model")
    assert file.read_text() == "x"


def test_publish_refuses_an_eval_split_the_workspace_lacks(tmp_path, capsys):
    root = audio_workspace(tmp_path / "ws", n=2)
    code, _, err = run_cli(sari_data, ["publish", root, "--eval-split", "nosuch", "--out", tmp_path / "hub",
                                       "--quiet"], capsys)
    line = one_line_error(err, "sari-data publish")
    assert code == 2 and "'nosuch'" in line and "test" in line and "--eval-split" in line
    assert not (tmp_path / "hub").exists()


# --- a failed run says why ---------------------------------------------------------------------------

def test_a_failed_eval_or_sft_records_its_reason(tmp_path, tiny_model, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "bench.json").write_text(json.dumps([{"id": "q1", "audio_id": "gone.wav", "question": "Loud?",
                                                      "choices": ["yes", "no"], "answer": "yes"}]))
    code, _, err = run_cli(sari_train, ["eval", "--model", tiny_model, "--benchmark", tmp_path / "bench.json",
                                        "--audio-root", tmp_path / "audio", "--out", tmp_path / "eval"], capsys)
    assert code == 2
    [record] = run_records(tmp_path / "eval")
    assert record["status"] == "failed" and "has its audio under" in record["error"]

    root = audio_workspace(tmp_path / "ws", n=2, split="test")  # nothing in split train
    code, _, err = run_cli(sari_train, ["sft", "--model", tiny_model, "--workspace", root, "--out", tmp_path / "sft",
                                        "--set", "max_steps=1"], capsys)
    assert code == 2
    [record] = run_records(tmp_path / "sft")
    assert record["status"] == "failed" and "no items in split 'train'" in record["error"]
