"""The audio encoder (and projector) trainable in GRPO (`freeze_audio_tower: false`): the encoder
runs once per prompt inside the policy pass, its frames shared by the G completions, with the
gradients of the plain path where every row encodes its own audio."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from sari_train.grpo.train import GRPOConfig, completion_logits, train_grpo
from tests.sari_train.test_shared_prefix import G, grpo_loss, plain_logits, ragged_rollout


def grads_of(lm, loss):
    lm.model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("shared", [True, False])
def test_encoder_once_per_prompt_has_the_per_row_gradients(tiny_lm, shared):
    gen = ragged_rollout(tiny_lm)
    ours = grads_of(tiny_lm, grpo_loss(completion_logits(tiny_lm, gen, G, shared=shared, fresh_audio=True), gen, "grpo"))
    per_row = replace(gen, prompt_embeds=tiny_lm.prompt_embeddings(gen.prompt))  # each row encodes its audio
    theirs = grads_of(tiny_lm, grpo_loss(plain_logits(tiny_lm, per_row), per_row, "grpo"))
    audio = [n for n in theirs if "audio_tower" in n]
    assert audio and set(ours) == set(theirs)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4, msg=name)
    assert any(ours[n].abs().sum() > 0 for n in audio)


@pytest.mark.slow
def test_grpo_moves_the_audio_tower_only_when_asked(tiny_model_dir, train_workspace, tmp_path):
    def tower_after(out, freeze):
        train_grpo(GRPOConfig(model=str(tiny_model_dir), workspace=train_workspace, out=out, max_steps=2, lr=1e-2,
                              num_generations=4, prompts_per_batch=2, max_completion_length=6, eval_split=None,
                              tensorboard=False, sampler="random", beta=0.0, freeze_audio_tower=freeze,
                              rewards={f"{__name__}:length_reward": 1.0}))
        weights = {}
        for shard in (out / "final").glob("*.safetensors"):
            weights.update(load_file(shard))
        return {n: w for n, w in weights.items() if "audio_tower.layers" in n}

    start = {}
    for shard in tiny_model_dir.glob("*.safetensors"):
        start.update({n: w for n, w in load_file(shard).items() if "audio_tower.layers" in n})
    frozen, trained = tower_after(tmp_path / "frozen", True), tower_after(tmp_path / "trained", False)
    assert frozen.keys() == trained.keys() and frozen
    assert all(torch.equal(frozen[n], start[n]) for n in frozen)
    assert sum(not torch.equal(trained[n], start[n]) for n in trained) > len(trained) // 2
    saved = json.loads((tmp_path / "trained" / "final" / "config.json").read_text())
    assert saved["model_type"] == "qwen2_audio"


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]
