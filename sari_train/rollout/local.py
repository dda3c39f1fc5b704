"""`LocalEngine`: k sampled completions per prompt from the transformers model in this process.

It runs a transformers model: prompts are left-padded and batched, the audio encoder
and the prompt's forward pass (its key/value cache) run once per prompt and are shared by the k
samples (the naive path, kept for tests and benchmarks, repeats the audio k times).

Sampling is the policy being trained: prefill, every decode step and the training passes number
positions by one rule (`AudioLM.position_ids`), and each row draws from its own seed
(`sample_after_prefill`), so a row samples the same completion alone or in any batch. Greedy
decoding runs `generate` on the same cache (it keeps the repo's generation defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sari_train.models.adapter import AudioLM, PromptBatch
from sari_train.rollout.contract import Generated, Rollouts, SamplingSettings, completion_mask, strip_stop


class LocalEngine:
    def __init__(self, lm: AudioLM, batch_size: int = 8, shared_encoder: bool = True):
        self.lm, self.batch_size, self.shared_encoder = lm, batch_size, shared_encoder

    @torch.no_grad()
    def generate(self, batch: PromptBatch, settings: SamplingSettings, with_logprobs: bool = False,
                 prompt_embeds: torch.Tensor | None = None, seeds: Sequence[Seed] | None = None) -> Generated:
        """k completions for each prompt of one batch. Pass `prompt_embeds` to reuse an encoding.

        Each prompt samples from its own seed (`seeds`, default: settings.seed and its row), so a
        row's completions do not depend on the rows beside it; its positions do not either
        (`AudioLM.position_ids`). Log-probs are under logits / temperature (the trainer's)."""
        lm, k = self.lm, settings.k
        batch = batch.to(lm.device)
        seeds = list(seeds) if seeds is not None else [(settings.seed, i) for i in range(len(batch.input_ids))]
        repeated = batch.repeat(k)
        if self.shared_encoder:  # audio encoder and prompt pass once per prompt, their cache repeated
            if prompt_embeds is None:
                prompt_embeds = lm.prompt_embeddings(batch)
            positions = lm.position_ids(batch.input_ids, batch.attention_mask, batch.feature_attention_mask)
            cache = self.prefill(batch, prompt_embeds, positions, k)
            positions = positions.repeat_interleave(k, dim=-2)
            prompt_embeds = prompt_embeds.repeat_interleave(k, dim=0)
        else:  # the naive path: k copies of each prompt, the audio encoded k times
            prompt_embeds = lm.prompt_embeddings(repeated)
            positions = lm.position_ids(repeated.input_ids, repeated.attention_mask, repeated.feature_attention_mask)
            cache = self.prefill(repeated, prompt_embeds, positions, 1)
        if lean_sampling_applies(lm, settings):
            uniforms = row_uniforms(seeds, k, settings.max_new_tokens).to(lm.device)
            completion, logprobs = sample_after_prefill(
                lm.model, cache, repeated.input_ids[:, -1:], repeated.attention_mask, positions[..., -1:], uniforms,
                settings, lm.stop_token_ids, lm.tokenizer.pad_token_id)
            return self.finish(repeated, prompt_embeds, completion, None, settings, logprobs if with_logprobs else None)
        lm.decode_from(positions, repeated.attention_mask)
        extra = {"feature_attention_mask": repeated.feature_attention_mask} if lm.needs_feature_mask else {}
        out = lm.model.generate(input_ids=repeated.input_ids, attention_mask=repeated.attention_mask, cache=cache,
                                **extra, **self.generate_kwargs(settings, with_logprobs))
        completion = out.sequences[:, repeated.input_ids.shape[1]:]
        return self.finish(repeated, prompt_embeds, completion, out.logits, settings)

    def generate_kwargs(self, settings: SamplingSettings, with_logprobs: bool) -> dict[str, Any]:
        return dict(generation_kwargs(settings), eos_token_id=self.lm.stop_token_ids,
                    pad_token_id=self.lm.tokenizer.pad_token_id, output_logits=with_logprobs,
                    return_dict_in_generate=True)

    def finish(self, prompt: PromptBatch, prompt_embeds: torch.Tensor, completion: torch.Tensor,
               logits: Sequence[torch.Tensor] | None, settings: SamplingSettings,
               logprobs: torch.Tensor | None = None) -> Generated:
        """The completions' mask, and the log-probs of `generate`'s raw logits (when it returned them)."""
        mask = completion_mask(completion, self.lm.stop_token_ids)
        if logits:
            scaled = torch.stack(logits, dim=1).float() / (settings.temperature or 1.0)
            logprobs = scaled.log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
        return Generated(prompt, prompt_embeds, completion, mask, None if logprobs is None else logprobs * mask)

    def prefill(self, batch: PromptBatch, prompt_embeds: torch.Tensor, positions: torch.Tensor, k: int) -> Any:
        """The key/value cache of every prompt but its last token, computed once per prompt and then
        repeated for the k samples: the audio and the prompt are processed once, not k times. The
        model without its head runs (the cache is all we keep; no logits over the vocabulary)."""
        out = self.lm.model.model(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                                  inputs_embeds=prompt_embeds[:, :-1], position_ids=positions[..., :-1], use_cache=True)
        out.cache.batch_repeat_interleave(k)
        return out.cache

    def sample(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
               settings: SamplingSettings, with_logprobs: bool = False, seeds: Sequence[int] | None = None) -> Rollouts:
        """k completions for every prompt, in batches of `batch_size` prompts. `seeds` gives each
        prompt its own seed (default: settings.seed with the prompt's index), so its samples do not
        depend on the batch size or on which prompts share its batch."""
        torch.manual_seed(settings.seed)  # for `generate`'s own sampling, where it samples
        seeds = [(s,) for s in seeds] if seeds is not None else [(settings.seed, i) for i in range(len(messages))]
        texts, ids, logprobs = [], [], []
        for start in range(0, len(messages), self.batch_size):
            batch = self.lm.encode_prompts(messages[start:start + self.batch_size],
                                           waveforms[start:start + self.batch_size])
            generated = self.generate(batch, settings, with_logprobs, seeds=seeds[start:start + self.batch_size])
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


Seed = int | tuple[int, ...]


def row_uniforms(seeds: Sequence[Seed], k: int, steps: int) -> torch.Tensor:
    """(len(seeds)·k, steps) uniforms in [0, 1): row j of prompt i draws from the seed (seeds[i], j)
    alone, so what a row samples does not depend on the rows beside it."""
    entropy = [(s if isinstance(s, tuple) else (s,)) for s in seeds]
    rows = [np.random.default_rng([*e, j]).random(steps) for e in entropy for j in range(k)]
    return torch.from_numpy(np.stack(rows))


def generation_kwargs(settings: SamplingSettings) -> dict[str, Any]:
    """`generate` arguments. Sampling draws from the policy itself: neutral values replace what a
    repo's generation_config.json presets (Qwen2-Audio-7B-Instruct: repetition_penalty 1.1, top_k 20,
    top_p 0.5, temperature 0.7), which would bend samples and their log-probs. Greedy decoding keeps
    the repo's defaults, as `model.generate(..., do_sample=False)` in the reference eval scripts does."""
    if settings.greedy:
        return dict(do_sample=False, max_new_tokens=settings.max_new_tokens)
    return dict(do_sample=True, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                top_p=settings.top_p, top_k=settings.top_k, repetition_penalty=1.0)


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
    """Sampling with no processor beyond temperature, top-k and top-p: there `sample_after_prefill` draws from
    exactly the distribution `generate` draws from. Greedy decoding keeps the repo's generation
    defaults (e.g. a repetition penalty), so it stays with `generate`."""
    config = lm.model.generation_config
    neutral = all(getattr(config, name, None) in (None, value) for name, value in _NEUTRAL_GENERATION.items())
    return neutral and not settings.greedy


def sample_after_prefill(model: torch.nn.Module, cache: Any, last_prompt_token: torch.Tensor,
                         attention_mask: torch.Tensor, last_position: torch.Tensor, uniforms: torch.Tensor,
                         settings: SamplingSettings, stop_ids: Sequence[int],
                         pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling with temperature, top-k and top-p, continuing a cache that holds every prompt token but the
    last, without `generate`'s per-token bookkeeping.

    `last_position` is the last prompt token's position ((rows, 1), or (3, rows, 1) for the Omni
    thinker); each new token takes the next one. Row r draws its step-t token by the inverse CDF at
    `uniforms[r, t]`, so its samples depend on its own seed only. Finished rows get `pad_id`; the
    loop stops when every row has sent a stop token. Returns the tokens (rows, ≤ max_new_tokens) and
    each token's log-prob under logits / temperature (the trainer's, before top-k and top-p)."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    warpers = ([TopKLogitsWarper(settings.top_k)] if settings.top_k else []) + (
        [TopPLogitsWarper(settings.top_p)] if settings.top_p < 1.0 else [])  # generate's order
    stop = torch.tensor(list(stop_ids), device=attention_mask.device)
    position = last_position
    unfinished = torch.ones(len(attention_mask), dtype=torch.long, device=attention_mask.device)
    step_input, tokens, logprobs = last_prompt_token, [], []
    with torch.no_grad():  # not inference_mode: FSDP2 keeps the root's gathered weights, and training needs them
        for step in range(settings.max_new_tokens):
            if step:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=-1)
                position = position + 1
            logits = model(input_ids=step_input, attention_mask=attention_mask, position_ids=position, cache=cache,
                           use_cache=True).logits[:, -1].float()
            logits = logits / settings.temperature if settings.temperature != 1.0 else logits
            warped = logits
            for warp in warpers:
                warped = warp(None, warped)
            token = inverse_cdf(warped, uniforms[:, step])
            logprobs.append(logits.gather(-1, token[:, None]).squeeze(1) - logits.logsumexp(-1))
            token = token * unfinished + pad_id * (1 - unfinished)
            tokens.append(token)
            unfinished = unfinished & ~torch.isin(token, stop)
            if unfinished.max() == 0:
                break
            step_input = token[:, None]
    return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)


def inverse_cdf(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The token of each row whose cumulative-probability interval holds `uniform` (float64 sums,
    scaled to the row's total so rounding never runs past the vocabulary); -inf logits have empty
    intervals and are never drawn."""
    cdf = logits.double().softmax(-1).cumsum(-1)
    target = uniform.to(cdf)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)
