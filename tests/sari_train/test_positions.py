"""Sampling is the policy being trained: one position rule for left-padded prompts in prefill,
every decode step and the training passes, and a sampler whose rows draw from their own seeds, so a
row's completions and log-probs are the same alone or in any batch."""

import json

import numpy as np
import pytest
import torch

from corpus.testing import noise_clips
from sari_train.grpo import losses
from sari_train.grpo.train import GRPOConfig, completion_logits, train_grpo
from sari_train.models.adapter import AudioLM
from sari_train.prompts import PromptStyle, messages
from sari_train.rollout import LocalEngine, SamplingSettings, inverse_cdf

CLIP_SECONDS = [0.4, 3.0, 1.3]  # 0.4 s and 1.3 s rows are padded by tens of audio frames in a batch


def ragged_batch(lm: AudioLM):
    clips = [c[:int(s * 16000)] for c, s in zip(noise_clips(3, seconds=3.0), CLIP_SECONDS)]
    prompts = [messages(" ".join(["Listen."] * i + ["Is the tone high or low?"]), ["high", "low"]) for i in range(3)]
    return prompts, clips


def assert_sampling_is_the_training_pass(lm: AudioLM, settings: SamplingSettings, atol: float = 1e-5):
    """Sampled log-probs equal both training passes' (padded and unpadded rows), and each prompt
    alone samples what it sampled in the batch."""
    prompts, clips = ragged_batch(lm)
    batch = lm.encode_prompts(prompts, clips)
    assert (batch.attention_mask == 0).sum(-1).min() == 0 and (batch.attention_mask == 0).sum(-1).max() > 20
    gen = LocalEngine(lm).generate(batch, settings, with_logprobs=True)
    k, temperature = settings.k, settings.temperature or 1.0
    for shared in (True, False):
        logits = completion_logits(lm, gen, k, shared=shared)
        trained = losses.token_logprobs(logits, gen.completion_ids, temperature) * gen.completion_mask
        torch.testing.assert_close(gen.logprobs, trained, atol=atol, rtol=0)
    for i in range(len(prompts)):
        alone = LocalEngine(lm).generate(lm.encode_prompts(prompts[i:i + 1], clips[i:i + 1]), settings,
                                         with_logprobs=True, seeds=[(settings.seed, i)])
        length = alone.completion_ids.shape[1]
        assert torch.equal(alone.completion_ids, gen.completion_ids[i * k:(i + 1) * k, :length])
        assert not gen.completion_mask[i * k:(i + 1) * k, length:].any()
        torch.testing.assert_close(alone.logprobs, gen.logprobs[i * k:(i + 1) * k, :length], atol=atol, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_tiny_models_sample_what_they_train_on(tiny_lm, temperature):
    assert_sampling_is_the_training_pass(tiny_lm, SamplingSettings(k=3, temperature=temperature, max_new_tokens=10))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2-audio", "qwen2.5-omni"])
def test_replicas_sample_what_they_train_on(replica_dirs, name):
    lm = AudioLM.load(replica_dirs(name))
    for temperature in (1.0, 0.0):
        assert_sampling_is_the_training_pass(lm, SamplingSettings(k=2, temperature=temperature, max_new_tokens=6))


def test_sampled_rows_do_not_depend_on_the_batch_size(tiny_qwen2_audio):
    prompts, clips = ragged_batch(tiny_qwen2_audio)
    settings = SamplingSettings(k=4, temperature=1.0, max_new_tokens=8, seed=5)
    texts = [LocalEngine(tiny_qwen2_audio, batch_size=b).sample(prompts, clips, settings).texts for b in (1, 2, 3)]
    assert texts[0] == texts[1] == texts[2]
    assert any(len(set(group)) > 1 for group in texts[0])  # it does sample


def test_greedy_eval_does_not_depend_on_the_batch_size(tiny_qwen2_audio, ragged_workspace):
    from sari_train.evaluate import predict, workspace_items

    items = workspace_items(ragged_workspace, "test", None)
    settings = SamplingSettings(k=1, temperature=0.0, max_new_tokens=12)
    engine = LocalEngine(tiny_qwen2_audio)
    lengths = [len(i.audio) for i in items]
    assert len(items) >= 32 and max(lengths) > 5 * min(lengths)
    outputs = [predict(engine, items, PromptStyle(), settings, batch_size=b) for b in (1, 8, 32)]
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.slow
def test_grpo_metrics_do_not_depend_on_how_prompts_are_batched(tiny_model_dir, ragged_workspace, tmp_path):
    def run(out, prompts_per_batch, grad_accum):
        train_grpo(GRPOConfig(model=str(tiny_model_dir), workspace=ragged_workspace, out=out, max_steps=2, lr=1e-3,
                              num_generations=4, prompts_per_batch=prompts_per_batch, grad_accum=grad_accum,
                              max_completion_length=6, eval_split=None, tensorboard=False, sampler="random", beta=0.04))
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    one, four = run(tmp_path / "a", 1, 4), run(tmp_path / "b", 4, 1)
    assert [r["step"] for r in one] == [1, 2]
    for a, b in zip(one, four):
        assert a.keys() == b.keys()
        for key in a.keys() - {"step_time", "timestamp", "time"}:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
        assert a["sampling/logprob_diff_max"] < 1e-5  # the sampler is the policy trained


def test_inverse_cdf_draws_the_interval_holding_the_uniform():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]])
    logits = probs.log()  # the zero-probability token has an empty interval: never drawn
    draws = [int(inverse_cdf(logits, torch.tensor([u]))) for u in (0.0, 0.05, 0.1, 0.35, 0.69, 0.71, 0.999)]
    assert draws == [0, 0, 2, 2, 2, 3, 3]
    u = torch.from_numpy(np.random.default_rng(0).random(20_000))
    counts = torch.bincount(inverse_cdf(logits.expand(len(u), -1), u), minlength=4) / len(u)
    torch.testing.assert_close(counts, probs[0], atol=0.01, rtol=0)


def test_top_k_draws_only_among_the_k_most_likely_tokens(tiny_lm):
    prompts, clips = ragged_batch(tiny_lm)
    batch = tiny_lm.encode_prompts(prompts, clips)
    settings = SamplingSettings(k=6, temperature=1.5, top_k=2, max_new_tokens=8, seed=3)
    gen = LocalEngine(tiny_lm).generate(batch, settings, with_logprobs=True)
    logits = completion_logits(tiny_lm, gen, settings.k)
    rank = (logits > logits.gather(-1, gen.completion_ids.unsqueeze(-1))).sum(-1)  # tokens likelier than the drawn one
    assert rank[gen.completion_mask.bool()].max() <= 1  # always the first or second most likely
    assert rank[gen.completion_mask.bool()].max() == 1  # and not always the first (it samples)
    # the log-probs stay the full distribution's under the temperature (TRL's), as the training pass takes them
    trained = losses.token_logprobs(logits, gen.completion_ids, settings.temperature) * gen.completion_mask
    torch.testing.assert_close(gen.logprobs, trained, atol=1e-5, rtol=0)
