"""The replicas the way a GPU user runs them, on CPU: `accelerate launch --multi_gpu
--num_processes 2` (gloo), `dtype: bfloat16` (float32 master weights under autocast),
`gradient_checkpointing: true`; SFT, then GRPO with LoRA, on the Qwen2-Audio replica, and
`sari-train eval` sharded over two processes on the Omni replica."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]


def launch(args: list[str], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path / 'mod'}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "sari_train.cli", *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_bf16_sft_then_lora_grpo_with_checkpointing_on_two_processes(replica_dirs, train_workspace, tmp_path):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "launch_rewards.py").write_text(  # random weights never answer right: reward length
        "def length(prompts, completions, **_):\n    return [len(c) / 10 for c in completions]\n")
    common = dict(workspace=str(train_workspace), dtype="bfloat16", gradient_checkpointing=True, eval_limit=2,
                  eval_max_new_tokens=3, tensorboard=False)
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(dict(common, model=str(replica_dirs("qwen2-audio")),
                                                           max_steps=2, batch_size=2, lr=1e-4)))
    launch(["sft", "--config", str(tmp_path / "sft.yaml"), "--out", str(tmp_path / "sft")], tmp_path)
    sft = metrics(tmp_path / "sft")
    assert [r["step"] for r in sft] == [0, 1, 2, 2] and sft[1]["grad_norm"] > 0
    # 2 processes x batch 2 per step over the 16 train items: a quarter epoch per step (an eighth on one)
    assert [r["epoch"] for r in sft if "epoch" in r] == [0.25, 0.5]

    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(dict(
        common, model=str(tmp_path / "sft" / "final"), lora={"r": 4, "alpha": 8}, max_steps=2, lr=1e-3,
        num_generations=2, prompts_per_batch=1, max_completion_length=4, sampler="random", beta=0.04,
        rewards={"launch_rewards.length": 1.0})))
    launch(["grpo", "--config", str(tmp_path / "grpo.yaml"), "--out", str(tmp_path / "grpo")], tmp_path)
    grpo = metrics(tmp_path / "grpo")
    assert [r["step"] for r in grpo] == [0, 1, 2, 2]
    assert grpo[1]["grad_norm"] > 0 and grpo[2]["kl"] > 0  # the adapters moved away from the reference
    for run in ("sft", "grpo"):
        assert json.loads((tmp_path / run / "final" / "config.json").read_text())["dtype"] == "bfloat16"
        [record] = [json.loads(p.read_text()) for p in (tmp_path / run / "runs").glob("*.json")]  # rank 0's only
        assert record["status"] == "ok" and record["config"]["gradient_checkpointing"] is True
        assert record["config"]["dtype"] == "bfloat16"  # float32 master weights under bf16 autocast


@pytest.mark.slow
def test_eval_of_the_omni_replica_on_two_processes(replica_dirs, tmp_path):
    from corpus.testing import dummy_benchmark

    benchmark = dummy_benchmark(tmp_path)
    launch(["eval", "--model", f"omni={replica_dirs('qwen2.5-omni')}", "--benchmark", str(benchmark),
            "--audio-root", str(tmp_path), "--max-new-tokens", "3", "--batch-size", "2", "--dtype", "bfloat16",
            "--out", str(tmp_path / "out")], tmp_path)
    assert len(json.loads((tmp_path / "out" / "omni" / "mmau_predictions.json").read_text())) == 3
    [record] = (tmp_path / "out" / "runs").glob("*.json")
    assert json.loads(record.read_text())["results"]["processes"] == 2
