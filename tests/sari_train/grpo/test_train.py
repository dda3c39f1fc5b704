"""The GRPO loop end to end on a tiny Qwen2-Audio: metrics under TRL's names, the curriculum
order, reference handling, zero-variance filtering."""

import json
import zlib

import pytest

from sari_train.grpo.train import GRPOConfig, train_grpo


def run(model, ws, out, **kw):
    base = dict(model=str(model), workspace=ws, out=out, max_steps=3, lr=1e-3, num_generations=4,
                prompts_per_batch=2, grad_accum=2, max_completion_length=6, eval_split=None, tensorboard=False,
                sampler="random")
    train_grpo(GRPOConfig(**{**base, **kw}))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return rows, samples


@pytest.mark.slow
def test_metrics_have_trl_names_and_add_up(tiny_model_dir, train_workspace, tmp_path):
    rows, samples = run(tiny_model_dir, train_workspace, tmp_path / "g", num_iterations=2, beta=0.04,
                        rewards={"accuracy": 2.0, "format": 1.0}, tensorboard=True, log_completions=3)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in ("reward", "reward_std", "rewards/accuracy/mean", "rewards/format/mean", "frac_reward_zero_std",
                    "kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                    "completions/mean_length", "step_time", "loss", "learning_rate"):
            assert key in r, key
        assert r["reward"] == pytest.approx(2 * r["rewards/accuracy/mean"] + r["rewards/format/mean"])
        assert 0 <= r["frac_reward_zero_std"] <= 1 and 1 <= r["completions/mean_length"] <= 6
        assert r["kl"] >= 0 and r["entropy"] > 0
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # the policy starts as the reference
    assert rows[-1]["kl"] > 0 or rows[0]["frac_reward_zero_std"] == 1.0
    assert len(samples) == 9 and {"completion", "reward", "answer", "item_id"} <= set(samples[0])
    assert (tmp_path / "g" / "curves.png").exists() and list((tmp_path / "g" / "tensorboard").iterdir())


def test_curriculum_walks_buckets_easy_to_hard(tiny_model_dir, train_workspace, tmp_path):
    # 16 items in buckets 0..3 (4 each); 4 prompts per step → one bucket per step
    rows, _ = run(tiny_model_dir, train_workspace, tmp_path / "c", sampler="curriculum", max_steps=4, beta=0.0,
                  num_iterations=1, lr=1e-5)
    assert [r["curriculum/bucket"] for r in rows] == [0.0, 1.0, 2.0, 3.0]
    assert all("kl" not in r for r in rows)  # β = 0: no reference model at all


@pytest.mark.slow
def test_lora_reference_is_the_base_with_adapters_off(tiny_model_dir, train_workspace, tmp_path):
    rows, _ = run(tiny_model_dir, train_workspace, tmp_path / "l", lora={"r": 4, "alpha": 8}, beta=0.1, lr=5e-2,
                  rewards={f"{__name__}:length_reward": 1.0})
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at zero: policy == base
    assert rows[-1]["kl"] > 1e-6


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def odd_items_only(prompts, completions, item_id, **_):
    """Constant (zero-variance) for items whose id hashes even; varies with length otherwise."""
    return [1.0 if zlib.crc32(i.encode()) % 2 == 0 else float(len(c) % 3) for c, i in zip(completions, item_id)]


def test_zero_variance_groups_are_filtered_and_replaced(tiny_model_dir, train_workspace, tmp_path):
    rows, samples = run(tiny_model_dir, train_workspace, tmp_path / "z", rewards={f"{__name__}:odd_items_only": 1.0},
                        filter_zero_variance=True, beta=0.0, log_completions=8, lr=1e-5)
    assert any(r["frac_reward_zero_std"] > 0 for r in rows)  # measured before filtering
    assert samples and all(zlib.crc32(s["item_id"].encode()) % 2 == 1 for s in samples)


def test_mask_truncated_completions_drops_rows_without_a_stop_token():
    import torch

    from sari_train.grpo.groups import MicroBatch
    from sari_train.grpo.train import loss_mask
    from sari_train.rollout import Generated

    stop = 9
    ids = torch.tensor([[5, stop, 0], [5, 6, 7], [stop, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    x = MicroBatch(Generated(None, None, ids, mask), torch.zeros(3), 1)
    base = dict(model="m", workspace="w")
    assert torch.equal(loss_mask(x, GRPOConfig(**base), [stop]), mask)
    assert loss_mask(x, GRPOConfig(**base, mask_truncated_completions=True), [stop]).tolist() == [
        [1, 1, 0], [0, 0, 0], [1, 0, 0]]  # the row cut at the length limit leaves the loss
