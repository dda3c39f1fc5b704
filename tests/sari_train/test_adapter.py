import pytest
import torch

from sari_train.models.adapter import AudioInputError, audio_token_count
from sari_train.prompts import messages
from corpus.testing import noise_clips

PROMPTS = [messages("Which tone is higher?", ["the first tone", "the second tone"]),
           messages("How many beeps?", ["2", "3", "4", "5"])]


def test_audio_token_count_matches_the_encoder_arithmetic():
    assert [audio_token_count(n) for n in (400, 300, 100, 3000)] == [100, 75, 25, 750]


def test_cached_prompt_embeddings_give_the_models_own_logits(tiny_lm):
    batch = tiny_lm.encode_prompts(PROMPTS, noise_clips(2, seconds=2.5))
    with torch.no_grad():
        positions = tiny_lm.position_ids(batch.input_ids, batch.attention_mask, batch.feature_attention_mask)
        reference = tiny_lm.model(**batch.model_inputs(), position_ids=positions).logits  # the one position rule
        ours = tiny_lm.logits(batch.input_ids, batch.attention_mask, tiny_lm.prompt_embeddings(batch),
                              batch.feature_attention_mask)
    assert torch.equal(reference, ours)


def test_each_prompt_gets_one_token_per_encoder_frame(tiny_lm):
    batch = tiny_lm.encode_prompts(PROMPTS, noise_clips(1, 3.0) + noise_clips(1, 9.0))  # 9 s: cut to 4 s
    assert (batch.input_ids == tiny_lm.audio_token_id).sum(-1).tolist() == [75, 100]
    assert batch.input_features.shape == (2, 128, 400)


def test_placeholder_feature_mismatch_is_refused(tiny_lm):
    batch = tiny_lm.encode_prompts(PROMPTS, noise_clips(2))
    first_audio = int((batch.input_ids[0] == tiny_lm.audio_token_id).nonzero()[0])
    batch.input_ids[0, first_audio] = tiny_lm.tokenizer.pad_token_id
    with pytest.raises(AudioInputError, match="placeholders"):
        tiny_lm.prompt_embeddings(batch)


def test_over_long_prompts_are_refused_not_truncated(tiny_lm):
    with pytest.raises(AudioInputError, match="never truncated"):
        tiny_lm.encode_prompts(PROMPTS, noise_clips(2), max_prompt_tokens=50)


def test_a_prompt_without_audio_is_refused(tiny_lm):
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    with pytest.raises(AudioInputError, match="exactly one audio part"):
        tiny_lm.encode_prompts([text_only], noise_clips(1))
