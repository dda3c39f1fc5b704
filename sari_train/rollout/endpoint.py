"""`EndpointEngine`: k completions per prompt from an OpenAI-compatible server that accepts audio
(vLLM or SGLang serving Qwen2-Audio or Qwen2.5-Omni, or any chat API with `input_audio` parts).

Same interface as `LocalEngine.sample`, so difficulty scoring (`sari-data difficulty --endpoint`)
and evaluation (`sari-train eval --endpoint`) swap engines freely. Requests go through the
toolkit's one OpenAI client (openai_client.py: bounded concurrency, the SDK's retries with backoff and
Retry-After, the key read from an environment variable, the server's error messages kept); each
prompt's audio part becomes an `input_audio` part (base64 16-bit WAV); a prompt's k samples come
from one request with `n=k` (or k requests of n=1 for servers without `n`). Nothing is cached: a
sampled answer is not to be replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import numpy as np

from corpus.provenance import redact_url
from sari_train.openai_client import (EndpointError, EndpointOptions, LLMClient, LLMConfig, RequestFailed, audio_part,
                                      reply_texts)
from sari_train.rollout.contract import Rollouts, SamplingSettings


def openai_messages(messages: list[dict[str, Any]], waveform: np.ndarray, sample_rate: int) -> list[dict[str, Any]]:
    """Our chat messages (one audio part per prompt) in the OpenAI format, the clip inlined as WAV."""
    audio = audio_part(waveform, sample_rate)
    converted = []
    for turn in messages:
        content = turn["content"]
        if isinstance(content, list):
            content = [audio if part.get("type") == "audio" else {"type": "text", "text": part["text"]}
                       for part in content]
        converted.append({"role": turn["role"], "content": content})
    return converted


class EndpointEngine:
    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 retries: int = 3, timeout: float = 120.0, n_per_request: bool = True,
                 sample_rate: int = 16000):
        self.n_per_request, self.sample_rate = n_per_request, sample_rate
        self.config = LLMConfig(base_url=base_url, model=model, api_key_env=api_key_env, concurrency=concurrency,
                                max_retries=retries, timeout_s=timeout, max_reasks=0)
        self._loop = asyncio.new_event_loop()  # one loop for the engine's life, so connections are reused
        self.client = LLMClient(self.config)

    @classmethod
    def from_options(cls, options: EndpointOptions, model: str, **kwargs: Any) -> EndpointEngine:
        return cls(options.endpoint, model, api_key_env=options.api_key_env, concurrency=options.concurrency,
                   retries=options.retries, timeout=options.timeout, **kwargs)

    def sample(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
               settings: SamplingSettings, with_logprobs: bool = False,
               seeds: Sequence[int] | None = None) -> Rollouts:
        """k completions per prompt. `seeds` gives each prompt its own seed (default: settings.seed),
        so a prompt's samples do not depend on which other prompts share the call."""
        if with_logprobs:
            raise ValueError("the endpoint engine returns texts only, no log-probs; sample with the local or "
                             "vLLM engine")
        seeds = list(seeds) if seeds is not None else [settings.seed] * len(messages)
        if len(seeds) != len(messages) or len(waveforms) != len(messages):
            raise ValueError(f"{len(messages)} prompts, {len(waveforms)} waveforms, {len(seeds)} seeds")
        k = settings.k
        # One job per request: (prompt index, n, seed); k requests of n=1 use seeds seed, seed+1, ...
        jobs = [(i, k, s) for i, s in enumerate(seeds)] if self.n_per_request else \
            [(i, 1, s + j) for i, s in enumerate(seeds) for j in range(k)]
        chats = [openai_messages(m, w, self.sample_rate) for m, w in zip(messages, waveforms)]
        answers = self._loop.run_until_complete(_all([self._request(chats[i], n, s, settings) for i, n, s in jobs]))
        texts: list[list[str]] = [[] for _ in messages]
        for (i, _, _), got in zip(jobs, answers):
            texts[i].extend(got)
        return Rollouts(texts)

    async def _request(self, chat: list[dict[str, Any]], n: int, seed: int, settings: SamplingSettings) -> list[str]:
        params = dict(n=n, seed=seed, temperature=settings.temperature, top_p=settings.top_p,
                      max_tokens=settings.max_new_tokens)
        if settings.top_k:  # not an OpenAI parameter; vLLM and SGLang servers read it from the body
            params["extra_body"] = {"top_k": settings.top_k}
        where = f"{redact_url(self.config.base_url or '')} (model {self.config.model!r})"
        try:
            reply = await self.client.chat(chat, **params)
        except RequestFailed as err:
            if err.reason in ("connection_error", "timeout"):
                raise EndpointError(f"cannot reach the endpoint {where}: {err.message}; start the server or fix "
                                    "the endpoint URL") from None
            raise EndpointError(f"the endpoint {where} failed a request for good: {err.message}") from None
        texts = reply_texts(reply)
        if len(texts) != n:
            raise EndpointError(f"{where} returned {len(texts)} choices for n={n}; if the server ignores `n`, "
                                "set n_per_request to false")
        return texts

    @property
    def usage(self) -> dict[str, Any]:
        """Requests sent, retries, tokens and failures so far (the client's usage report)."""
        return self.client.usage.report(self.config)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.client.close())
            self._loop.close()

    def __enter__(self) -> EndpointEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def _all(requests: list[Awaitable[list[str]]]) -> list[list[str]]:
    """Every request's answer, in order; the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(r) for r in requests]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
