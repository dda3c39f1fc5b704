import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer, WhisperFeatureExtractor

from sari_train.models.tiny import (
    AUDIO_TOKEN,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2AudioForConditionalGeneration,
    build_tiny_omni_thinker,
    build_tiny_qwen2_audio,
    build_tokenizer,
    omni_audio_inputs,
    omni_audio_token_count,
    whisper_sinusoids,
)

WINDOW = 4
MESSAGES = [{"role": "user", "content": [
    {"type": "audio", "audio": "clip.wav"},
    {"type": "text", "text": "Which tone is higher? Please choose the answer from the following options: "
                             "['first', 'second']. Output the final answer in <answer> </answer>."},
]}]


def sine(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def qwen2_audio_dir(tmp_path_factory):
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("q2a"), window_seconds=WINDOW)


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return build_tiny_omni_thinker(tmp_path_factory.mktemp("omni"), window_seconds=WINDOW)


def test_chat_template_has_one_audio_placeholder(tokenizer):
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text.count(AUDIO_TOKEN) == 1
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhich tone" in text
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert plain.endswith("<|im_start|>user\nhi<|im_end|>\n")


def test_special_tokens_and_tag_round_trip(tokenizer):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    ids = tokenizer.convert_tokens_to_ids(specials)
    assert len(set(ids)) == len(specials) and tokenizer.unk_token_id not in ids
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    assert len(tokenizer("<|AUDIO|>")["input_ids"]) == 1
    for text in ["<answer>higher</answer>", "<think>The first tone is louder.</think> <answer>(B) 3</answer>"]:
        enc = tokenizer(text)["input_ids"]
        assert tokenizer.decode(enc, skip_special_tokens=True) == text
    assert 1000 <= len(tokenizer) <= 2000


def test_qwen2_audio_round_trip_and_generate(qwen2_audio_dir):
    processor = AutoProcessor.from_pretrained(qwen2_audio_dir)
    assert processor.tokenizer.padding_side == "left"
    text = processor.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], audio=[sine(3.0)], sampling_rate=16_000, return_tensors="pt", padding=True)
    assert inputs["input_features"].shape == (1, 128, WINDOW * 100)
    assert int(inputs["feature_attention_mask"].sum()) == 300
    # The processor expands the placeholder to one token per encoder output frame: 300 mel -> 75.
    assert int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)).sum()) == 75

    model, info = Qwen2AudioForConditionalGeneration.from_pretrained(qwen2_audio_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model.eval()
    assert model.config.audio_token_id == processor.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    again = Qwen2AudioForConditionalGeneration.from_pretrained(qwen2_audio_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, again(**inputs).logits, rtol=0, atol=0)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert prompt_len < out.shape[1] <= prompt_len + 5  # may stop early on a random <|im_end|>
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])


def test_qwen2_audio_processor_takes_audio_not_audios(qwen2_audio_dir):
    processor = AutoProcessor.from_pretrained(qwen2_audio_dir)
    text = processor.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    # transformers 5.x: `audios=` is no audio input; the placeholder then has no features -> error.
    with pytest.raises(ValueError, match="no audio inputs"):
        processor(text=[text], audios=[sine(1.0)], sampling_rate=16_000, return_tensors="pt")
    assert "input_features" not in processor(text=[text.replace(AUDIO_TOKEN, "")], return_tensors="pt")


def test_qwen2_audio_batch_of_different_lengths(qwen2_audio_dir):
    processor = AutoProcessor.from_pretrained(qwen2_audio_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(qwen2_audio_dir).eval()
    text = processor.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text, text], audio=[sine(1.0), sine(6.0)], sampling_rate=16_000,
                       return_tensors="pt", padding=True)
    audio_id = processor.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    # 1 s -> 25 tokens; 6 s is cut to the 4 s window -> 100 tokens.
    assert (inputs["input_ids"] == audio_id).sum(-1).tolist() == [25, 100]
    assert (inputs["attention_mask"][0, 0] == 0) and inputs["attention_mask"][:, -1].all()  # left padding
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > inputs["input_ids"].shape[1]


def test_omni_thinker_round_trip_and_generate(omni_dir):
    tokenizer = AutoTokenizer.from_pretrained(omni_dir)
    extractor = WhisperFeatureExtractor.from_pretrained(omni_dir)
    assert extractor.n_samples == WINDOW * 16_000 and extractor.feature_size == 128
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    inputs = omni_audio_inputs(tokenizer, extractor, [sine(3.0), sine(1.0, 660.0)], [text, text])
    assert inputs["input_features"].shape == (2, 128, WINDOW * 100)
    audio_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    assert (inputs["input_ids"] == audio_id).sum(-1).tolist() == [omni_audio_token_count(300), 25] == [75, 25]

    model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model.eval()
    assert model.config.audio_token_id == audio_id
    again = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, again(**inputs).logits, rtol=0, atol=0)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 5
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])


def test_omni_inputs_reject_placeholder_mismatch(tokenizer):
    extractor = WhisperFeatureExtractor(feature_size=128, chunk_length=WINDOW, return_attention_mask=True)
    with pytest.raises(ValueError, match="placeholders"):
        omni_audio_inputs(tokenizer, extractor, [sine(1.0), sine(1.0)], [f"{AUDIO_TOKEN} which?"])


def test_fractional_window_is_refused(tmp_path):
    with pytest.raises(ValueError, match="whole number"):
        build_tiny_qwen2_audio(tmp_path, window_seconds=2.5)
    assert not any(tmp_path.iterdir())


def test_whisper_sinusoids_by_hand():
    table = whisper_sinusoids(3, 4)  # timescales 1 and 1/10000: row t is sin(t), sin(t/1e4), cos(t), cos(t/1e4)
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0],
                             [np.sin(1.0), np.sin(1e-4), np.cos(1.0), np.cos(1e-4)],
                             [np.sin(2.0), np.sin(2e-4), np.cos(2.0), np.cos(2e-4)]], dtype=torch.float32)
    assert torch.allclose(table, expected, atol=1e-6)


def test_qwen2_audio_positions_are_whisper_sinusoids_and_stay_fixed(qwen2_audio_dir):
    from types import SimpleNamespace

    from sari_train.training import load_policy

    model = Qwen2AudioForConditionalGeneration.from_pretrained(qwen2_audio_dir)
    positions = model.get_submodule("model.audio_tower.embed_positions").weight
    assert torch.equal(positions, whisper_sinusoids(*positions.shape))
    lm, _ = load_policy(SimpleNamespace(model=str(qwen2_audio_dir), dtype="float32", lora=None,
                                        attn_implementation="sdpa", gradient_checkpointing=False), torch.device("cpu"),
                        train_audio=True)
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert not any("embed_positions" in n for n in trainable) and any("audio_tower" in n for n in trainable)
