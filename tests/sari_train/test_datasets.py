"""Training and evaluation from a dataset: our published folder gives the workspace's numbers;
any audio multiple-choice table works through a column mapping."""

import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from sari_train.config import ConfigError
from sari_train.data import WorkspaceSource
from sari_train.datasets import DatasetSource, gold_answer
from sari_train.evaluate import EvalConfig, run_eval
from sari_train.grpo.train import GRPOConfig, train_grpo
from sari_train.sft import SFTConfig, train_sft


@pytest.fixture(scope="module")
def published(train_workspace, tmp_path_factory):
    """The training workspace published as `sari-data publish` does (a copy: publishing records a run)."""
    from sari_data.publish.run import publish

    root = tmp_path_factory.mktemp("pub")
    shutil.copytree(train_workspace, root / "ws")
    publish(root / "ws", root / "hub", progress=False)
    return root / "ws", root / "hub"


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "step_time"} for r in rows]


def test_published_configs_give_the_workspace_examples(published):
    ws, hub = published
    # train_workspace: 14 valid structured chains, 16 scored train items (all solved), 8 test items
    for config, split, cot, n in (("sft", "train", "structured", 14), ("rl", "train", None, 16),
                                  ("eval", "test", None, 8)):
        ours, _ = DatasetSource(f"{hub}:{config}").examples(split, cot)
        theirs, _ = WorkspaceSource(ws).examples(split, cot)
        assert len(ours) == len(theirs) == n, config  # two empty lists would compare equal
        assert [(e.id, e.question, e.choices, e.answer, e.thinking) for e in ours] == \
               [(e.id, e.question, e.choices, e.answer, e.thinking) for e in theirs]
        assert all(np.array_equal(a.waveform(), b.waveform()) for a, b in zip(ours, theirs))
    ratings = DatasetSource(f"{hub}:rl").difficulty("train")
    expected = WorkspaceSource(ws).difficulty("train")
    assert len(ratings) == len(expected) == 16
    for item_id, row in expected.items():
        assert (ratings[item_id].bucket, ratings[item_id].pass_rate) == (row.bucket, row.pass_rate)


@pytest.mark.slow
def test_sft_grpo_and_eval_from_the_published_folder_match_the_workspace(published, tiny_model_dir, tmp_path):
    ws, hub = published
    common = dict(model=str(tiny_model_dir), max_steps=2, eval_limit=4, eval_max_new_tokens=4, tensorboard=False)
    sft = dict(common, lr=3e-3, batch_size=4, prompt={"format": "structured"})
    train_sft(SFTConfig(workspace=ws, out=tmp_path / "sft-ws", **sft))
    train_sft(SFTConfig(dataset=f"{hub}:sft", eval_dataset=f"{hub}:eval", out=tmp_path / "sft-ds", **sft))
    assert metrics(tmp_path / "sft-ws") == metrics(tmp_path / "sft-ds")

    grpo = dict(common, lr=1e-3, num_generations=4, prompts_per_batch=2, grad_accum=2, max_completion_length=5,
                sampler="curriculum", beta=0.0)
    train_grpo(GRPOConfig(workspace=ws, out=tmp_path / "grpo-ws", **grpo))
    train_grpo(GRPOConfig(dataset=f"{hub}:rl", eval_dataset=f"{hub}:eval", out=tmp_path / "grpo-ds", **grpo))
    rows = metrics(tmp_path / "grpo-ds")
    assert rows == metrics(tmp_path / "grpo-ws")
    assert [r["curriculum/bucket"] for r in rows if "curriculum/bucket" in r] == [0.0, 1.0]  # easy → hard

    evaluation = dict(models=[str(tiny_model_dir)], split="test", max_new_tokens=4, batch_size=4)
    by_ws = run_eval(EvalConfig(workspace=ws, out=tmp_path / "eval-ws", **evaluation))
    by_ds = run_eval(EvalConfig(dataset=f"{hub}:eval", out=tmp_path / "eval-ds", **evaluation))
    assert by_ws.equals(by_ds) and by_ws.loc["n"].iloc[0] == 8


def wav_bytes(freq: float) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(8000) / 16000
    sf.write(buffer, 0.5 * np.sin(2 * np.pi * freq * t), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def foreign(tmp_path):
    """Someone else's audio MCQ table: other column names, answers as text or letter, one row without audio."""
    rows = [{"uid": "a", "prompt": "Is it high?", "options": ["yes", "no"], "gold": "yes", "wav": {"bytes": wav_bytes(2000), "path": "a.wav"}},
            {"uid": "b", "prompt": "Is it low?", "options": ["yes", "no"], "gold": "B", "wav": {"bytes": wav_bytes(200), "path": "b.wav"}},
            {"uid": "c", "prompt": "Which?", "options": ["x", "y"], "gold": "y", "wav": None},
            {"uid": "d", "prompt": "Which?", "options": ["x", "y"], "gold": "z", "wav": {"bytes": wav_bytes(500), "path": "d.wav"}}]
    (tmp_path / "mcq" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mcq" / "data" / "test-00000-of-00001.parquet")
    return tmp_path / "mcq"


@pytest.mark.parametrize("streaming", [False, True])
def test_any_audio_mcq_through_a_column_mapping(foreign, streaming):
    columns = {"id": "uid", "question": "prompt", "choices": "options", "answer": "gold", "audio": "wav"}
    examples, left_out = DatasetSource(str(foreign), columns, streaming).examples("test")
    assert [(e.id, e.answer) for e in examples] == [("a", "yes"), ("b", "no")]
    assert left_out["no audio"] == 1 and left_out["answer not among the choices"] == 1
    wave = examples[1].waveform()
    assert wave.dtype == np.float32 and len(wave) == 8000
    assert np.abs(np.fft.rfft(wave)).argmax() == pytest.approx(200 * 8000 / 16000, abs=1)  # the 200 Hz clip


def test_missing_columns_and_sources_are_one_line_errors(foreign, tmp_path):
    with pytest.raises(ConfigError, match=r"no column choices, answer, audio \(columns: uid, prompt.*map yours with --set columns"):
        DatasetSource(str(foreign), {"question": "prompt"}).examples("test")
    with pytest.raises(ConfigError, match=r"cannot load it.*check the id or folder"):
        DatasetSource(str(tmp_path / "nowhere")).examples("train")
    with pytest.raises(ValueError, match="exactly one of workspace or dataset"):
        SFTConfig(model="m", workspace=tmp_path, dataset="x")


def test_gold_answer_from_text_index_or_letter():
    assert [gold_answer(a, ["low", "high"]) for a in ("high", 1, "A", "c", 2, True, "mid")] == \
           ["high", "high", "low", None, None, None, None]


def test_a_split_the_dataset_lacks_names_its_splits_and_the_flag(published, tiny_model_dir, tmp_path, capsys):
    """`eval` (default split test) on the `rl` config, which has only train; the training commands'
    held-out split (--eval-split, default test) likewise; a workspace's split likewise."""
    from sari_train.cli import main

    ws, hub = published
    common = ["--model", str(tiny_model_dir), "--out", str(tmp_path / "e")]
    assert main(["eval", *common, "--dataset", f"{hub}:rl"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (f"sari-train eval: error: dataset {hub}:rl has no split 'test' (its splits: train); choose one "
                    f"with --split, or take the held-out items from its eval config: --dataset {hub}:eval")
    assert main(["eval", *common, "--workspace", str(ws), "--split", "dev"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "has no items with audio in split 'dev' (its splits with audio: test (8), train (16)); choose one with --split")

    assert main(["grpo", *common, "--dataset", f"{hub}:rl", "--max-steps", "1", "--report-to", "none"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bars
    assert line.startswith("sari-train grpo: error: ")
    assert "has no split 'test' (its splits: train); choose one with --eval-split" in line
    assert line.endswith(f"--eval-dataset {hub}:eval")
    assert main(["sft", *common, "--dataset", f"{hub}:sft", "--split", "dev", "--report-to", "none"]) == 2
    assert "has no split 'dev' (its splits: train); choose one with --split" in capsys.readouterr().err
