"""FSDP2 on two CPU processes (gloo) matches one process with twice the accumulation: SFT and
GRPO metrics, the gathered final weights, and a resume from a sharded run's checkpoint.
accelerate only selects FSDP on GPUs, so `fsdp_on_cpu.py` switches it on (see there)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).parents[2]
SHIM = Path(__file__).with_name("fsdp_on_cpu.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, tmp_path, fsdp: bool, ok: bool = True):
    (tmp_path / "mod").mkdir(exist_ok=True)
    (tmp_path / "mod" / "fsdp_rewards.py").write_text(
        "def length(prompts, completions, **_):\n    return [len(c) / 10 for c in completions]\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path / 'mod'}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    launch = (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), str(SHIM)]
              if fsdp else ["-m", "sari_train.cli"])
    done = subprocess.run([sys.executable, *launch, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert (done.returncode == 0) == ok, done.stderr[-3000:]
    return done


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "step_time"} for r in rows]


def assert_close(one, two):
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        for key, value in a.items():
            if value is not None:
                assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-5), (a["step"], key)


@pytest.mark.slow
def test_fsdp_sft_matches_one_process_and_resumes(tiny_model_dir, train_workspace, tmp_path):
    config = dict(model=str(tiny_model_dir), workspace=str(train_workspace), max_steps=3, lr=1e-3, batch_size=4,
                  eval_limit=8, eval_max_new_tokens=4, tensorboard=False, save_every=2)
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(config))
    common = ["sft", "--config", str(tmp_path / "sft.yaml")]
    run([*common, "--out", str(tmp_path / "fsdp")], tmp_path, fsdp=True)
    run([*common, "--grad-accum", "2", "--out", str(tmp_path / "one")], tmp_path, fsdp=False)
    assert_close(metrics(tmp_path / "one"), metrics(tmp_path / "fsdp"))
    one, fsdp = (load_file(tmp_path / r / "final" / "model.safetensors") for r in ("one", "fsdp"))
    assert one.keys() == fsdp.keys() and all((one[k] - fsdp[k]).abs().max() < 1e-5 for k in one)

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "fsdp" / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    shutil.copy(tmp_path / "fsdp" / "metrics.jsonl", resumed / "metrics.jsonl")
    run([*common, "--out", str(resumed), "--resume"], tmp_path, fsdp=True)
    assert metrics(resumed) == metrics(tmp_path / "fsdp")


@pytest.mark.slow
def test_fsdp_grpo_matches_one_process(tiny_model_dir, train_workspace, tmp_path):
    config = dict(model=str(tiny_model_dir), workspace=str(train_workspace), sampler="random", max_steps=2, lr=1e-3,
                  num_generations=4, prompts_per_batch=2, max_completion_length=6, beta=0.04, eval_split="test",
                  eval_limit=7, eval_max_new_tokens=4, tensorboard=False, rewards={"fsdp_rewards.length": 1.0},
                  scale_rewards="batch", loss_type="dapo", shared_prefix=False)  # its prompt pass skips FSDP's root
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(config))
    common = ["grpo", "--config", str(tmp_path / "grpo.yaml")]
    run([*common, "--grad-accum", "1", "--out", str(tmp_path / "fsdp")], tmp_path, fsdp=True)
    run([*common, "--grad-accum", "2", "--out", str(tmp_path / "one")], tmp_path, fsdp=False)
    one = metrics(tmp_path / "one")
    assert_close(one, metrics(tmp_path / "fsdp"))
    assert one[2]["kl"] > 0


@pytest.mark.slow
def test_shared_prefix_grpo_under_fsdp_is_a_one_line_error(tiny_model_dir, train_workspace, tmp_path):
    config = dict(model=str(tiny_model_dir), workspace=str(train_workspace), max_steps=1, tensorboard=False)
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(config))
    done = run(["grpo", "--config", str(tmp_path / "grpo.yaml"), "--out", str(tmp_path / "out")], tmp_path,
               fsdp=True, ok=False)
    assert "sari-train grpo: error: shared_prefix does not run under FSDP" in done.stderr
    assert "NotImplementedError" not in done.stderr and "Loading weights" not in done.stderr  # before loading
