import pytest
import torch

from sari_train.prompts import messages
from sari_train.rollout import (LocalEngine, SamplingSettings, completion_mask,
                               lean_sampling_applies, row_uniforms, sample_after_prefill)
from corpus.testing import noise_clips

PROMPTS = [messages(f"Question {i}?", ["yes", "no"]) for i in range(3)]


@pytest.mark.parametrize("settings", [SamplingSettings(k=4, temperature=1.0, max_new_tokens=8, seed=3),
                                      SamplingSettings(k=2, temperature=0.0, max_new_tokens=8)])
def test_shared_encoder_samples_exactly_what_repeated_audio_samples(tiny_lm, settings):
    clips = noise_clips(3)
    shared = LocalEngine(tiny_lm, batch_size=2).sample(PROMPTS, clips, settings, with_logprobs=True)
    naive = LocalEngine(tiny_lm, batch_size=2, shared_encoder=False).sample(PROMPTS, clips, settings,
                                                                              with_logprobs=True)
    assert len(shared.texts) == 3 and all(len(group) == settings.k for group in shared.texts)
    assert shared.texts == naive.texts
    for a, b in zip(shared.logprobs, naive.logprobs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-3, rtol=1e-4)  # prefill shapes differ: float noise
    if settings.greedy:
        assert all(len(set(group)) == 1 for group in shared.texts)  # greedy samples agree
    else:
        assert any(len(set(group)) > 1 for group in shared.texts)


def test_logprobs_are_of_the_sampled_tokens(tiny_lm):
    settings = SamplingSettings(k=2, temperature=1.0, max_new_tokens=6)
    out = LocalEngine(tiny_lm).sample(PROMPTS[:1], noise_clips(1), settings, with_logprobs=True)
    for ids, logprobs in zip(out.token_ids[0], out.logprobs[0]):
        assert (logprobs <= 0).all() and len(logprobs) >= len(ids)


def test_completion_mask_keeps_the_first_stop_token():
    completion = torch.tensor([[5, 6, 9, 7, 9], [9, 1, 1, 1, 1], [1, 2, 3, 4, 5]])
    assert completion_mask(completion, [9]).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_settings_key_names_the_sampling_not_k():
    base = SamplingSettings(k=4, temperature=1.0)
    assert base.key() == SamplingSettings(k=16, temperature=1.0).key()
    assert base.key() != SamplingSettings(k=4, temperature=0.7).key()


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_lean_sampling_stops_rows_and_pads_after_them(tiny_qwen2_audio, temperature, top_p):
    """Ragged prompts, rows that stop early (every fifth token id stops), with and without
    temperature and top-p: rows end at their first stop token and get padding after it, and every
    token has a log-prob. (Tokens outside the top-p nucleus have -inf logits, which the inverse CDF
    never draws: test_positions.py checks that by hand.)"""
    lm, k = tiny_qwen2_audio, 3
    settings = SamplingSettings(k=k, temperature=temperature, top_p=top_p, max_new_tokens=40)
    batch = lm.encode_prompts([messages("Is the tone high or low?", ["high", "low"]), messages("Q?", ["a", "b"])],
                              noise_clips(2))
    assert lean_sampling_applies(lm, settings) and (batch.attention_mask == 0).any()  # one prompt is padded
    stops = list(range(0, len(lm.tokenizer), 5))
    engine, rows = LocalEngine(lm), batch.repeat(k)
    positions = lm.position_ids(batch.input_ids, batch.attention_mask).repeat_interleave(k, dim=0)
    uniforms = row_uniforms([0, 1], k, settings.max_new_tokens)
    ours, logprobs = sample_after_prefill(lm.model, engine.prefill(batch, lm.prompt_embeddings(batch), positions[::k], k),
                                          rows.input_ids[:, -1:], rows.attention_mask, positions[:, -1:], uniforms,
                                          settings, stops, lm.tokenizer.pad_token_id)
    mask = completion_mask(ours, stops)
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) > 1 and ours.shape[1] < settings.max_new_tokens  # ragged, all stopped
    assert ((ours == lm.tokenizer.pad_token_id) | mask.bool()).all()
    assert (logprobs <= 0).all() and logprobs.shape == ours.shape
