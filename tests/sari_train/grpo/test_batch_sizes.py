"""TRL's batch sizes: `per_device_train_batch_size` counts completions, so a group of G may span
micro-batches. Such a run trains on the same completions with the same loss as the run whose
micro-batches hold the same groups whole."""

import json

import pytest

from sari_train.grpo.train import GRPOConfig, train_grpo


def metrics(model, ws, out, **kw):
    train_grpo(GRPOConfig(model=str(model), workspace=ws, out=out, max_steps=2, lr=1e-2, num_generations=4,
                          max_completion_length=6, eval_split=None, tensorboard=False, sampler="random", beta=0.04,
                          num_iterations=2, rewards={"batch_rewards.length": 1.0}, **kw))
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("split, whole", [
    (dict(per_device_train_batch_size=2, grad_accum=4), dict(prompts_per_batch=1, grad_accum=2)),  # half a group
    (dict(per_device_train_batch_size=6, grad_accum=2), dict(prompts_per_batch=3, grad_accum=1)),  # 1½ groups
])
def test_groups_spanning_micro_batches_train_like_whole_groups(tiny_model_dir, train_workspace, tmp_path, monkeypatch,
                                                               split, whole):
    (tmp_path / "batch_rewards.py").write_text(  # rewards that vary within a group: a learning signal
        "def length(prompts, completions, **_):\n    return [len(c) / 10 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a = metrics(tiny_model_dir, train_workspace, tmp_path / "split", **split)
    b = metrics(tiny_model_dir, train_workspace, tmp_path / "whole", **whole)
    assert [r["step"] for r in a] == [1, 2]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x.keys() - {"step_time"}:
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-5), key
    assert a[1]["kl"] > 0  # the first step moved the weights both runs compare at step 2
