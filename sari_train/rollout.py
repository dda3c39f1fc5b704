"""Rollout engines: k sampled completions for each of many prompts.

`LocalEngine` runs a transformers model: prompts are left-padded and batched, the audio encoder
and the prompt's forward pass (its key/value cache) run once per prompt and are shared by the k
samples (the naive path, kept for tests and benchmarks, repeats the audio k times). `EndpointEngine` (rollout_endpoint.py) drives an
OpenAI-compatible server instead. Both return the same `Rollouts`. Sampling from the shared cache runs
`sample_after_prefill`: the tokens `generate` would draw, without its per-token bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sari_train.models.adapter import AudioLM, PromptBatch


class SamplingSettings(BaseModel):
    """How completions are sampled; `key()` names the settings in stored rollouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(1, ge=1, description="completions per prompt")
    temperature: float = Field(1.0, ge=0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def key(self) -> str:
        payload = json.dumps(self.model_dump(exclude={"k"}), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Rollouts:
    """Completions grouped by prompt: `texts[i][j]` is sample j of prompt i."""

    texts: list[list[str]]
    token_ids: list[list[torch.Tensor]] = field(default_factory=list)  # without padding or stop tokens
    logprobs: list[list[torch.Tensor]] | None = None  # per generated token, under the sampling distribution


@dataclass
class Generated:
    """What one batched generate call produced, in the layout trainers consume."""

    prompt: PromptBatch  # repeated k times
    prompt_embeds: torch.Tensor  # (B*k, T, H), audio encoded once per prompt
    completion_ids: torch.Tensor  # (B*k, L), padded after the stop token
    completion_mask: torch.Tensor  # (B*k, L), 1 up to and including the stop token
    logprobs: torch.Tensor | None = None  # (B*k, L)


class LocalEngine:
    def __init__(self, lm: AudioLM, batch_size: int = 8, shared_encoder: bool = True):
        self.lm, self.batch_size, self.shared_encoder = lm, batch_size, shared_encoder

    @torch.no_grad()
    def generate(self, batch: PromptBatch, settings: SamplingSettings, with_logprobs: bool = False,
                 prompt_embeds: torch.Tensor | None = None) -> Generated:
        """k completions for each prompt of one batch. Pass `prompt_embeds` to reuse an encoding."""
        lm, k = self.lm, settings.k
        batch = batch.to(lm.device)
        sampling = dict(generation_kwargs(settings), eos_token_id=lm.stop_token_ids,
                        pad_token_id=lm.tokenizer.pad_token_id, output_scores=with_logprobs,
                        return_dict_in_generate=True)
        repeated = batch.repeat(k)
        extra = {"feature_attention_mask": repeated.feature_attention_mask} if lm.needs_feature_mask else {}
        if self.shared_encoder:
            if prompt_embeds is None:
                prompt_embeds = lm.prompt_embeddings(batch)
            cache = self.prefill(batch, prompt_embeds, k)
            prompt_embeds = prompt_embeds.repeat_interleave(k, dim=0)
            if lean_sampling_applies(lm, settings):
                completion, scores = sample_after_prefill(lm.model, cache, repeated.input_ids,
                                                          repeated.attention_mask, settings, lm.stop_token_ids,
                                                          lm.tokenizer.pad_token_id, with_logprobs)
            else:
                out = lm.model.generate(input_ids=repeated.input_ids, attention_mask=repeated.attention_mask,
                                        past_key_values=cache, **extra, **sampling)
                completion, scores = out.sequences[:, repeated.input_ids.shape[1]:], out.scores
        else:
            out = lm.model.generate(**repeated.model_inputs(), **sampling)
            prompt_embeds = lm.prompt_embeddings(repeated)
            completion, scores = out.sequences[:, repeated.input_ids.shape[1]:], out.scores
        mask = completion_mask(completion, lm.stop_token_ids)
        logprobs = None
        if with_logprobs:
            scores = torch.stack(scores, dim=1).float().log_softmax(-1)
            logprobs = scores.gather(-1, completion.unsqueeze(-1)).squeeze(-1) * mask
        return Generated(repeated, prompt_embeds, completion, mask, logprobs)

    def prefill(self, batch: PromptBatch, prompt_embeds: torch.Tensor, k: int) -> Any:
        """The key/value cache of every prompt but its last token, computed once per prompt and then
        repeated for the k samples: the audio and the prompt are processed once, not k times. The
        model without its head runs (the cache is all we keep; no logits over the vocabulary)."""
        extra = {"feature_attention_mask": batch.feature_attention_mask} if self.lm.needs_feature_mask else {}
        out = self.lm.model.model(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                            inputs_embeds=prompt_embeds[:, :-1], use_cache=True, **extra)
        return self.lm.repeat_cache(out.past_key_values, k)

    def sample(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
               settings: SamplingSettings, with_logprobs: bool = False) -> Rollouts:
        """k completions for every prompt, in batches of `batch_size` prompts."""
        torch.manual_seed(settings.seed)
        texts, ids, logprobs = [], [], []
        for start in range(0, len(messages), self.batch_size):
            batch = self.lm.encode_prompts(messages[start:start + self.batch_size],
                                           waveforms[start:start + self.batch_size])
            generated = self.generate(batch, settings, with_logprobs)
            rows = [generated.completion_ids[r][generated.completion_mask[r].bool()]
                    for r in range(len(generated.completion_ids))]
            rows = [strip_stop(r, self.lm.stop_token_ids) for r in rows]
            decoded = self.lm.tokenizer.batch_decode(rows, skip_special_tokens=True)
            for i in range(0, len(rows), settings.k):
                texts.append(decoded[i:i + settings.k])
                ids.append(rows[i:i + settings.k])
                if with_logprobs:
                    logprobs.append([generated.logprobs[r][generated.completion_mask[r].bool()]
                                     for r in range(i, i + settings.k)])
        return Rollouts(texts, ids, logprobs if with_logprobs else None)


def generation_kwargs(settings: SamplingSettings) -> dict[str, Any]:
    """`generate` arguments. Sampling draws from the policy itself: neutral values replace what a
    repo's generation_config.json presets (Qwen2-Audio-7B-Instruct: repetition_penalty 1.1, top_k 20,
    top_p 0.5, temperature 0.7), which would bend samples and their log-probs. Greedy decoding keeps
    the repo's defaults, as `model.generate(..., do_sample=False)` in the reference eval scripts does."""
    if settings.greedy:
        return dict(do_sample=False, max_new_tokens=settings.max_new_tokens)
    return dict(do_sample=True, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                top_p=settings.top_p, top_k=0, repetition_penalty=1.0)


# Generation-config fields that would add a logits processor, stopping rule or search to `generate`,
# with their neutral values; `sample_after_prefill` has none of them, so it runs only when all are neutral.
_NEUTRAL_GENERATION = {"min_length": 0, "min_new_tokens": 0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                       "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
                       "forced_eos_token_id": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
                       "encoder_repetition_penalty": 1.0, "encoder_no_repeat_ngram_size": 0, "typical_p": 1.0,
                       "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None, "top_h": None,
                       "renormalize_logits": False, "guidance_scale": None, "watermarking_config": None,
                       "stop_strings": None, "max_time": None, "remove_invalid_values": False, "num_beams": 1}


def lean_sampling_applies(lm: AudioLM, settings: SamplingSettings) -> bool:
    """Sampling from a Qwen2-Audio cache with no processor beyond temperature and top-p: there
    `sample_after_prefill` draws exactly what `generate` draws. Greedy decoding keeps the repo's
    generation defaults and the Omni thinker its 3-D positions, so both stay with `generate`."""
    config = lm.model.generation_config
    neutral = all(getattr(config, name, None) in (None, value) for name, value in _NEUTRAL_GENERATION.items())
    return neutral and not settings.greedy and lm.kind == "qwen2_audio"


def sample_after_prefill(model: torch.nn.Module, cache: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         settings: SamplingSettings, stop_ids: Sequence[int], pad_id: int,
                         with_scores: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """transformers' sampling loop (`generate(do_sample=True)` with temperature and top-p) without
    its per-token bookkeeping, continuing a cache that holds every prompt token but the last.

    Each step makes the same calls in the same order as `generate` (float32 logits, temperature,
    top-p, softmax, one `torch.multinomial`), so the same seed draws the same tokens; finished rows
    get `pad_id`, and the loop stops when every row has sent a stop token. The new tokens are
    numbered as `generate` numbers them: the count of real tokens before them. Returns the tokens
    (rows, ≤ max_new_tokens) and the processed scores of each step (when `with_scores`)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    top_p = TopPLogitsWarper(settings.top_p) if settings.top_p < 1.0 else None
    stop = torch.tensor(list(stop_ids), device=input_ids.device)
    position = attention_mask.long().cumsum(-1)[:, -1:] - 1
    unfinished = torch.ones(len(input_ids), dtype=torch.long, device=input_ids.device)
    step_input, tokens, scores = input_ids[:, -1:], [], []
    with torch.inference_mode():  # lighter per-op bookkeeping than no_grad; results are cloned out
        for step in range(settings.max_new_tokens):
            if step:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=-1)
                position = position + 1
            logits = model(input_ids=step_input, attention_mask=attention_mask, position_ids=position, cache=cache,
                           use_cache=True).logits[:, -1].to(copy=True, dtype=torch.float32)
            if settings.temperature != 1.0:
                logits = logits / settings.temperature
            if top_p is not None:
                logits = top_p(None, logits)
            if with_scores:
                scores.append(logits)
            token = torch.multinomial(torch.nn.functional.softmax(logits, dim=-1), num_samples=1).squeeze(1)
            token = token * unfinished + pad_id * (1 - unfinished)
            tokens.append(token)
            unfinished = unfinished & ~torch.isin(token, stop)
            if unfinished.max() == 0:
                break
            step_input = token[:, None]
    return torch.stack(tokens, dim=1).clone(), [s.clone() for s in scores]  # normal tensors again


def completion_mask(completion: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 for every token up to and including the first stop token of each row, 0 after it."""
    is_stop = torch.isin(completion, torch.tensor(list(stop_ids), device=completion.device))
    after_stop = (is_stop.cumsum(dim=1) - is_stop.long()) > 0
    return (~after_stop).long()


def strip_stop(ids: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    return ids[:-1] if len(ids) and int(ids[-1]) in stop_ids else ids
