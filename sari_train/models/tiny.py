"""Offline random-weight Qwen2-Audio / Qwen2.5-Omni thinker models for tests and smoke runs.

Nothing here touches the Hub: the tokenizer is a byte-level BPE trained on an embedded text with
the real Qwen special tokens, and the models are built from tiny configs. Shapes, token plumbing
and the audio-placeholder expansion match the real checkpoints, so code that trains or generates
with these models runs unchanged on the real ones.

Processor argument: in the installed transformers (5.x) audio goes in as ``audio=``; the old
``audios=`` keyword is not an audio input any more (see ``test_tiny_models.py``).
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BatchFeature,
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)
from transformers.models.qwen2_5_omni import (
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
)

SAMPLING_RATE = 16_000
MEL_BINS = 128  # Qwen2-Audio and Qwen2.5-Omni both use 128-bin whisper log-mels
MEL_FRAMES_PER_SECOND = 100  # whisper hop_length 160 at 16 kHz

AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_BOS = "<|audio_bos|>"
AUDIO_EOS = "<|audio_eos|>"
# Real Qwen special tokens. The vision ones are only there so the Omni thinker config's
# image/video/vision ids point inside the vocabulary; we never feed images.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    AUDIO_TOKEN,
    AUDIO_BOS,
    AUDIO_EOS,
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
]
# Output-format tags are ordinary added tokens: they must survive decode(skip_special_tokens=True).
TAG_TOKENS = [
    f"<{t}{n}>"
    for n in ("answer", "think", "planning", "caption", "reasoning", "summary")
    for t in ("", "/")
]

# Qwen2-Audio's chat template (ChatML; an audio part becomes one <|AUDIO|> placeholder that the
# processor later expands to one token per encoder output frame).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "which what how many is the a an of in to and or than this that sound sounds audio clip tone "
    "tones note notes pitch higher lower louder quieter softer first second third last count beeps "
    "beep clicks chord chords major minor tempo faster slower rising falling steady same different "
    "interval octave fifth third speaker voice speech music noise silence instrument piano guitar "
    "drum violin bird dog car rain wind left right channel duration longer shorter seconds loudness "
    "frequency hertz bpm option options answer question correct because so therefore then compare"
)
_PROMPTS = (
    "Please choose the answer from the following options:",
    "Output the final answer in <answer> </answer>.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer>.",
    "Which tone is higher, the first or the second?",
    "How many beeps do you hear? (A) 2 (B) 3 (C) 4 (D) 5",
    "Is the chord major or minor?",
    "Is the tempo getting faster or slower?",
    "Is the pitch rising or falling?",
    "Which sound is louder?",
    "The first tone is 440 Hz and the second tone is 660 Hz, so the second is higher.",
    "I count 1, 2, 3, 4 beeps. The answer is (C).",
)


def _training_text() -> list[str]:
    # Word list + prompts + numbers/punctuation, repeated so frequent pairs get merged.
    lines = list(_PROMPTS) + [_WORDS, _WORDS.title(), _WORDS.upper()]
    lines += [" ".join(str(i) for i in range(0, 1000, 7)), "0123456789 .,;:!?()[]{}'\"-+*/=%<>#@&_"]
    lines += [f"({c}) option {c}." for c in "ABCDEFGH"]
    return lines * 5


def build_tokenizer(out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a ~1.5k-token byte-level BPE with the Qwen special tokens and ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",  # decoder-only generation pads on the left
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    hf.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    hf.add_tokens(TAG_TOKENS)  # not special
    if out_dir is not None:
        hf.save_pretrained(out_dir)
    return hf


def _feature_extractor(window_seconds: float) -> WhisperFeatureExtractor:
    # WhisperFeatureExtractor derives n_samples = chunk_length * sampling_rate from its saved
    # config, so a fractional window would reload as a float sample count: require whole seconds.
    if float(window_seconds) != int(window_seconds) or window_seconds <= 0:
        raise ValueError(f"window_seconds must be a positive whole number, got {window_seconds}")
    return WhisperFeatureExtractor(
        feature_size=MEL_BINS,
        sampling_rate=SAMPLING_RATE,
        hop_length=SAMPLING_RATE // MEL_FRAMES_PER_SECOND,
        chunk_length=int(window_seconds),
        n_fft=400,
        return_attention_mask=True,
    )


def _text_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int, layers: int) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _audio_encoder_config(hidden_size: int, layers: int, window_seconds: float) -> dict:
    return dict(
        d_model=hidden_size,
        encoder_layers=layers,
        encoder_attention_heads=2,
        encoder_ffn_dim=2 * hidden_size,
        num_mel_bins=MEL_BINS,
        # Qwen2-Audio's encoder insists on exactly 2 * max_source_positions mel frames (conv stride 2).
        max_source_positions=int(window_seconds * MEL_FRAMES_PER_SECOND // 2),
    )


def _set_generation_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> None:
    gc = model.generation_config
    gc.eos_token_id = tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id
    gc.bos_token_id = None


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """Whisper's fixed audio position table: sines then cosines over geometric timescales."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inverse = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inverse[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def build_tiny_text_lm(out_dir: str | Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random-weight text-only Qwen2ForCausalLM with the tiny tokenizer (the language model of
    the audio builders alone: for comparing our GRPO with TRL's, which takes text models)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    Qwen2ForCausalLM(Qwen2Config(**_text_config(tokenizer, hidden_size, layers))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_qwen2_audio(
    out_dir: str | Path,
    window_seconds: float = 4.0,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a random-weight Qwen2AudioForConditionalGeneration + its processor to out_dir."""
    out = Path(out_dir)
    extractor = _feature_extractor(window_seconds)  # validates the window before any work
    tokenizer = build_tokenizer()
    config = Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder", **_audio_encoder_config(hidden_size, layers, window_seconds)
        ),
        text_config=dict(model_type="qwen2", **_text_config(tokenizer, hidden_size, layers)),
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    with torch.no_grad():  # the released checkpoint stores Whisper's sinusoids; random ones hide the time order
        positions = model.get_submodule("model.audio_tower.embed_positions").weight
        positions.copy_(whisper_sinusoids(*positions.shape))
    _set_generation_ids(model, tokenizer)
    model.save_pretrained(out)
    Qwen2AudioProcessor(extractor, tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(out)
    return out


def build_tiny_omni_thinker(
    out_dir: str | Path,
    window_seconds: float = 4.0,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a random-weight Qwen2_5OmniThinkerForConditionalGeneration, tokenizer and
    WhisperFeatureExtractor to out_dir (no Qwen2_5OmniProcessor: it needs torchvision).
    Build inputs with ``omni_audio_inputs``."""
    out = Path(out_dir)
    extractor = _feature_extractor(window_seconds)
    tokenizer = build_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden_size // 4
    t = head_dim // 2  # M-RoPE splits the head_dim/2 rotary frequencies over (time, height, width)
    text = _text_config(tokenizer, hidden_size, layers)
    text["rope_parameters"] = dict(
        rope_type="default", rope_theta=1_000_000.0, mrope_section=[t - 2 * (t // 3), t // 3, t // 3]
    )
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            **_audio_encoder_config(hidden_size, layers, window_seconds),
            output_dim=hidden_size,  # audio tower projects straight into the text embedding space
        ),
        # Never used, but the thinker always builds a vision tower: make it as small as it gets.
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=1,
            out_hidden_size=hidden_size,
            fullatt_block_indexes=[0],
        ),
        text_config=text,
        audio_token_index=ids(AUDIO_TOKEN),
        audio_start_token_id=ids(AUDIO_BOS),
        audio_end_token_id=ids(AUDIO_EOS),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        # Not a declared config field, but get_rope_index reads it (the real checkpoint sets it).
        vision_start_token_id=ids("<|vision_bos|>"),
        vision_end_token_id=ids("<|vision_eos|>"),
        user_token_id=tokenizer.encode("user")[0],
    )
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config).eval()
    _set_generation_ids(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    extractor.save_pretrained(out)
    return out


def omni_audio_token_count(mel_frames: int) -> int:
    """Audio tokens the Omni thinker emits for ``mel_frames`` valid frames (conv stride 2, then
    avg-pool 2), as ``_get_feat_extract_output_lengths`` in processing_qwen2_5_omni.py."""
    after_conv = (mel_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def omni_audio_inputs(
    tokenizer: PreTrainedTokenizerFast,
    feature_extractor: WhisperFeatureExtractor,
    waveforms: Sequence[np.ndarray],
    texts: Sequence[str],
) -> BatchFeature:
    """What Qwen2_5OmniProcessor(text=texts, audio=waveforms) returns, without torchvision.

    Each text holds one ``<|AUDIO|>`` per waveform (in order); every placeholder is expanded to
    the number of encoder output frames of its clip, which the thinker checks against the audio
    features it scatters into the embeddings.
    """
    n_placeholders = sum(t.count(AUDIO_TOKEN) for t in texts)
    if n_placeholders != len(waveforms):
        raise ValueError(f"{n_placeholders} {AUDIO_TOKEN} placeholders for {len(waveforms)} waveforms")
    feats = feature_extractor(
        [np.asarray(w, dtype=np.float32) for w in waveforms],
        sampling_rate=feature_extractor.sampling_rate,
        padding="max_length",  # fixed-size window; the mask marks the real frames
        truncation=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    counts = iter(omni_audio_token_count(int(n)) for n in feats["attention_mask"].sum(-1))
    expanded = []
    for text in texts:
        pieces = text.split(AUDIO_TOKEN)
        expanded.append(pieces[0] + "".join(AUDIO_TOKEN * next(counts) + p for p in pieces[1:]))
    batch = tokenizer(expanded, return_tensors="pt", padding=True)
    batch["input_features"] = feats["input_features"]
    batch["feature_attention_mask"] = feats["attention_mask"]
    return batch
