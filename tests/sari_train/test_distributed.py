"""Distribution through accelerate: two gloo processes on CPU (torchrun) match one process with
twice the gradient accumulation — same prompts, same completions (sampling is seeded per
micro-batch, not per process), gradients averaged by DDP instead of summed by accumulation."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, tmp_path):
    (tmp_path / "mod").mkdir(exist_ok=True)
    (tmp_path / "mod" / "ddp_rewards.py").write_text(
        "def length(prompts, completions, **_):\n    return [len(c) / 10 for c in completions]\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path / 'mod'}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_with_doubled_accumulation(tiny_model_dir, train_workspace, tmp_path):
    config = dict(model=str(tiny_model_dir), workspace=str(train_workspace), sampler="random", max_steps=3, lr=1e-3,
                  num_generations=4, prompts_per_batch=2, max_completion_length=6, beta=0.04, eval_split="test",
                  eval_limit=8, eval_max_new_tokens=4, tensorboard=False, rewards={"ddp_rewards.length": 1.0},
                  scale_rewards="batch", loss_type="dapo")
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(config))
    common = ["-m", "sari_train.cli", "grpo", "--config", str(tmp_path / "grpo.yaml")]
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), *common,
         "--grad-accum", "1", "--out", str(tmp_path / "two")], tmp_path)
    run([*common, "--grad-accum", "2", "--out", str(tmp_path / "one")], tmp_path)

    def metrics(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    one, two = metrics("one"), metrics("two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 1, 2, 3, 3]
    for a, b in zip(one, two):
        for key in a:
            if key in ("step_time",) or a[key] is None:
                continue
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (a["step"], key)
    assert one[3]["kl"] > 0 and one[1]["reward_std"] > 0  # a real learning signal moved the weights


@pytest.mark.slow
def test_eval_sharded_over_two_processes_equals_one(tiny_model_dir, tmp_path):
    """torchrun with 2 gloo processes: each answers every other item, rank 0 gathers and writes the
    same predictions and table as a single process."""
    from corpus.testing import dummy_benchmark

    bench = dummy_benchmark(tmp_path, n=5)
    common = ["-m", "sari_train.cli", "eval", "--model", f"m={tiny_model_dir}", "--benchmark", str(bench),
              "--audio-root", str(tmp_path), "--max-new-tokens", "4", "--batch-size", "2", "--device", "cpu"]
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), *common,
         "--out", str(tmp_path / "two")], tmp_path)
    run([*common, "--out", str(tmp_path / "one")], tmp_path)
    one, two = ((tmp_path / out / "m" / "mmau_predictions.json").read_text() for out in ("one", "two"))
    assert one == two and len(json.loads(one)) == 5  # an MMAU-style benchmark gets MMAU's prediction file only
    report = {out: json.loads((tmp_path / out / "report.json").read_text()) for out in ("one", "two")}
    assert report["one"]["accuracy"] == report["two"]["accuracy"]


@pytest.mark.slow
def test_a_group_spanning_two_processes_trains_like_one_process(tiny_model_dir, train_workspace, tmp_path):
    """TRL's rule: per_device_train_batch_size 2 with G = 4 on 2 processes is one group per step, half
    on each process (both sample it from the same seed and keep their half)."""
    config = dict(model=str(tiny_model_dir), workspace=str(train_workspace), sampler="random", max_steps=2, lr=1e-2,
                  num_generations=4, max_completion_length=6, beta=0.04, eval_split=None, tensorboard=False,
                  rewards={"ddp_rewards.length": 1.0}, grad_accum=1)
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(config))
    common = ["-m", "sari_train.cli", "grpo", "--config", str(tmp_path / "grpo.yaml")]
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), *common,
         "--per_device_train_batch_size", "2", "--out", str(tmp_path / "two")], tmp_path)
    run([*common, "--prompts-per-batch", "1", "--out", str(tmp_path / "one")], tmp_path)
    one, two = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                for name in ("one", "two"))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        for key in a.keys() - {"step_time"}:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (a["step"], key)
    assert one[1]["kl"] > 0
