"""Every command a user runs on a hub model runs on both replicas through the same path as a hub
id (`AudioLM.load(path)`): eval, difficulty, captions --local-model, short SFT and GRPO runs, and
an experiment (one arm, one seed: SFT, GRPO, scoring)."""

import json

import pandas as pd
import pytest
import torch

from corpus.store import Workspace
from corpus.testing import dummy_benchmark, dummy_item
from sari_train.models.adapter import AudioLM

REPLICAS = ["qwen2-audio", "qwen2.5-omni"]


@pytest.mark.slow
@pytest.mark.parametrize("name", REPLICAS)
def test_eval(replica_dirs, tmp_path, name):
    from sari_train.evaluate import EvalConfig, run_eval

    config = EvalConfig(models=[f"m={replica_dirs(name)}"], benchmark=dummy_benchmark(tmp_path), audio_root=tmp_path,
                        max_new_tokens=3, batch_size=2, shuffled=False, out=tmp_path / "out", device="auto",
                        dtype="auto")
    table = run_eval(config)
    assert table.loc["n", "m"] == 3
    assert len(json.loads((tmp_path / "out" / "m" / "mmau_predictions.json").read_text())) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", REPLICAS)
def test_difficulty(replica_dirs, tmp_path, name):
    from sari_data.difficulty import DifficultyConfig, run_difficulty

    root = tmp_path / "ws"
    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, workspace=root) for i in range(3)])
    run_difficulty(root, DifficultyConfig(model=str(replica_dirs(name)), k=2, max_new_tokens=3), progress=False)
    with Workspace(root, read_only=True) as ws:
        assert len(ws.frame("rollouts")) == 6 and len(ws.frame("difficulty")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", REPLICAS)
def test_captions_with_a_local_model(replica_dirs, tmp_path, name):
    from sari_data.llm.captions import run_captions

    with Workspace(tmp_path / "ws", create=True) as ws:
        ws.upsert([dummy_item(i, workspace=tmp_path / "ws", caption=None) for i in range(3)])
    results = run_captions(tmp_path / "ws", local_model=str(replica_dirs(name)), progress=False,
                           local=dict(batch_size=2, device="cpu", dtype="float32", max_new_tokens=8))
    assert results["captioned"] + results["failed"] == 3  # random weights: noise, captioned or failed with a reason
    assert len((tmp_path / "ws" / "llm_cache.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", REPLICAS)
def test_sft_then_grpo_and_the_checkpoints_load(replica_dirs, train_workspace, tmp_path, name):
    from sari_train.grpo.train import GRPOConfig, train_grpo
    from sari_train.sft import SFTConfig, train_sft

    sft = train_sft(SFTConfig(model=str(replica_dirs(name)), workspace=train_workspace, out=tmp_path / "sft",
                              max_steps=2, lr=1e-3, batch_size=2, eval_limit=2, eval_max_new_tokens=3,
                              tensorboard=False))
    grpo = train_grpo(GRPOConfig(model=sft["final"], workspace=train_workspace, out=tmp_path / "grpo", max_steps=1,
                                 lr=1e-3, num_generations=2, prompts_per_batch=1, max_completion_length=4,
                                 eval_split=None, tensorboard=False, sampler="random"))
    steps = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in steps if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(r["grad_norm"] > 0 for r in trained)
    [row] = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and "reward" in row and row["grad_norm"] >= 0
    loaded = AudioLM.load(grpo["final"])
    original = AudioLM.load(replica_dirs(name))
    assert loaded.kind == original.kind and loaded.chat_template == original.chat_template
    # loading reproduces the saved model: the same logits each time, and not the untrained ones
    logits = [last_logits(lm) for lm in (loaded, AudioLM.load(grpo["final"]), original)]
    assert torch.equal(logits[0], logits[1]) and not torch.allclose(logits[0], logits[2])


def last_logits(lm: AudioLM) -> torch.Tensor:
    from corpus.testing import dummy_clip
    from sari_train.prompts import messages

    batch = lm.encode_prompts([messages("Is the tone high or low?", ["high", "low"])], [dummy_clip(1.0)])
    with torch.no_grad():
        return lm.model(**batch.to(lm.device).model_inputs()).logits[:, -1]


@pytest.mark.slow
@pytest.mark.parametrize("name", REPLICAS)
def test_experiment(replica_dirs, train_workspace, tmp_path, name):
    from sari_train.experiment import Arm, ExperimentConfig, run_experiment

    config = ExperimentConfig(
        workspace=train_workspace, base=str(replica_dirs(name)), seeds=[0], out=tmp_path / "exp",
        arms={"sari": Arm(format="structured", label="structured SFT then curriculum GRPO")},
        sft={"max_steps": 1, "batch_size": 2, "lr": 1e-3, "tensorboard": False},
        grpo={"max_steps": 1, "num_generations": 2, "prompts_per_batch": 1, "max_completion_length": 4, "lr": 1e-3,
              "tensorboard": False},
        eval_limit=2, eval_max_new_tokens=3)
    outcome = run_experiment(config, "sari-train experiment")
    results = pd.read_csv(tmp_path / "exp" / "results.csv")
    assert list(results.arm) == ["base", "sari"] and (results.n == 2).all()
    assert set(outcome["gains"]) == {"sari"}
    assert (tmp_path / "exp" / "sari-seed0" / "final" / "config.yaml").exists()
