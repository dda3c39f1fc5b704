"""The one model interface the rollout engine, both trainers, difficulty and eval share.

Everything audio-specific lives here: turning (chat messages, waveform) into model inputs, and
running the audio encoder once to get prompt embeddings that many completions can reuse.
Qwen2-Audio and the Qwen2.5-Omni thinker differ only in which class loads them; the input
preparation is ours for both (whisper log-mels in the repo's window, each `<|AUDIO|>` expanded to
one token per encoder output frame), since the Omni processor needs torchvision. Prompts are
rendered with the repo's *processor* chat template (the tokenizer's is the plain ChatML one, which
cannot take an audio part), so the ids we feed equal what the repo's `AutoProcessor` produces.

A full Qwen2.5-Omni checkpoint (thinker + talker + token2wav, e.g. `Qwen/Qwen2.5-Omni-7B`) loads
its thinker only: the talker and token2wav weights are skipped on purpose, and a thinker weight
that is missing or left unused is an error, never a silently re-initialised layer.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, WhisperFeatureExtractor

from sari_train.config import ConfigError

ModelKind = Literal["qwen2_audio", "qwen2_5_omni_thinker"]
AUDIO_TOKEN = "<|AUDIO|>"
# The processor template Qwen/Qwen2.5-Omni-7B ships in chat_template.json (transformers has no
# default for Qwen2_5OmniProcessor, so a folder without one falls back to this).
OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class CheckpointError(ValueError):
    """A checkpoint's weights do not match the model built from its config."""


class AudioInputError(ValueError):
    """Audio inputs and prompt tokens disagree, or a prompt cannot be built without cutting audio."""


class ModelLoadError(ConfigError, ValueError):
    """A --model that is no model folder (missing, empty, a broken config.json); the message says what to pass."""


HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_model_folder(path: str | Path) -> None:
    """Refuse, in one line, a path that cannot be a model: missing (unless a hub id when online), a file,
    a folder without config.json, or a config.json that is not a JSON object."""
    folder = Path(path)
    hint = "pass a model folder (e.g. one from `sari-train tiny-model DIR`, or a run's final/)"
    if not folder.exists():
        if HUB_ID.match(str(path)) and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
            return  # a hub id: transformers downloads it
        raise ModelLoadError(f"model {path} not found; {hint}")
    if not folder.is_dir():
        raise ModelLoadError(f"model {path} is a file; {hint}")
    config = folder / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"{folder} holds no config.json, so it is no model folder; {hint}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{config} is not valid JSON ({err}); {hint}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelLoadError(f"{config} names no model_type; {hint}")


class PromptTooLong(AudioInputError):
    """A prompt over the model's context (or a set limit): refused before any forward pass."""

    def __init__(self, row: int, tokens: int, limit: int):
        super().__init__(f"a prompt has {tokens} tokens, over the limit of {limit} (the model's context unless "
                         f"max_prompt_tokens is set); prompts are never truncated (that would cut inside the "
                         f"audio span): shorten or skip the item")
        self.row, self.tokens, self.limit = row, tokens, limit


def audio_token_count(mel_frames: int) -> int:
    """Encoder output frames for `mel_frames` valid mel frames (conv stride 2, then pool 2); the
    same rule in Qwen2-Audio and Qwen2.5-Omni."""
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


@dataclass
class PromptBatch:
    """Left-padded prompts with their audio, ready for a forward pass or `generate`."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    input_features: torch.Tensor
    feature_attention_mask: torch.Tensor

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return dict(input_ids=self.input_ids, attention_mask=self.attention_mask,
                    input_features=self.input_features, feature_attention_mask=self.feature_attention_mask)

    def _map(self, fn: Any) -> PromptBatch:
        return PromptBatch(*(fn(t) for t in
                             (self.input_ids, self.attention_mask, self.input_features, self.feature_attention_mask)))

    def repeat(self, k: int) -> PromptBatch:
        """Each prompt k times in a row (the naive path: the audio is encoded k times)."""
        return self._map(lambda t: t.repeat_interleave(k, dim=0))

    def rows(self, index: torch.Tensor | slice) -> PromptBatch:
        """Only the rows at `index`."""
        return self._map(lambda t: t[index])

    def to(self, device: torch.device | str) -> PromptBatch:
        return self._map(lambda t: t.to(device))


class _EmbeddingsReady(Exception):
    """Raised by a hook to stop a forward pass once the merged embeddings exist."""


class AudioLM:
    """A loaded audio language model with its tokenizer and feature extractor."""

    def __init__(self, model: PreTrainedModel, tokenizer: Any, feature_extractor: WhisperFeatureExtractor,
                 kind: ModelKind, name: str = "model", chat_template: str | None = None):
        self.model, self.tokenizer, self.feature_extractor, self.kind, self.name = (
            model, tokenizer, feature_extractor, kind, name)
        self.chat_template = chat_template or default_chat_template(kind)
        self.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        self.stop_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, dtype: str = "float32", device: str = "cpu",
             attn_implementation: str = "auto") -> AudioLM:
        """Load from a local folder or a hub id; the kind is read from the config. `dtype`/`device`/
        `attn_implementation` may be `auto` (see sari_train/device.py)."""
        from transformers import Qwen2AudioForConditionalGeneration

        from sari_train.device import pick, resolve_attention

        device, dtype = pick(device, dtype)
        try:
            attention = resolve_attention(attn_implementation, device, dtype)
        except ValueError as err:
            raise ModelLoadError(str(err)) from None
        check_model_folder(path)
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load the model {path}: {str(err).splitlines()[0]}") from None
        kinds = {"qwen2_audio": "qwen2_audio", "qwen2_5_omni_thinker": "qwen2_5_omni_thinker",
                 "qwen2_5_omni": "qwen2_5_omni_thinker"}
        if config.model_type not in kinds:
            raise ModelLoadError(f"{path}: model type {config.model_type!r} is not an audio LM we support "
                             f"({', '.join(kinds)})")
        kind = kinds[config.model_type]
        try:
            if config.model_type == "qwen2_audio":
                model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, dtype),
                                                                           attn_implementation=attention)
            else:
                model = load_thinker(path, config, getattr(torch, dtype), attention)
        except pickle.UnpicklingError as err:  # weights_only loading refused a pickled object
            raise ModelLoadError(f"{path}: its weights file holds more than tensors, so it was not loaded "
                                 f"({str(err).splitlines()[0][:120]}); use safetensors weights from a source "
                                 f"you trust") from None
        model = model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        extractor = WhisperFeatureExtractor.from_pretrained(path)
        return cls(model, tokenizer, extractor, kind, name=str(path), chat_template=processor_chat_template(path, kind))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def context_length(self) -> int | None:
        """Positions the language model can attend over (None when its config does not say)."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        return getattr(text_config, "max_position_embeddings", None)

    @property
    def window_seconds(self) -> float:
        return self.feature_extractor.n_samples / self.feature_extractor.sampling_rate

    def save_chat_template(self, folder: str | Path) -> None:
        """Keep the processor template with a saved checkpoint, as `processor.save_pretrained` does
        (chat_template.jinja; it replaces the tokenizer's plain one a tokenizer save writes there)."""
        (Path(folder) / "chat_template.jinja").write_text(self.chat_template)

    # --- inputs ----------------------------------------------------------------------------------

    def prompt_text(self, messages: list[dict[str, Any]]) -> str:
        """The prompt as the repo's processor renders it (`processor.apply_chat_template`)."""
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=True)

    def encode_prompts(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
                       max_prompt_tokens: int | None = None) -> PromptBatch:
        """Tokenise chat prompts (one audio part each) and compute their log-mel features.

        Clips longer than the model's window are cut to it (the encoder sees a fixed window);
        a prompt over `max_prompt_tokens` is refused, never truncated (cutting inside the
        audio span would misalign features and placeholders).
        """
        texts = [self.prompt_text(m) for m in messages]
        placeholders = [t.count(AUDIO_TOKEN) for t in texts]
        if placeholders != [1] * len(texts) or len(waveforms) != len(texts):
            raise AudioInputError(f"each prompt needs exactly one audio part and one waveform; got "
                                  f"placeholders {placeholders} for {len(waveforms)} waveforms")
        sr = self.feature_extractor.sampling_rate
        features = self.feature_extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms], sampling_rate=sr, padding="max_length",
            truncation=True, return_attention_mask=True, return_tensors="pt")
        if features.get("input_features") is None or features["input_features"].shape[-1] == 0:
            raise AudioInputError("the feature extractor returned no audio features")
        counts = [audio_token_count(int(n)) for n in features["attention_mask"].sum(-1)]
        expanded = [t.replace(AUDIO_TOKEN, AUDIO_TOKEN * n) for t, n in zip(texts, counts)]
        tokens = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False)
        lengths = tokens["attention_mask"].sum(-1)
        limit = max_prompt_tokens or self.context_length
        if limit is not None and int(lengths.max()) > limit:
            raise PromptTooLong(int(lengths.argmax()), int(lengths.max()), limit)
        batch = PromptBatch(tokens["input_ids"], tokens["attention_mask"],
                            features["input_features"].to(self.model.dtype), features["attention_mask"])
        self.check_audio_tokens(batch)
        return batch

    def check_audio_tokens(self, batch: PromptBatch) -> None:
        """Fail loudly when a row's placeholder count differs from its clip's encoder frames."""
        expected = [audio_token_count(int(n)) for n in batch.feature_attention_mask.sum(-1)]
        found = (batch.input_ids == self.audio_token_id).sum(-1).tolist()
        if found != expected:
            raise AudioInputError(f"audio placeholders per prompt {found} != audio feature frames {expected}")

    # --- embeddings --------------------------------------------------------------------------------

    def prompt_embeddings(self, batch: PromptBatch) -> torch.Tensor:
        """Text embeddings with the encoded audio in place of the placeholders, shape (B, T, H).

        The audio encoder runs here, once per prompt. We run the model's own merge (so the numbers
        are exactly the model's) and stop the forward pass when it reaches the language model.
        """
        self.check_audio_tokens(batch)
        captured: dict[str, torch.Tensor] = {}

        def grab(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
            captured["embeds"] = kwargs["inputs_embeds"]
            raise _EmbeddingsReady

        handle = self.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model(**batch.to(self.device).model_inputs())
        except _EmbeddingsReady:
            pass
        finally:
            handle.remove()
        return captured["embeds"]

    def embed(self, input_ids: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Embeddings for prompt+completion ids whose first T positions are `prompt_embeds`' prompts.

        The text part is embedded afresh (so its gradient flows to the embedding table); only the
        audio frames are taken from the cached prompt embeddings (the encoder does not rerun).
        """
        return self._with_audio(self.model.get_input_embeddings()(input_ids), input_ids, prompt_embeds)

    def _with_audio(self, embeds: torch.Tensor, input_ids: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        prompt_len = prompt_embeds.shape[1]
        audio = (input_ids[:, :prompt_len] == self.audio_token_id).unsqueeze(-1)
        prompt_part = torch.where(audio, prompt_embeds.to(embeds.dtype), embeds[:, :prompt_len])
        return torch.cat([prompt_part, embeds[:, prompt_len:]], dim=1)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_embeds: torch.Tensor,
               feature_attention_mask: torch.Tensor | None = None,
               model: torch.nn.Module | None = None) -> torch.Tensor:
        """Next-token logits for prompt+completion sequences, reusing the prompts' audio embeddings.
        `model` is the same model behind a wrapper (DDP under accelerate), so gradients sync. The
        model embeds the ids itself and a pre-hook on the decoder stack puts the cached audio frames
        in: every weight is used inside the model's forward, where FSDP2 gathers it."""
        extra = {"feature_attention_mask": feature_attention_mask} if self.needs_feature_mask else {}
        positions = self.position_ids(input_ids, attention_mask, feature_attention_mask)

        def cached_audio(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "inputs_embeds": self._with_audio(kwargs["inputs_embeds"], input_ids, prompt_embeds)}

        handle = self.language_model.register_forward_pre_hook(cached_audio, with_kwargs=True)
        try:
            out = (model or self.model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                                        use_cache=False, **extra)
        finally:
            handle.remove()
        return out.logits

    @property
    def language_model(self) -> torch.nn.Module:
        """The decoder stack (embeddings in, hidden states out) behind the audio front end."""
        return self.model.model.language_model

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     feature_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The one position rule of prefill, every decode step and every training pass: a token's
        rotary position counts the real tokens before it, pads excluded (as transformers' `generate`
        and vLLM, which never pads, number them), so a row gets the same positions alone or in any
        batch. Pads get 0 (they are masked). The Omni thinker's 3-D positions, shape (3, B, S), come
        from its own `get_rope_index`, which numbers the real tokens the same way."""
        if self.kind == "qwen2_5_omni_thinker":
            lengths = feature_attention_mask.sum(-1) if feature_attention_mask is not None else None
            return self.model.get_rope_index(input_ids, None, None, attention_mask, False, lengths)[0]
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def decode_from(self, positions: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Let `generate` continue prompts prefilled at `positions`: the Omni thinker numbers new
        tokens as (real tokens so far) + a per-row offset it keeps from its own prefill; ours set it."""
        if self.kind == "qwen2_5_omni_thinker":
            real = attention_mask.long().sum(-1, keepdim=True)
            self.model.model.rope_deltas = positions[0, :, -1:] + 1 - real

    @property
    def needs_feature_mask(self) -> bool:
        # The Omni thinker's 3-D rotary positions are computed from the ids and the audio lengths.
        return self.kind == "qwen2_5_omni_thinker"


# --- loading helpers -------------------------------------------------------------------------------

def default_chat_template(kind: ModelKind) -> str:
    """transformers' default for the kind's processor class (Qwen2AudioProcessor's built-in
    template); Qwen2_5OmniProcessor has none, so the Omni repo's own template."""
    if kind == "qwen2_audio":
        from transformers import Qwen2AudioProcessor

        return Qwen2AudioProcessor.default_chat_template.fget(None)
    return OMNI_CHAT_TEMPLATE


def renders_audio(template: str) -> bool:
    """Whether a chat template turns an audio part into the `<|AUDIO|>` placeholder (a plain ChatML
    template raises on list content, or drops the part)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    probe = [{"role": "user", "content": [{"type": "audio", "audio": "a"}, {"type": "text", "text": "q"}]}]
    try:
        text = ImmutableSandboxedEnvironment().from_string(template).render(messages=probe, add_generation_prompt=True)
    except Exception:  # any template error means: not an audio template
        return False
    return text.count(AUDIO_TOKEN) == 1


def processor_chat_template(path: str | Path, kind: ModelKind) -> str:
    """The chat template the repo's processor uses: chat_template.jinja, chat_template.json or
    processor_config.json, as `AutoProcessor` looks for them; else the processor class's default.
    Never a plain text template (the tokenizer's in the hub repos; a tokenizer save in transformers
    5 writes it to chat_template.jinja too)."""
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json", "processor_config.json"):
        found = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
        if found is None:
            continue
        text = Path(found).read_text()
        template = text if name.endswith(".jinja") else json.loads(text).get("chat_template")
        if template and renders_audio(template):
            return template
    return default_chat_template(kind)


IGNORED_OMNI_PARTS = ("talker.", "token2wav.")  # speech output: not used for text answers


def load_thinker(path: str | Path, config: Any, dtype: torch.dtype, attention: str = "sdpa") -> PreTrainedModel:
    """The Omni thinker, from a thinker-only folder or from a full checkpoint (weights under
    `thinker.`). Talker and token2wav weights are skipped deliberately; any thinker weight that is
    missing, unused or of the wrong shape raises CheckpointError."""
    from transformers.models.qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration

    thinker_config = getattr(config, "thinker_config", config)
    model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, config=thinker_config, dtype=dtype, attn_implementation=attention, output_loading_info=True)
    unused = [k for k in info.get("unexpected_keys", []) if not k.startswith(IGNORED_OMNI_PARTS)]
    problems = {"missing": sorted(info.get("missing_keys", [])), "unused": sorted(unused),
                "wrong shape": sorted(str(k) for k in info.get("mismatched_keys", []))}
    problems = {what: keys for what, keys in problems.items() if keys}
    if problems:
        detail = "; ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in problems.items())
        raise CheckpointError(f"{path}: the thinker weights do not match its config: {detail}; the checkpoint "
                              f"is incomplete or of another model")
    return model
