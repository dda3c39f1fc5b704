"""Mixed precision trains: bfloat16 runs keep float32 master weights, so small updates are not
rounded away. The same short SFT (lr 1e-5) and GRPO (lr 1e-6) runs in float32 and bfloat16 move
the loss by nearly the same amount; saved models are in the dtype asked for."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sari_train.grpo.train import GRPOConfig, train_grpo
from sari_train.models.adapter import AudioLM
from sari_train.sft import SFTConfig, train_sft


def losses(out):
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def length_reward(prompts, completions, **_):
    return [len(c) / 10 for c in completions]


def sft_drop(model, ws, out, dtype):
    """Loss of step 1 minus loss of step 25: full batches, so every step sees the same 16 items."""
    train_sft(SFTConfig(model=str(model), workspace=ws, out=out, dtype=dtype, max_steps=25, lr=1e-5, batch_size=16,
                        schedule="constant", eval_split=None, tensorboard=False))
    curve = losses(out)
    return curve[0] - curve[-1]


def grpo_drop(model, ws, out, dtype):
    """With μ = 4 passes over each round's rollouts and β = 0, pass 1 has ratio 1 and loss 0 (group-
    normalised advantages); later passes go below 0 as far as the updates moved the policy. The
    logged loss is the mean over passes, so minus its sum over steps is how far the loss fell."""
    train_grpo(GRPOConfig(model=str(model), workspace=ws, out=out, dtype=dtype, max_steps=3, lr=1e-6,
                          num_generations=8, prompts_per_batch=2, max_completion_length=8, beta=0.0,
                          num_iterations=4, sampler="random", schedule="constant", eval_split=None,
                          rewards={f"{__name__}:length_reward": 1.0}, tensorboard=False))
    return -sum(losses(out))


@pytest.mark.slow
def test_bfloat16_sft_lowers_the_loss_like_float32(tiny_model_dir, train_workspace, tmp_path):
    fp32 = sft_drop(tiny_model_dir, train_workspace, tmp_path / "fp32", "float32")
    bf16 = sft_drop(tiny_model_dir, train_workspace, tmp_path / "bf16", "bfloat16")
    print(f"SFT loss drop over 25 steps at lr 1e-5: float32 {fp32:.4f}, bfloat16 {bf16:.4f}, ratio {bf16 / fp32:.2f}")
    assert fp32 > 0.02 and bf16 >= 0.8 * fp32
    saved = load_file(tmp_path / "bf16" / "final" / "model.safetensors")
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.bfloat16}
    assert AudioLM.load(tmp_path / "bf16" / "final", dtype="bfloat16").model.config.dtype == torch.bfloat16


@pytest.mark.slow
def test_bfloat16_grpo_lowers_the_policy_loss_like_float32(tiny_model_dir, train_workspace, tmp_path):
    fp32 = grpo_drop(tiny_model_dir, train_workspace, tmp_path / "fp32", "float32")
    bf16 = grpo_drop(tiny_model_dir, train_workspace, tmp_path / "bf16", "bfloat16")
    print(f"GRPO policy-loss drop over 3 steps at lr 1e-6: float32 {fp32:.3g}, bfloat16 {bf16:.3g}, "
          f"ratio {bf16 / fp32:.2f}")
    assert fp32 > 0 and bf16 >= 0.8 * fp32
